"""Schema migrations: Alembic, run by `make migrate` and at service start.

Why Alembic: it is the maintained migration tool of the SQLAlchemy project, versions
migrations as ordered, reviewable Python files, records the applied revision in the
database, and runs on our asyncpg driver (through SQLAlchemy's asyncio extension), so the
ledger needs no second PostgreSQL driver. Migrations use plain SQL (`op.execute`): the
ledger has no ORM models.

Replicas starting together must not race: the whole upgrade runs in one transaction that
first takes a transaction-scoped advisory lock (per schema). A second process waits on the
lock, then finds the schema at head and does nothing. DDL in PostgreSQL is transactional,
so a failed migration leaves nothing half-applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('exchange-ledger-migrate:' || current_schema()))"
SCHEMA_SQL = """
DO $$
DECLARE wanted text := trim(both ' "' from split_part(current_setting('search_path'), ',', 1));
BEGIN
  IF current_schema() IS NULL AND wanted <> '' AND wanted <> '$user' THEN
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', wanted);
  END IF;
END $$"""
"""A search path naming a schema that does not exist yet (a new venue): create it."""


async def upgrade(dsn: str, target: str = "head") -> str:
    """Bring the schema `dsn` points at to `target`; return the revision it is at."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    async def connect() -> Any:
        return await asyncpg.connect(dsn)

    engine = create_async_engine("postgresql+asyncpg://", async_creator=connect, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(SCHEMA_SQL))
            await conn.execute(text(LOCK_SQL))
            revision: str = await conn.run_sync(_upgrade_sync, target)
        return revision
    finally:
        await engine.dispose()


def _upgrade_sync(connection: Any, target: str) -> str:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, target)
    current = MigrationContext.configure(connection).get_current_revision()
    return current or ""


def head() -> str:
    """The newest revision in the migrations directory."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head() or ""
