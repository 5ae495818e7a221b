"""What every exchange process shares: structured logs, the ops HTTP endpoints, settings."""
