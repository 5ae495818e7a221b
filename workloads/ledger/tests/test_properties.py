"""Property: whatever the event stream and however it is delivered (batched at random,
redelivered, out of order), every invariant holds, the ledger equals the matcher engine that
made the stream, and a rebuild from postings equals the materialized balances.

Streams come from the real matcher engine (random orders, cancels, IOC, MARKET with and
without budgets, mass cancels, fees), so they carry every money movement the ledger books.
Each example uses its own market and assets in one schema, so examples cannot mask each
other, and the ledger-wide invariants are checked over everything written so far.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e.bench import simulate
from workloads.ledger import migrate
from workloads.ledger.applier import Applier
from workloads.ledger.cursor import Verdict
from workloads.ledger.invariants import Invariants
from workloads.ledger.matchers import MatcherClients
from workloads.ledger.rules import Incoming
from workloads.ledger.tests.conftest import decode_all
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.integration

EXAMPLE = itertools.count(1)


@dataclass
class Harness:
    dsn: str
    pool: asyncpg.Pool
    applier: Applier
    invariants: Invariants


def deliveries(
    items: list[Incoming], rng: random.Random, redeliver: float, swap: float
) -> list[list[Incoming]]:
    """Batches of random sizes; some windows re-sent, some pairs of batches swapped.

    Batches end at command boundaries, as the matcher publishes a command's events in one
    Kafka transaction (see `cursor`); re-sent windows may start anywhere."""
    batches: list[list[Incoming]] = []
    position = 0
    while position < len(items):
        end = position + rng.randrange(1, 60)
        while end < len(items) and items[end].idx != 0:
            end += 1
        start = position
        if batches and rng.random() < redeliver:
            start = max(0, position - rng.randrange(1, 30))
        batches.append(items[start:end])
        position = end
    for i in range(len(batches) - 1):
        if rng.random() < swap:
            batches[i], batches[i + 1] = batches[i + 1], batches[i]
    return batches


async def check_example(h: Harness, seed: int, commands: int, fees: tuple[int, int],
                        redeliver: float, swap: float) -> None:  # fmt: skip
    n = next(EXAMPLE)
    spec = MarketSpec(f"P{n}-Q{n}", f"P{n}", f"Q{n}", maker_fee_bps=fees[0], taker_fee_bps=fees[1])
    accounts = [f"x{n}-{i}" for i in range(5)]
    sim = simulate.Simulator(spec)
    rng = random.Random(seed)
    events = sim.start_epoch(1) + sim.run(
        simulate.funding(accounts, spec, rng.randrange(10**4, 10**7))
    )
    events += sim.run(list(simulate.random_commands(rng, accounts, commands, mid=1000)))
    items = decode_all(events)
    for batch in deliveries(items, rng, redeliver, swap):
        outcomes = await h.applier.submit(batch)
        assert Verdict.STALE_EPOCH not in {o.verdict for o in outcomes}
    # Each event exactly once, whatever the delivery (events parked behind a gap were
    # applied when it was filled).
    state = await h.pool.fetchrow("SELECT * FROM market_state WHERE market = $1", spec.symbol)
    assert state["applied_seq"] == sim.engine.seq and not state["stalled"]
    assert not await h.pool.fetchval(
        "SELECT count(*) FROM parked_events WHERE market = $1", spec.symbol
    )
    money = [i.entry for i in items if i.entry is not None]
    journal = await h.pool.fetch("SELECT reference FROM journal WHERE market = $1", spec.symbol)
    assert sorted(r["reference"] for r in journal) == sorted(m.reference for m in money)
    postings = await h.pool.fetchval(
        "SELECT count(*) FROM postings p JOIN journal j ON j.id = p.tx_id WHERE j.market = $1",
        spec.symbol,
    )
    assert postings == sum(len(m.postings) for m in money)

    rows = await h.pool.fetch(
        """SELECT a.owner, a.asset, b.available, b.hold FROM balances b
             JOIN accounts a ON a.id = b.account_id
            WHERE a.asset = ANY($1::text[]) AND a.owner NOT LIKE '@%'""",
        [spec.base_asset, spec.quote_asset],
    )
    ledger = {(r["owner"], r["asset"]): (r["available"], r["hold"]) for r in rows}
    engine = {k: v for k, v in sim.balances().items() if v != (0, 0)}
    assert {k: v for k, v in ledger.items() if v != (0, 0)} == engine

    holds = await h.pool.fetch(
        """SELECT a.owner, a.asset, h.amount FROM market_holds h
             JOIN accounts a ON a.id = h.account_id WHERE h.market = $1 AND h.amount <> 0""",
        spec.symbol,
    )
    reserved: dict[tuple[str, str], int] = {}
    for account, (base, quote) in sim.engine.reserved().items():
        if base:
            reserved[(account, spec.base_asset)] = base
        if quote:
            reserved[(account, spec.quote_asset)] = quote
    assert {(r["owner"], r["asset"]): r["amount"] for r in holds} == reserved

    report = await h.invariants.check()
    assert report.ok, report.to_json()
    rebuilt = await h.invariants.rebuild(repair=False)
    assert rebuilt["consistent"], rebuilt


async def open_harness(pg_dsn: str) -> Harness:
    schema = f"prop_{random.getrandbits(40):x}"
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    dsn = f"{pg_dsn}?options=-csearch_path%3D{schema}"
    await migrate.upgrade(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    applier = Applier(dsn, "fees", 5000)
    await applier.start()
    return Harness(dsn, pool, applier, Invariants(pool, MatcherClients(()), ()))


async def close_harness(h: Harness, pg_dsn: str) -> None:
    await h.applier.stop()
    await h.pool.close()
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(f"DROP SCHEMA {h.dsn.rsplit('%3D', 1)[1]} CASCADE")
    await conn.close()


def test_random_streams_keep_every_invariant_and_rebuild_equals_materialized(pg_dsn: str) -> None:
    with asyncio.Runner() as runner:
        harness = runner.run(open_harness(pg_dsn))
        try:

            @settings(
                max_examples=100,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                database=None,
            )
            @given(
                seed=st.integers(0, 2**32),
                commands=st.integers(10, 250),
                fees=st.tuples(st.integers(0, 100), st.integers(0, 100)),
                redeliver=st.floats(0, 0.5),
                swap=st.floats(0, 0.3),
            )
            def example(seed: int, commands: int, fees: tuple[int, int], redeliver: float,
                        swap: float) -> None:  # fmt: skip
                runner.run(check_example(harness, seed, commands, fees, redeliver, swap))

            example()
        finally:
            runner.run(close_harness(harness, pg_dsn))
