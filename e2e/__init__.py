"""End-to-end tests and the launchers of the real parts they run on."""
