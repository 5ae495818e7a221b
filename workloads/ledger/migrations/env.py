"""Alembic's environment: migrations run on the connection `migrate.upgrade` hands over.

The connection already holds the migration advisory lock inside its transaction, so this
runs no transaction of its own (Alembic's begin_transaction is a no-op inside one).
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
