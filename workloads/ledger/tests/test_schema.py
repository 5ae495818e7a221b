"""The schema's guarantees hold in the database itself, whatever the client does."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from e2e.env.pytest_plugin import Schema
from workloads.ledger import applier, migrate, store
from workloads.ledger.settings import with_schema

pytestmark = pytest.mark.integration


async def seeded(dsn: str) -> asyncpg.Connection:
    """A connection to a schema with two accounts and one balanced transaction."""
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        """INSERT INTO accounts (id, owner, asset) VALUES (1, 'alice', 'USDT'), (2, 'bob', 'USDT'),
                  (3, 'bob', 'BTC');
           INSERT INTO journal (id, kind, reference, market, seq, epoch, occurred_at)
           VALUES (1, 'funding', 'M-X:1:0', 'M-X', 1, 1, 0);
           INSERT INTO postings VALUES (1, 0, 1, 'USDT', 'available', 5),
                                       (1, 1, 2, 'USDT', 'available', -5);"""
    )
    return conn


async def test_migrations_are_idempotent_and_replicas_do_not_race(pg_schema: Schema) -> None:
    revisions = await asyncio.gather(*(migrate.upgrade(pg_schema.dsn) for _ in range(3)))
    assert revisions == [migrate.head()] * 3
    assert await migrate.upgrade(pg_schema.dsn) == migrate.head()
    conn = await asyncpg.connect(pg_schema.dsn)
    try:
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == migrate.head()
    finally:
        await conn.close()


async def test_a_venue_schema_is_created_on_first_start_and_holds_the_ledger(pg_dsn: str) -> None:
    name = f"ledger_{uuid.uuid4().hex[:8]}"
    dsn = with_schema(pg_dsn, name)
    assert dsn.endswith(f"?search_path={name}")
    assert await migrate.upgrade(dsn) == migrate.head()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {name}.alembic_version") == 1
        await conn.execute(f"DROP SCHEMA {name} CASCADE")
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE postings SET amount = 6 WHERE tx_id = 1 AND line = 0",
        "DELETE FROM postings",
        "TRUNCATE postings",
        "UPDATE journal SET seq = 2",
        "DELETE FROM journal",
        "TRUNCATE journal CASCADE",
        "DELETE FROM accounts WHERE id = 3",
        "UPDATE accounts SET asset = 'EUR' WHERE id = 3",
    ],
)
async def test_history_is_append_only(ledger_dsn: str, statement: str) -> None:
    conn = await seeded(ledger_dsn)
    try:
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.execute(statement)
        assert info.value.sqlstate == "LA001"
        assert await conn.fetchval("SELECT sum(amount) FROM postings WHERE tx_id = 1") == 0
        assert await conn.fetchval("SELECT count(*) FROM postings") == 2
    finally:
        await conn.close()


async def test_a_transaction_must_balance_per_asset(ledger_dsn: str) -> None:
    conn = await seeded(ledger_dsn)
    try:
        for rows, state in [
            ("(2, 0, 1, 'USDT', 'available', 5), (2, 1, 2, 'USDT', 'available', -4)", "LB001"),
            # balanced in total, but across two assets
            ("(2, 0, 2, 'USDT', 'available', 5), (2, 1, 3, 'BTC', 'available', -5)", "LB001"),
            # an account of another asset
            ("(2, 0, 3, 'USDT', 'available', 5), (2, 1, 2, 'USDT', 'available', -5)", "LB003"),
            ("(2, 0, 9, 'USDT', 'available', 5), (2, 1, 2, 'USDT', 'available', -5)", "LB003"),
        ]:
            with pytest.raises(asyncpg.PostgresError) as info:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO journal (id, kind, reference, market, seq, epoch, occurred_at)"
                        " VALUES (2, 'funding', 'M-X:2:0', 'M-X', 2, 1, 0)"
                    )
                    await conn.execute(f"INSERT INTO postings VALUES {rows}")
            assert info.value.sqlstate == state, rows
        assert await conn.fetchval("SELECT count(*) FROM journal") == 1
    finally:
        await conn.close()


async def test_postings_cannot_be_added_to_a_committed_transaction(ledger_dsn: str) -> None:
    conn = await seeded(ledger_dsn)
    try:
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.execute(
                "INSERT INTO postings VALUES (1, 2, 1, 'USDT', 'hold', 3),"
                " (1, 3, 1, 'USDT', 'available', -3)"
            )
        assert info.value.sqlstate == "LB002"
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO postings VALUES (1, 5, 1, 'USDT', 'available', 0)")
    finally:
        await conn.close()


async def test_event_ids_and_trade_ids_are_unique(ledger_dsn: str) -> None:
    conn = await seeded(ledger_dsn)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO journal (id, kind, reference, market, seq, epoch, occurred_at)"
                " VALUES (5, 'funding', 'M-X:1:0', 'M-X', 1, 1, 0)"
            )
        await conn.execute(
            "INSERT INTO journal (id, kind, reference, market, seq, epoch, trade_id, occurred_at)"
            " VALUES (6, 'trade', 'M-X:7:0', 'M-X', 7, 1, 'M-X:1', 0)"
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO journal (id, kind, reference, market, seq, epoch, trade_id,"
                " occurred_at) VALUES (7, 'trade', 'M-X:8:0', 'M-X', 8, 1, 'M-X:1', 0)"
            )
    finally:
        await conn.close()


async def test_the_two_person_rule_is_enforced_by_the_database(ledger_dsn: str) -> None:
    conn = await asyncpg.connect(ledger_dsn)
    try:
        await conn.execute(
            """INSERT INTO correction_requests (id, kind, market, account, asset, amount,
                   counterparty, reason, requested_by)
               VALUES ('c1', 'adjustment', 'M-X', 'alice', 'USDT', 5, '@corrections', 'r',
                       'alice')"""
        )
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.execute("INSERT INTO correction_approvals VALUES ('c1', 'alice')")
        assert info.value.sqlstate == "LC001"
        await conn.execute("INSERT INTO correction_approvals VALUES ('c1', 'bob')")
        apply = "INSERT INTO correction_applications VALUES ('c1', 'bob', 'corr.c1')"
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.execute(apply)
        assert info.value.sqlstate == "LC002"
        await conn.execute("INSERT INTO correction_approvals VALUES ('c1', 'carol')")
        await conn.execute(apply)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(apply)
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.execute("DELETE FROM correction_applications")
        assert info.value.sqlstate == "LA001"
    finally:
        await conn.close()


async def test_settlement_reads_by_key_once_the_tables_grow(ledger_dsn: str) -> None:
    """A plan cached while `balances` and `market_holds` were small must not scan them once
    they hold every account: the settlement connection plans each batch for its own size."""
    conn = await asyncpg.connect(ledger_dsn, server_settings=applier.CONNECTION_SETTINGS)

    async def settle(first: int, count: int) -> None:
        ids = list(range(first, first + count))
        await conn.execute(
            store._AFTER_BATCH,
            ids, [1] * count, [0] * count,  # balances
            ["M-X"] * count, ids, [1] * count,  # market holds
            ["M-X"], [first], [0], [1], [False], [None], [0],  # the cursor
        )  # fmt: skip

    try:
        await conn.execute(
            "INSERT INTO accounts (id, owner, asset) SELECT g, 'u' || g, 'USDT'"
            " FROM generate_series(1, 20000) AS g;"
            " INSERT INTO market_holds (market, account_id, amount)"
            " SELECT 'M-X', g, 0 FROM generate_series(1, 8) AS g;"
            " INSERT INTO balances (account_id) SELECT g FROM generate_series(1, 8) AS g"
        )
        for i in range(8):  # past the five custom plans a cached statement gets by default
            await settle(1 + i % 4, 1 + i % 3)
        await conn.execute(
            "INSERT INTO balances (account_id) SELECT g FROM generate_series(9, 20000) AS g;"
            " INSERT INTO market_holds (market, account_id, amount)"
            " SELECT 'M-X', g, 0 FROM generate_series(9, 20000) AS g"
        )
        async with conn.transaction():
            await settle(10_000, 3)
            scanned = await conn.fetch(
                "SELECT relname, seq_scan FROM pg_stat_xact_user_tables WHERE seq_scan > 0"
            )
        assert scanned == []
    finally:
        await conn.close()
