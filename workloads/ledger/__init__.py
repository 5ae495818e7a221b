"""The ledger: append-only double-entry on PostgreSQL, settled exactly once from Kafka.

Layers, from the pure core outwards:
- `rules`: matcher events -> balanced journal entries; `cursor`: apply, duplicate, stale
  epoch or gap; `reconciliation`: breach, latch and safety decisions.
- `store`: the batched settlement transaction; `applier`: the single writer both the
  Kafka `consumer` and HTTP injection submit to.
- `invariants`, `reconciler`, `funding`, `corrections`: checks and workflows over the
  database and the matchers (`matchers`).
- `api`, `views_*`: the aiohttp admin/internal API; `service`: wiring; `__main__`: the
  process; `migrate` + `migrations/`: the schema (Alembic).
"""
