"""Proof that the PostgreSQL the fixtures start is a real, transactional server."""

import asyncpg
import pytest

from e2e.env.pytest_plugin import Schema

pytestmark = pytest.mark.integration


async def test_unique_violation_rolls_back_the_whole_transaction(pg_schema: Schema) -> None:
    conn = await asyncpg.connect(pg_schema.dsn)
    try:
        await conn.execute("CREATE TABLE trades (trade_id text PRIMARY KEY, qty bigint NOT NULL)")
        await conn.execute("CREATE TABLE postings (trade_id text NOT NULL, amount bigint NOT NULL)")
        await conn.execute("INSERT INTO trades VALUES ('t-1', 5)")

        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute("INSERT INTO postings VALUES ('t-1', 5), ('t-1', -5)")
                await conn.execute("INSERT INTO trades VALUES ('t-2', 7)")
                await conn.execute("INSERT INTO trades VALUES ('t-1', 9)")  # duplicate id

        assert await conn.fetchval("SELECT count(*) FROM postings") == 0
        assert await conn.fetch("SELECT trade_id, qty FROM trades") == [("t-1", 5)]
    finally:
        await conn.close()


async def test_each_test_gets_its_own_schema(pg_schema: Schema) -> None:
    conn = await asyncpg.connect(pg_schema.dsn)
    try:
        assert await conn.fetchval("SELECT current_schema()") == pg_schema.name
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = $1", pg_schema.name
            )
            == 0
        )
        version = await conn.fetchval("SHOW server_version_num")
        assert int(version) >= 150000
    finally:
        await conn.close()
