"""Versioned schema migrations (Alembic): `versions/NNNN_*.py`, applied in order."""
