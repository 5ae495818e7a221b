"""The shared edge state in real PostgreSQL, through two `Store`s (two replicas): one
`gw_batch` per window admits a batch in request order (revocation, replay, rate limit,
Idempotency-Key) and stores finished responses; duplicates inside one batch behave as they
would in two batches."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from e2e.env.pytest_plugin import Schema
from workloads.gateway import schema
from workloads.gateway.store import Admission, Finished, Store

pytestmark = pytest.mark.integration


async def open_store(pg: Schema, rate_limit: int = 5, window: float = 0.005) -> Store:
    return await Store.open(
        pg.server_dsn,
        pg.name,
        2,
        static_keys={"static": "s"},
        rate_limit=rate_limit,
        replay_ttl=60,
        idempotency_ttl=3600,
        batch_window=window,
    )


@pytest.fixture
async def stores(pg_schema: Schema) -> AsyncIterator[tuple[Store, Store]]:
    first = await open_store(pg_schema)
    second = await open_store(pg_schema)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def admission(sig: str, key: str = "", body: bytes = b"") -> Admission:
    digest = hashlib.sha256(b"POST\n/v1/orders\n" + body).digest()
    return Admission("key:static", "", sig, "key:static", key, digest)


async def test_one_batch_in_request_order_and_shared_between_replicas(
    stores: tuple[Store, Store],
) -> None:
    a, b = stores
    # One window: a duplicate signature and a duplicate key inside the same batch.
    verdicts = await asyncio.gather(
        a.admit(admission("s1", "k1")),
        a.admit(admission("s1", "k9")),  # replay of s1
        a.admit(admission("s2", "k1")),  # same key, same request: k1 is in progress
        a.admit(admission("s3", "k1", body=b"other")),  # same key, another request
        a.admit(admission("s4", "k2")),
    )
    assert [v.verdict for v in verdicts] == [
        schema.ADMITTED,
        schema.REPLAYED,
        schema.IDEMPOTENT_MATCH,
        schema.IDEMPOTENT_MISMATCH,
        schema.ADMITTED,
    ]
    assert verdicts[2].stored_status == 0  # in progress: 409, retry
    # Every request that passed the replay check counted once (the duplicates, sent in a
    # second statement, after the others).
    assert sorted(v.rate_count for v in verdicts) == [0, 1, 2, 3, 4]
    assert verdicts[1].rate_count == 0

    # The response rides along with the next batch; the other replica then replays it.
    a.finish_idempotent_later("key:static", "k1", 201, b'{"ok":1}')
    assert a.unwritten[("key:static", "k1")] == (201, b'{"ok":1}')
    await a.drain()
    assert not a.unwritten
    retry = await b.admit(admission("s5", "k1"))
    assert (retry.verdict, retry.stored_status, retry.stored_body) == (
        schema.IDEMPOTENT_MATCH,
        201,
        b'{"ok":1}',
    )
    replayed = await b.admit(admission("s4", "k3"))  # a signature seen by the other replica
    assert replayed.verdict == schema.REPLAYED
    # The rate window is shared: 5 per minute, the 6th is refused on either replica.
    limited = await b.admit(admission("s6", "k4"))
    assert (limited.verdict, limited.rate_count) == (schema.RATE_LIMITED, 6)


async def test_revoked_keys_and_released_claims(pg_schema: Schema) -> None:
    store = await open_store(pg_schema, rate_limit=0)
    try:
        user = await store.create_user("store@example.com", "x")
        assert user is not None
        key, _, _ = await store.create_key(user, "t")
        h = hashlib.sha256(b"request").digest()
        live = Admission(f"key:{key}", key, "r1", f"key:{key}", "i1", h)
        assert (await store.admit(live)).verdict == schema.ADMITTED
        await store.release_idempotent(f"key:{key}", "i1")  # a 5xx: the retry runs again
        again = Admission(f"key:{key}", key, "r2", f"key:{key}", "i1", h)
        assert (await store.admit(again)).verdict == schema.ADMITTED
        assert await store.revoke_key(user, key)
        revoked = Admission(f"key:{key}", key, "r3", f"key:{key}", "i2", h)
        assert (await store.admit(revoked)).verdict == schema.REVOKED
        # Rate limiting off: no counter rows, count 0.
        assert (await store.admit(admission("ab12", "i3"))).rate_count == 0
        # A signature is hex: the same one in capitals is a replay, not a new request,
        # also within one batch.
        assert (await store.admit(admission("AB12", "i4"))).verdict == schema.REPLAYED
        same = await asyncio.gather(store.admit(admission("cd34")), store.admit(admission("CD34")))
        assert sorted(v.verdict for v in same) == [schema.ADMITTED, schema.REPLAYED]
        # Sessions and public routes have no signature; anonymous calls share one scope.
        public = [Admission(f"ip:10.0.0.{i}", "", "", "anon", "", b"") for i in range(3)]
        assert {v.verdict for v in await asyncio.gather(*map(store.admit, public))} == {0}
    finally:
        await store.close()


async def test_gw_batch_reads_by_primary_key_once_the_tables_grow(pg_schema: Schema) -> None:
    """PL/pgSQL keeps the plans it made while the tables were empty; they must not scan the
    tables once these hold a day of requests (a scan per batch grew the order path's
    latency with the table: 10 ms per batch at 50,000 idempotency rows)."""
    store = await open_store(pg_schema, rate_limit=1_000_000)
    conn = await asyncpg.connect(pg_schema.dsn)
    try:
        for i in range(10):  # past PL/pgSQL's five custom plans: the cached generic plan
            keys = [f"w{i}-{j}" for j in range(1 + i % 7)]
            await store._call_once([], [admission(key, key) for key in keys], conn)
            done = [Finished("key:static", key, 201, b"{}") for key in keys]
            await store._call_once(done, [], conn)
        await conn.execute(
            "INSERT INTO idempotency (scope, key, request_hash, status, expires_at)"
            " SELECT 'key:static', 'bulk-' || g, '\\x00', 201, now() + interval '1 hour'"
            " FROM generate_series(1, 20000) AS g"
        )
        async with conn.transaction():
            verdicts = await store._call_once(
                [Finished("key:static", "bulk-7", 201, b"{}")],
                [admission("fresh", "k-fresh"), admission("again", "bulk-9")],
                conn,
            )
            scanned = await conn.fetch(
                "SELECT relname, seq_scan FROM pg_stat_xact_user_tables WHERE seq_scan > 0"
            )
        assert [v.verdict for v in verdicts] == [schema.ADMITTED, schema.IDEMPOTENT_MISMATCH]
        assert scanned == []
    finally:
        await conn.close()
        await store.close()


async def test_the_sweep_finds_expired_idempotency_records_without_a_scan(
    pg_schema: Schema,
) -> None:
    """A day of records at 1,000 orders/s is 86M rows; the janitor (every 30 s) must reach the
    expired ones through an index, not by reading the table."""
    store = await open_store(pg_schema)
    conn = await asyncpg.connect(pg_schema.dsn)
    try:
        await conn.execute(
            "INSERT INTO idempotency (scope, key, request_hash, expires_at)"
            " SELECT 'key:static', 'k' || g, '\\x00', now() + g * interval '1 second'"
            " FROM generate_series(-100, 50000) AS g;"
            " ANALYZE idempotency"
        )
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) DELETE FROM idempotency WHERE expires_at < now()"
        )
        assert "idempotency_expires" in plan and "Seq Scan" not in plan
        assert await store.sweep() >= 100
        assert await conn.fetchval("SELECT count(*) FROM idempotency") == 50000
    finally:
        await conn.close()
        await store.close()
