"""The exchange's processes: matcher, ledger and gateway (one subpackage each)."""
