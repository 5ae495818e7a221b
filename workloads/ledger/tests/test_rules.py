"""Posting rules and the settlement cursor: pure functions, checked against the engine."""

from __future__ import annotations

import random

import pytest

from contracts.v1 import events_pb2
from e2e.bench import simulate
from workloads.ledger import rules
from workloads.ledger.cursor import Cursor, Verdict
from workloads.ledger.rules import AVAILABLE, HOLD, Posting
from workloads.matcher import engine as e
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.unit

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT", maker_fee_bps=10, taker_fee_bps=25)


def sim_with_book() -> tuple[simulate.Simulator, list[events_pb2.Event]]:
    sim = simulate.Simulator(SPEC)
    events = sim.start_epoch(1) + sim.run(simulate.funding(["maker", "taker"], SPEC, 10**9))
    return sim, events


def test_order_accepted_moves_the_reservation_from_available_to_hold() -> None:
    sim, _ = sim_with_book()
    (accepted,) = sim.run([(e.C_PLACE, "maker", "m1", e.BUY, e.LIMIT, e.GTC, 1000, 30, False, 0)])
    entry = rules.entry_for("order_accepted", accepted.order_accepted, "fees")
    assert entry is not None and entry.kind == rules.KIND_RESERVE
    assert entry.reference == accepted.order_accepted.envelope.event_id
    assert entry.postings == (
        Posting("maker", "USDT", AVAILABLE, -30_000),
        Posting("maker", "USDT", HOLD, 30_000),
    )


def test_trade_settles_both_sides_fees_and_price_improvement() -> None:
    sim, _ = sim_with_book()
    sim.run([(e.C_PLACE, "maker", "s1", e.SELL, e.LIMIT, e.GTC, 1000, 4000, False, 0)])
    # The taker bids 1010 and trades at the maker's 1000: 10 per lot of price improvement.
    events = sim.run([(e.C_PLACE, "taker", "b1", e.BUY, e.LIMIT, e.GTC, 1010, 4000, False, 0)])
    trade = next(ev.trade_executed for ev in events if ev.WhichOneof("body") == "trade_executed")
    assert trade.buyer_released == 40_000 and trade.buyer_fee == 10 and trade.seller_fee == 4000
    entry = rules.entry_for("trade_executed", trade, "fees")
    assert entry is not None and entry.trade_id == trade.trade_id
    quote, base = trade.quote_amount, trade.base_amount
    assert set(entry.postings) == {
        Posting("taker", "USDT", HOLD, -(quote + 40_000)),
        Posting("taker", "USDT", AVAILABLE, 40_000),
        Posting("maker", "USDT", AVAILABLE, quote - trade.seller_fee),
        Posting("fees", "USDT", AVAILABLE, trade.seller_fee),
        Posting("maker", "BTC", HOLD, -base),
        Posting("taker", "BTC", AVAILABLE, base - trade.buyer_fee),
        Posting("fees", "BTC", AVAILABLE, trade.buyer_fee),
    }
    assert rules.balanced(entry.postings)


def test_zero_amounts_are_not_posted_and_non_money_events_make_no_entry() -> None:
    sim, events = sim_with_book()
    sim.run([(e.C_PLACE, "maker", "s1", e.SELL, e.LIMIT, e.GTC, 1000, 5, False, 0)])
    (_, trade) = sim.run([(e.C_PLACE, "taker", "b1", e.BUY, e.LIMIT, e.IOC, 1000, 5, False, 0)])
    entry = rules.entry_for("trade_executed", trade.trade_executed, "fees")
    assert entry is not None
    postings = [Posting(*p) for p in entry.postings]
    assert all(p.amount for p in postings)
    # No price improvement: the taker's available quote gets no (zero) posting.
    assert not any(
        p.owner == "taker" and p.bucket == AVAILABLE and p.asset == "USDT" for p in postings
    )
    rejected = sim.run([(e.C_PLACE, "nobody", "x", e.BUY, e.LIMIT, e.GTC, 1000, 5, False, 0)])
    mode = sim.run([(e.C_SET_MODE, e.CANCEL_ONLY, "test")])
    for ev in [events[0], *rejected, *mode]:
        kind = ev.WhichOneof("body")
        assert kind is not None
        assert rules.entry_for(kind, getattr(ev, kind), "fees") is None


def test_funding_is_booked_against_a_system_counterparty() -> None:
    sim, events = sim_with_book()
    credited = events[1].funds_credited
    entry = rules.entry_for("funds_credited", credited, "fees")
    assert entry is not None and entry.funding_id == credited.funding_id
    assert entry.postings == (
        Posting("maker", "BTC", AVAILABLE, 10**9),
        Posting(rules.EXTERNAL, "BTC", AVAILABLE, -(10**9)),
    )
    (debited,) = sim.run([(e.C_FUNDING, "w1", "maker", "BTC", 7, e.DEBIT)])
    out = rules.entry_for("funds_debited", debited.funds_debited, "fees")
    assert out is not None and Posting(*out.postings[0]).amount == -7
    corrected = rules.with_origin(out, rules.FundingOrigin(rules.CORRECTIONS, "correction", "c1"))
    assert corrected.kind == "correction" and corrected.correction_id == "c1"
    assert corrected.postings[1] == Posting(rules.CORRECTIONS, "BTC", AVAILABLE, 7)


def test_every_entry_of_a_random_stream_balances_per_asset() -> None:
    sim, events = sim_with_book()
    accounts = [f"a{i}" for i in range(8)]
    events += sim.run(simulate.funding(accounts, SPEC, 10**8))
    events += sim.run(list(simulate.random_commands(random.Random(3), accounts, 2000)))
    entries = [i.entry for i in (rules.decode(ev.SerializeToString(), "fees") for ev in events)]
    money = [x for x in entries if x is not None]
    assert len(money) > 1000
    assert all(rules.balanced(x.postings) for x in money)
    assert {x.kind for x in money} == {"funding", "reserve", "release", "trade"}


def test_decode_takes_position_from_the_event_id_and_refuses_bad_ids() -> None:
    _, events = sim_with_book()
    item = rules.decode(events[2].SerializeToString(), "fees")
    assert (item.market, item.seq, item.idx, item.epoch) == ("BTC-USDT", 3, 0, 1)
    bad = events_pb2.Event()
    bad.CopyFrom(events[2])
    bad.funds_credited.envelope.event_id = "BTC-USDT:4:0"  # does not match seq 3
    with pytest.raises(ValueError, match="event id"):
        rules.decode(bad.SerializeToString(), "fees")
    with pytest.raises(ValueError, match="without a body"):
        rules.decode(b"", "fees")


def test_system_accounts_are_counterparties_and_the_fee_account() -> None:
    assert rules.is_system("@external", "fees") and rules.is_system("fees", "fees")
    assert not rules.is_system("alice", "fees")


# ---------------------------------------------------------------------- the cursor


def test_cursor_applies_contiguous_events_and_drops_what_it_passed() -> None:
    c = Cursor("M")
    assert c.classify(1, 0, 1) is Verdict.APPLY
    c = c.advance(1, 0, 1)
    assert c.classify(1, 1, 1) is Verdict.APPLY  # the next event of the same command
    assert c.classify(2, 0, 1) is Verdict.APPLY  # or the first of the next command
    assert c.classify(1, 0, 1) is Verdict.DUPLICATE
    c = c.advance(2, 0, 1)
    assert c.classify(1, 5, 9) is Verdict.DUPLICATE  # passed positions: duplicate, any epoch


def test_cursor_rejects_a_lower_epoch_and_parks_behind_a_gap() -> None:
    c = Cursor("M").advance(1, 0, 1).advance(2, 0, 2)
    assert c.max_epoch == 2
    assert c.classify(3, 0, 1) is Verdict.STALE_EPOCH
    assert c.rejected_stale().stale_rejected == 1
    assert c.classify(4, 0, 2) is Verdict.GAP
    assert c.classify(2, 2, 2) is Verdict.GAP  # an index skipped inside a command
    stalled = c.stall(4, 0)
    assert stalled.stalled and "expected 2:1 or 3:0, got 4:0" in (stalled.stall_reason or "")
    assert stalled.stall(9, 0) == stalled  # the first gap's reason is kept
    assert not stalled.unstall().stalled
