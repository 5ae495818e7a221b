"""The settlement path on real PostgreSQL: exactly once, epochs, gaps (stall, park, drain)."""

from __future__ import annotations

import random

import asyncpg
import pytest

from e2e.bench import simulate
from workloads.ledger import metrics
from workloads.ledger.applier import Applier
from workloads.ledger.cursor import Verdict
from workloads.ledger.tests.conftest import balances, count, decode_all, engine_view, user_view
from workloads.matcher import engine as e
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.integration

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT", maker_fee_bps=10, taker_fee_bps=20)
ACCOUNTS = [f"acct-{i}" for i in range(6)]


def stream(commands: int = 600, seed: int = 5) -> tuple[simulate.Simulator, list]:  # type: ignore[type-arg]
    sim = simulate.Simulator(SPEC)
    events = sim.start_epoch(1) + sim.run(simulate.funding(ACCOUNTS, SPEC, 10**7))
    events += sim.run(list(simulate.random_commands(random.Random(seed), ACCOUNTS, commands)))
    return sim, events


async def test_redelivered_and_reordered_batches_settle_each_event_once(
    applier: Applier, ledger_dsn: str
) -> None:
    sim, events = stream()
    items = decode_all(events)
    rng = random.Random(1)
    verdicts: list[Verdict] = []
    position = 0
    while position < len(items):  # overlapping windows: every event arrives 1-3 times
        start = max(0, position - rng.randrange(0, 40))
        end = min(len(items), position + rng.randrange(1, 120))
        verdicts += [o.verdict for o in await applier.submit(items[start:end])]
        position = end
    assert verdicts.count(Verdict.APPLY) == len(items)
    assert set(verdicts) == {Verdict.APPLY, Verdict.DUPLICATE}
    money = [i.entry for i in items if i.entry is not None]
    assert await count(ledger_dsn, "journal") == len(money)
    assert await count(ledger_dsn, "postings") == sum(len(m.postings) for m in money)
    assert user_view(await balances(ledger_dsn)) == engine_view(sim)
    again = await applier.submit(items)  # a full replay (a consumer reset to offset 0)
    assert {o.verdict for o in again} == {Verdict.DUPLICATE}


async def test_the_same_trade_under_another_event_id_is_settled_once(
    applier: Applier, ledger_dsn: str
) -> None:
    sim, events = stream(commands=200)
    await applier.submit(decode_all(events))
    trade = next(ev for ev in reversed(events) if ev.WhichOneof("body") == "trade_executed")
    copy = type(trade)()
    copy.CopyFrom(trade)
    seq = sim.engine.seq + 1  # the next position: the cursor lets it through
    copy.trade_executed.envelope.seq = seq
    copy.trade_executed.envelope.event_id = f"BTC-USDT:{seq}:0"
    journal = await count(ledger_dsn, "journal")
    (outcome,) = await applier.submit(decode_all([copy]))
    assert outcome.verdict is Verdict.DUPLICATE  # the trade id is unique
    assert await count(ledger_dsn, "journal") == journal
    assert user_view(await balances(ledger_dsn)) == engine_view(sim)


async def test_events_of_a_stale_epoch_are_rejected_counted_and_never_applied(
    applier: Applier, ledger_dsn: str
) -> None:
    sim, events = stream(commands=100)
    events += sim.start_epoch(2)
    await applier.submit(decode_all(events))
    # An event the epoch-1 leader produced after it was deposed, at the next seq.
    stale = sim.run([(e.C_FUNDING, "late", "acct-0", "USDT", 5, e.CREDIT)])
    for ev in stale:
        ev.funds_credited.envelope.epoch = 1
    before = metrics.STALE_EPOCH.labels("BTC-USDT")._value.get()
    before_balances = await balances(ledger_dsn)
    (outcome,) = await applier.submit(decode_all(stale))
    assert outcome.verdict is Verdict.STALE_EPOCH
    assert metrics.STALE_EPOCH.labels("BTC-USDT")._value.get() == before + 1
    assert await balances(ledger_dsn) == before_balances
    conn = await asyncpg.connect(ledger_dsn)
    try:
        state = await conn.fetchrow("SELECT * FROM market_state WHERE market = 'BTC-USDT'")
        assert state["stale_rejected"] == 1 and state["max_epoch"] == 2
        assert state["applied_seq"] == sim.engine.seq - 1  # the stale event did not advance it
    finally:
        await conn.close()
    for ev in stale:  # the current leader's event at that seq is applied
        ev.funds_credited.envelope.epoch = 2
    (outcome,) = await applier.submit(decode_all(stale))
    assert outcome.verdict is Verdict.APPLY


async def test_a_gap_stalls_the_market_parks_what_follows_and_drains_when_filled(
    applier: Applier, ledger_dsn: str
) -> None:
    sim, events = stream(commands=300)
    items = decode_all(events)
    cut = next(i for i in range(200, len(items)) if items[i].entry is not None)
    missing = [x for x in items if x.seq == items[cut].seq]
    rest = [x for x in items if x.seq > items[cut].seq]
    gaps_before = metrics.GAPS.labels("BTC-USDT")._value.get()
    await applier.submit(items[:cut])
    outcomes = await applier.submit(rest)
    assert {o.verdict for o in outcomes} == {Verdict.GAP}
    assert metrics.GAPS.labels("BTC-USDT")._value.get() == gaps_before + 1
    conn = await asyncpg.connect(ledger_dsn)
    try:
        state = await conn.fetchrow("SELECT * FROM market_state WHERE market = 'BTC-USDT'")
        assert state["stalled"] and state["applied_seq"] == items[cut].seq - 1
        assert f"got {rest[0].seq}:0" in state["stall_reason"]
        assert await conn.fetchval("SELECT count(*) FROM parked_events") == len(rest)
        # Parked events are durable: a new writer (a restart) drains them.
        await applier.stop()
        fresh = Applier(ledger_dsn, "fees")
        await fresh.start()
        try:
            assert {o.verdict for o in await fresh.submit(rest[:5])} == {Verdict.GAP}
            filled = await fresh.submit(missing)
            assert {o.verdict for o in filled} == {Verdict.APPLY}
        finally:
            await fresh.stop()
        state = await conn.fetchrow("SELECT * FROM market_state WHERE market = 'BTC-USDT'")
        assert not state["stalled"] and state["applied_seq"] == sim.engine.seq
        assert await conn.fetchval("SELECT count(*) FROM parked_events") == 0
    finally:
        await conn.close()
    assert user_view(await balances(ledger_dsn)) == engine_view(sim)


async def test_funding_the_ledger_requested_is_booked_against_its_counterparty(
    applier: Applier, ledger_dsn: str
) -> None:
    sim = simulate.Simulator(SPEC)
    conn = await asyncpg.connect(ledger_dsn)
    try:
        await conn.execute(
            """INSERT INTO funding_requests (funding_id, market, account, asset, amount, direction,
                   origin, counterparty, correction_id, requested_by)
               VALUES ('corr.c9', 'BTC-USDT', 'acct-1', 'USDT', 70, 'credit', 'correction',
                       '@corrections', 'c9', 'bob')"""
        )
        events = sim.start_epoch(1) + sim.run(
            [
                (e.C_FUNDING, "dep-1", "acct-1", "USDT", 1000, e.CREDIT),
                (e.C_FUNDING, "corr.c9", "acct-1", "USDT", 70, e.CREDIT),
            ]
        )
        await applier.submit(decode_all(events))
        rows = await conn.fetch("SELECT kind, correction_id FROM journal ORDER BY id")
        assert [(r["kind"], r["correction_id"]) for r in rows] == [
            ("funding", None),
            ("correction", "c9"),
        ]
    finally:
        await conn.close()
    b = await balances(ledger_dsn)
    assert b[("acct-1", "USDT")] == (1070, 0)
    assert b[("@external", "USDT")] == (-1000, 0) and b[("@corrections", "USDT")] == (-70, 0)
