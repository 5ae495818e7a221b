"""Property tests: the engine against the reference model; invariants after every command."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.v1 import common_pb2 as c
from workloads.matcher import engine as e
from workloads.matcher.spec import MarketSpec
from workloads.matcher.tests.reference import ReferenceModel

pytestmark = pytest.mark.unit

ACCOUNTS = ("alice", "bob", "carol")


def make_spec(band: int, rate: int, fees: bool) -> MarketSpec:
    return MarketSpec(
        "T-Q",
        "T",
        "Q",
        lot_size=2,
        tick_size=5,
        max_price=1_000,
        max_lots=40,
        price_band_bps=band,
        reference_price=500 if band else 0,
        max_open_orders=6,
        rate_limit=rate,
        rate_window_ns=10,
        maker_fee_bps=25 if fees else 0,
        taker_fee_bps=40 if fees else 0,
        idempotency_window=50,
    )


accounts = st.sampled_from(ACCOUNTS)
valid_prices = st.integers(92, 108).map(lambda t: t * 5)
prices = st.integers(0, 9).flatmap(lambda k: valid_prices if k else st.integers(-5, 1_100))
valid_quantities = st.integers(1, 12).map(lambda n: n * 2)
quantities = st.integers(0, 9).flatmap(lambda k: valid_quantities if k else st.integers(-2, 100))
client_ids = st.one_of(st.just(""), st.integers(0, 60).map(lambda n: f"c{n}"))

place = st.tuples(
    st.just(e.C_PLACE),
    accounts,
    client_ids,
    st.sampled_from((e.BUY, e.SELL) * 6 + (0,)),
    st.sampled_from((e.LIMIT,) * 8 + (e.MARKET,) * 3 + (7,)),
    st.sampled_from((e.GTC,) * 8 + (e.IOC,) * 2 + (e.FOK,) * 2 + (0,)),
    prices,
    quantities,
    st.integers(0, 5).map(lambda k: k == 0),  # post-only, sometimes
    st.sampled_from((0, 0, 0, 400, 5_000)),
).map(
    # Mostly well-formed: LIMIT orders carry no budget, MARKET orders are IOC without price.
    lambda t: (
        (*t[:9], 0) if t[4] == e.LIMIT else (*t[:5], e.IOC if t[5] else 0, 0, t[7], False, t[9])
    )
)
cancel = st.tuples(st.just(e.C_CANCEL), accounts, st.integers(0, 80), client_ids)
cancel_all = st.tuples(st.just(e.C_CANCEL_ALL), st.sampled_from(("", *ACCOUNTS)))
set_mode = st.tuples(
    st.just(e.C_SET_MODE),
    st.sampled_from((e.NORMAL,) * 4 + (e.CANCEL_ONLY, e.SOFT_HALT, e.HARD_HALT, 9)),
    st.just("test"),
)
funding = st.tuples(
    st.just(e.C_FUNDING),
    st.integers(0, 10**9).map(lambda n: f"f{n}"),
    accounts,
    st.sampled_from(("T", "Q", "X")),
    st.sampled_from((1_000, 10_000, 100_000, -5)),
    st.sampled_from((e.CREDIT, e.CREDIT, e.DEBIT)),
)
commands = st.lists(
    # Weighted: st.one_of would draw each distinct branch about equally often.
    st.integers(0, 99).flatmap(
        lambda k: (
            place
            if k < 64
            else cancel
            if k < 84
            else funding
            if k < 92
            else cancel_all
            if k < 96
            else set_mode
        )
    ),
    min_size=30,
    max_size=150,
)
# Every account starts funded, so that most orders get past risk and trade.
OPENING = [
    (e.C_FUNDING, f"open-{who}-{asset}", who, asset, 2_000 if asset == "T" else 400_000, e.CREDIT)
    for who in ACCOUNTS
    for asset in ("T", "Q")
]


def check_invariants(engine: e.Engine, credited: dict[str, int]) -> None:
    lot = engine.spec.lot_size
    live: dict[int, list[Any]] = {}
    for levels, buy in ((engine.bid_levels, True), (engine.ask_levels, False)):
        for price, level in levels.items():
            assert level, f"empty level {price} kept"
            assert level[0][e.O_REMAINING], f"level {price} starts with a dead order"
            dead = 0
            for order in level:
                assert order[e.O_PRICE] == price and (order[e.O_SIDE] == e.BUY) == buy
                if not order[e.O_REMAINING]:  # cancelled in a deep level, left in place
                    assert order[e.O_ID] not in engine.orders, "a live order marked dead"
                    dead += 1
                    continue
                assert order[e.O_ID] not in live, "an order twice in the book"
                live[order[e.O_ID]] = order
            ids = [o[e.O_ID] for o in level]
            assert ids == sorted(ids), "time priority broken"
            if isinstance(level, e._DeepLevel):
                assert level.dead == dead, f"level {price} miscounts its dead orders"
            else:
                assert type(level) is list and not dead, f"dead orders in plain level {price}"
    assert live == engine.orders
    assert engine.best_bid == max(engine.bid_levels, default=0)
    assert engine.best_ask == min(engine.ask_levels, default=0)
    indexed = {oid: o for mine in engine.account_orders.values() for oid, o in mine.items()}
    assert indexed == engine.orders
    if engine.bid_levels and engine.ask_levels:
        assert max(engine.bid_levels) < min(engine.ask_levels), "crossed book"
    reserved = engine.reserved()
    totals = {"T": 0, "Q": 0}
    for account, (avail_b, hold_b, avail_q, hold_q) in engine.balances.items():
        assert min(avail_b, hold_b, avail_q, hold_q) >= 0, (account, engine.balances[account])
        assert (hold_b, hold_q) == reserved.get(account, (0, 0)), account
        totals["T"] += avail_b + hold_b
        totals["Q"] += avail_q + hold_q
    assert totals == {"T": credited.get("T", 0), "Q": credited.get("Q", 0)}, (
        "value created or destroyed"
    )
    assert all(o[e.O_REMAINING] > 0 and o[e.O_REMAINING] * lot > 0 for o in engine.orders.values())


def nonzero(balances: dict[str, list[int]]) -> dict[str, list[int]]:
    return {k: v for k, v in balances.items() if any(v)}


@contextmanager
def long_levels_from(length: int) -> Iterator[None]:
    """Levels count as long (cancels mark orders dead, see `_DeepLevel`) from `length`
    orders on: at 1, every book of these short sequences takes the deep-level path."""
    saved = e._SHORT_LEVEL
    e._SHORT_LEVEL = length
    try:
        yield
    finally:
        e._SHORT_LEVEL = saved


@pytest.mark.parametrize("short_level", [e._SHORT_LEVEL, 1])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cmds=commands,
    band=st.sampled_from((0, 0, 500)),
    rate=st.sampled_from((0, 0, 3)),
    fees=st.booleans(),
)
def test_engine_matches_reference_and_keeps_invariants(
    short_level: int, cmds: list[tuple[Any, ...]], band: int, rate: int, fees: bool
) -> None:
    with long_levels_from(short_level):
        check_against_reference(cmds, band, rate, fees)


def check_against_reference(cmds: list[tuple[Any, ...]], band: int, rate: int, fees: bool) -> None:
    spec = make_spec(band, rate, fees)
    engine = e.Engine(spec)
    model = ReferenceModel(spec)
    credited: dict[str, int] = {}
    seq = 0
    for index, cmd in enumerate(OPENING + cmds):
        ts = index * 3
        if engine.duplicate_of(cmd) is not None:
            assert (cmd[0] == e.C_PLACE and (cmd[1], cmd[2]) in model.results) or (
                cmd[0] == e.C_FUNDING and cmd[1] in model.funding_ids
            )
            continue
        seq += 1
        got = engine.execute(cmd, seq, ts)
        want = model.execute(cmd, seq, ts)
        assert got == want, f"command {index}: {cmd}"
        assert got, "every command produces at least one event"
        for event in got:
            if event[0] == e.E_CREDITED:
                credited[event[3]] = credited.get(event[3], 0) + event[4]
            elif event[0] == e.E_DEBITED:
                credited[event[3]] = credited.get(event[3], 0) - event[4]
        check_invariants(engine, credited)
        assert nonzero(engine.balances) == nonzero(model.balances)
        assert engine.mode == model.mode


def test_market_buy_spends_at_most_its_budget_and_releases_the_rest() -> None:
    engine = e.Engine(make_spec(0, 0, False))
    engine.execute((e.C_FUNDING, "f1", "alice", "T", 100, e.CREDIT), 1, 0)
    engine.execute((e.C_FUNDING, "f2", "bob", "Q", 10_000, e.CREDIT), 2, 0)
    engine.execute((e.C_PLACE, "alice", "a1", e.SELL, e.LIMIT, e.GTC, 500, 10, False, 0), 3, 0)
    engine.execute((e.C_PLACE, "alice", "a2", e.SELL, e.LIMIT, e.GTC, 600, 10, False, 0), 4, 0)
    events = engine.execute(
        (e.C_PLACE, "bob", "b1", e.BUY, e.MARKET, e.IOC, 0, 20, False, 4_000), 5, 0
    )
    kinds = [ev[0] for ev in events]
    assert kinds == [e.E_ACCEPTED, e.E_TRADE, e.E_TRADE, e.E_CANCELED]
    spent = sum(ev[10] for ev in events if ev[0] == e.E_TRADE)
    assert spent == 5 * 500 + 2 * 600  # 2,500 then 1,200 of the 1,500 left
    assert events[-1][6] == 4_000 - spent  # released
    assert engine.balances["bob"] == [14, 0, 10_000 - spent, 0]


def test_self_trade_cancels_the_resting_order_and_matching_goes_on() -> None:
    engine = e.Engine(make_spec(0, 0, False))
    for i, (who, asset) in enumerate((("alice", "T"), ("alice", "Q"), ("bob", "T"))):
        engine.execute((e.C_FUNDING, f"f{i}", who, asset, 10_000, e.CREDIT), i + 1, 0)
    engine.execute((e.C_PLACE, "alice", "own", e.SELL, e.LIMIT, e.GTC, 500, 4, False, 0), 4, 0)
    engine.execute((e.C_PLACE, "bob", "other", e.SELL, e.LIMIT, e.GTC, 500, 4, False, 0), 5, 0)
    events = engine.execute(
        (e.C_PLACE, "alice", "take", e.BUY, e.LIMIT, e.GTC, 500, 4, False, 0), 6, 0
    )
    assert [ev[0] for ev in events] == [e.E_ACCEPTED, e.E_CANCELED, e.E_TRADE]
    assert events[1][1] == 4 and events[1][7] == 3  # the resting order, cause SELF_TRADE
    assert events[2][7] == "bob"


@pytest.mark.parametrize(
    ("mode", "place_ok", "post_only_ok", "cancel_ok"),
    [
        (e.NORMAL, True, True, True),
        (e.CANCEL_ONLY, False, False, True),
        (e.SOFT_HALT, False, True, True),
        (e.HARD_HALT, False, False, False),
    ],
)
def test_what_each_mode_accepts(
    mode: int, place_ok: bool, post_only_ok: bool, cancel_ok: bool
) -> None:
    engine = e.Engine(make_spec(0, 0, False))
    engine.execute((e.C_FUNDING, "f1", "alice", "Q", 100_000, e.CREDIT), 1, 0)
    engine.execute((e.C_PLACE, "alice", "resting", e.BUY, e.LIMIT, e.GTC, 400, 2, False, 0), 2, 0)
    assert e.outcome(engine.execute((e.C_SET_MODE, mode, "drill"), 3, 0))[0] == e.ACCEPTED
    plain = engine.execute((e.C_PLACE, "alice", "p", e.BUY, e.LIMIT, e.GTC, 400, 2, False, 0), 4, 0)
    maker = engine.execute((e.C_PLACE, "alice", "m", e.BUY, e.LIMIT, e.GTC, 405, 2, True, 0), 5, 0)
    cancel = engine.execute((e.C_CANCEL, "alice", 2, ""), 6, 0)
    funding = engine.execute((e.C_FUNDING, "f2", "alice", "Q", 1, e.CREDIT), 7, 0)
    assert (e.outcome(plain)[0] == e.ACCEPTED) == place_ok
    assert (e.outcome(maker)[0] == e.ACCEPTED) == post_only_ok
    assert (e.outcome(cancel)[0] == e.ACCEPTED) == cancel_ok
    assert e.outcome(funding)[0] == e.ACCEPTED  # funding mirrors the ledger in every mode


def test_same_commands_give_same_hash_and_a_different_one_diverges() -> None:
    def run(last_qty: int) -> int:
        engine = e.Engine(make_spec(0, 0, True))
        engine.execute((e.C_FUNDING, "f1", "alice", "T", 1_000, e.CREDIT), 1, 0)
        engine.execute((e.C_FUNDING, "f2", "bob", "Q", 100_000, e.CREDIT), 2, 0)
        engine.execute((e.C_PLACE, "alice", "s", e.SELL, e.LIMIT, e.GTC, 500, 20, False, 0), 3, 0)
        engine.execute(
            (e.C_PLACE, "bob", "b", e.BUY, e.LIMIT, e.GTC, 500, last_qty, False, 0), 4, 0
        )
        return engine.state_hash

    assert run(10) == run(10)
    assert run(10) != run(20)


def run_all(engine: e.Engine, cmds: list[tuple[Any, ...]], first_seq: int) -> list[Any]:
    out: list[Any] = []
    seq = first_seq
    for cmd in cmds:
        if engine.duplicate_of(cmd) is None:
            out.append(engine.execute(cmd, seq, seq * 3))
            seq += 1
        else:
            out.append(("duplicate", engine.duplicate_of(cmd)))
    return out


@pytest.mark.parametrize("short_level", [e._SHORT_LEVEL, 1])
@settings(max_examples=100, deadline=None)
@given(cmds=commands, split=st.integers(0, 150), fees=st.booleans())
def test_snapshot_restore_continues_identically(
    short_level: int, cmds: list[tuple[Any, ...]], split: int, fees: bool
) -> None:
    with long_levels_from(short_level):
        check_snapshot_restore(cmds, split, fees)


def check_snapshot_restore(cmds: list[tuple[Any, ...]], split: int, fees: bool) -> None:
    spec = make_spec(500, 3, fees)
    cmds = OPENING + cmds
    split = min(split, len(cmds))
    straight = e.Engine(spec)
    expected = run_all(straight, cmds, 1)

    first = e.Engine(spec)
    head = run_all(first, cmds[:split], 1)
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(first.to_state()))
    restored = e.Engine.from_state(spec, state)
    assert restored.to_state() == first.to_state()
    tail = run_all(restored, cmds[split:], restored.seq + 1)
    assert msgspec.msgpack.encode(head + tail) == msgspec.msgpack.encode(expected)
    assert restored.state_hash == straight.state_hash
    assert restored.to_state() == straight.to_state()


def test_idempotency_window_forgets_the_oldest_first_also_after_a_snapshot() -> None:
    spec = MarketSpec("T-Q", "T", "Q", idempotency_window=3)

    def place(client_id: str, price: int = 10) -> tuple[Any, ...]:
        return (e.C_PLACE, "alice", client_id, e.BUY, e.LIMIT, e.GTC, price, 1, False, 0)

    def fund(funding_id: str) -> tuple[Any, ...]:
        return (e.C_FUNDING, funding_id, "alice", "Q", 1_000, e.CREDIT)

    engine = e.Engine(spec)
    for seq, cmd in enumerate((fund("f1"), place("a"), place("b"), place("c"), fund("f2")), 1):
        engine.execute(cmd, seq, 0)
    engine.execute(place("d", price=0), 6, 0)  # rejected: remembered too
    engine.execute(fund("f3"), 7, 0)
    engine.execute(fund("f4"), 8, 0)
    assert engine.duplicate_of(place("a")) is None, "the oldest key is forgotten first"
    assert engine.duplicate_of(place("b")) == (3, e.ACCEPTED, 0, 3)
    assert engine.duplicate_of(place("d")) == (6, e.REJECTED, c.REJECT_REASON_INVALID_PRICE, 0)
    assert engine.duplicate_of(fund("f1")) is None
    assert engine.duplicate_of(fund("f2")) == (5, e.ACCEPTED, 0, 0)

    state = msgspec.msgpack.decode(msgspec.msgpack.encode(engine.to_state()))
    assert [row[:3] for row in state["idempotency"]] == [
        ["alice", "b", 3],
        ["alice", "c", 4],
        ["alice", "d", 6],
    ]
    restored = e.Engine.from_state(spec, state)
    for twin in (engine, restored):
        # Cancel by client order id, then one more key: "b" goes, in both alike.
        assert twin.execute((e.C_CANCEL, "alice", 0, "c"), 9, 0)[0][0] == e.E_CANCELED
        twin.execute(place("e"), 10, 0)
        twin.execute(fund("f5"), 11, 0)
        assert twin.duplicate_of(place("b")) is None
        assert twin.duplicate_of(place("c")) == (4, e.ACCEPTED, 0, 4)
        assert twin.duplicate_of(fund("f2")) is None
    assert restored.to_state() == engine.to_state()
    assert restored.state_hash == engine.state_hash


def test_a_deep_level_keeps_time_priority_through_cancels_fills_and_a_snapshot() -> None:
    """3,000 orders at one price (far past `_SHORT_LEVEL`): cancels in random order mark
    orders dead; a sweep fills the live ones oldest first and never a cancelled one; a
    snapshot taken midway holds the live orders only and restores to the same book."""
    rng = random.Random(3)
    spec = MarketSpec("D-Q", "D", "Q", max_open_orders=10)
    engine = e.Engine(spec)
    seq = 0

    def run(cmd: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        nonlocal seq
        seq += 1
        return engine.execute(cmd, seq, seq)

    credited = {"D": 0, "Q": 0}
    for n in range(301):
        for asset, amount in (("D", 10**9), ("Q", 10**12)):
            run((e.C_FUNDING, f"f-{n}-{asset}", f"a{n}", asset, amount, e.CREDIT))
            credited[asset] += amount
    resting = []
    for n in range(3000):
        account = f"a{n % 300}"
        (accepted,) = run((e.C_PLACE, account, f"o{n}", e.SELL, e.LIMIT, e.GTC, 100, 1, False, 0))
        resting.append((accepted[1], account))
    cancelled = set(rng.sample(range(3000), 2000))
    for n in sorted(cancelled, key=lambda _: rng.random()):
        oid, account = resting[n]
        assert run((e.C_CANCEL, account, oid, ""))[0][0] == e.E_CANCELED
    level = engine.ask_levels[100]
    assert isinstance(level, e._DeepLevel) and len(level) - level.dead == 1000
    check_invariants(engine, {"T": credited["D"], "Q": credited["Q"]})
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(engine.to_state()))
    assert len(state["book"]) == 1000
    restored = e.Engine.from_state(spec, state)
    live = [resting[n][0] for n in range(3000) if n not in cancelled]
    for book in (engine, restored):
        events = book.execute((e.C_PLACE, "a300", "sweep", e.BUY, e.LIMIT, e.IOC, 100, 600,
                               False, 0), seq + 1, seq + 1)  # fmt: skip
        makers = [ev[5] for ev in events if ev[0] == e.E_TRADE]
        assert makers == live[:600]
        assert [o[e.O_ID] for o in book.ask_levels[100] if o[e.O_REMAINING]] == live[600:]
    assert restored.state_hash == engine.state_hash
