"""Pure decisions at the edges: reconciliation, latch, tokens, settings, request bodies."""

from __future__ import annotations

from dataclasses import replace

import pytest

from workloads.ledger import payloads
from workloads.ledger import reconciliation as rec
from workloads.ledger.auth import AdminTokens
from workloads.ledger.errors import ApiError, Code
from workloads.ledger.settings import LedgerSettings, SettingsError, parse_markets, parse_tokens

pytestmark = pytest.mark.unit

MARKETS = parse_markets("BTC-USDT=127.0.0.1:1")


def obs(**kw: object) -> rec.Observation:
    base = rec.Observation("BTC-USDT", 100, 1, False, None, 100, 1, 1_000, 1_500, 0)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_lag_over_the_threshold_is_a_breach_and_at_it_is_not() -> None:
    assert not rec.evaluate(obs(engine_seq=110), 10, 5_000).breach
    ev = rec.evaluate(obs(engine_seq=111), 10, 5_000)
    assert ev.breach and ev.lag == 11 and ev.reasons == ("lag 11 > threshold 10",)


def test_staleness_counts_from_the_last_observation_or_from_the_start() -> None:
    assert rec.evaluate(obs(now_ms=7_000), 10, 5_000).stale
    assert not rec.evaluate(obs(now_ms=6_000), 10, 5_000).stale
    never = rec.evaluate(obs(engine_seq=None, engine_seen_ms=None, now_ms=4_000), 10, 5_000)
    assert not never.breach  # the start-up grace
    never = rec.evaluate(obs(engine_seq=None, engine_seen_ms=None, now_ms=6_000), 10, 5_000)
    assert never.stale and "never observed" in never.reasons[0]


def test_a_gap_an_ahead_ledger_or_a_newer_epoch_is_a_mismatch() -> None:
    stalled = rec.evaluate(obs(stalled=True, stall_reason="seq gap"), 10, 5_000)
    assert stalled.mismatch and stalled.breach and stalled.lag == 0
    ahead = rec.evaluate(obs(applied_seq=101), 10, 5_000)
    assert ahead.mismatch and "ledger applied seq 101 > matcher seq 100" in ahead.reasons
    epoch = rec.evaluate(obs(applied_epoch=2), 10, 5_000)
    assert epoch.mismatch


def decide(prev: rec.Safety, ev: rec.Evaluation, mode: str | None, **kw: bool):  # type: ignore[no-untyped-def]
    args = {"latch_enabled": True, "auto_switch": True, "can_switch": True} | kw
    return rec.decide(prev, ev, safety_mode="CANCEL_ONLY", engine_mode=mode, **args)


def test_a_breach_latches_and_engages_the_safety_mode_once() -> None:
    breach = rec.evaluate(obs(engine_seq=200), 10, 5_000)
    state, action = decide(rec.Safety(), breach, "NORMAL")
    assert action is rec.Action.ENGAGE and state.latched and state.latch_source == "reconciliation"
    state = replace(state, safety_applied=True)
    assert decide(state, breach, "CANCEL_ONLY")[1] is rec.Action.NONE
    assert decide(state, breach, "HARD_HALT")[1] is rec.Action.NONE  # stricter: left alone
    healthy = rec.evaluate(obs(), 10, 5_000)
    state, action = decide(state, healthy, "CANCEL_ONLY")
    assert state.latched and action is rec.Action.NONE  # latched: no automatic way back
    assert rec.recommended_mode(state, "CANCEL_ONLY") == "CANCEL_ONLY"


def test_without_the_latch_a_healthy_market_gets_normal_back() -> None:
    breach = rec.evaluate(obs(engine_seq=200), 10, 5_000)
    state, action = decide(rec.Safety(), breach, "NORMAL", latch_enabled=False)
    assert action is rec.Action.ENGAGE and not state.latched
    state = replace(state, safety_applied=True)
    state, action = decide(
        state, rec.evaluate(obs(), 10, 5_000), "CANCEL_ONLY", latch_enabled=False
    )
    assert action is rec.Action.RESTORE
    # A mode someone else set since is not the ledger's to undo.
    _, action = decide(
        replace(state, safety_applied=True), rec.evaluate(obs(), 10, 5_000), "HARD_HALT",
        latch_enabled=False,
    )  # fmt: skip
    assert action is rec.Action.NONE


def test_cluster_mode_only_recommends() -> None:
    breach = rec.evaluate(obs(engine_seq=200), 10, 5_000)
    state, action = decide(rec.Safety(), breach, "NORMAL", auto_switch=False)
    assert action is rec.Action.NONE and state.latched and state.breach
    assert rec.recommended_mode(state, "SOFT_HALT") == "SOFT_HALT"


def test_release_needs_zero_lag_no_mismatch_no_staleness_and_passing_invariants() -> None:
    healthy = rec.evaluate(obs(), 10, 5_000)
    assert rec.release_refusals(healthy, [], latched=True) == []
    assert rec.release_refusals(healthy, [], latched=False) == ["not latched"]
    lagging = rec.evaluate(obs(engine_seq=103), 10, 5_000)
    assert not lagging.breach and rec.release_refusals(lagging, [], True) == ["lag is 3, must be 0"]
    failing = rec.release_refusals(healthy, ["no_negative_balances"], True)
    assert failing == ["invariant failed: no_negative_balances"]
    stalled = rec.evaluate(obs(stalled=True, stall_reason="gap"), 10, 5_000)
    assert rec.release_refusals(stalled, [], True) == ["mismatch: settlement stalled: gap"]


def test_an_invariant_failure_latches_with_its_source() -> None:
    tripped = rec.trip(rec.Safety())
    assert tripped.latched and tripped.latch_source == "invariant"
    assert (
        rec.trip(replace(tripped, latch_source="reconciliation")).latch_source == "reconciliation"
    )


# ---------------------------------------------------------------------- tokens and settings


def test_tokens_name_admins_and_wrong_tokens_name_nobody() -> None:
    tokens = AdminTokens(parse_tokens("alice:tok1x,bob:tok2x", "seedtok"))
    assert tokens.identify("tok1x") == "alice" and tokens.identify("tok2x") == "bob"
    assert tokens.identify("seedtok") == "admin"
    for wrong in ("", None, "tok1", "tok1xx", "TOK1X", "alice"):
        assert tokens.identify(wrong) is None
    assert not AdminTokens({}).enabled


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LEDGER_ADMIN_TOKENS": "alice"}, "LEDGER_ADMIN_TOKENS"),
        ({"LEDGER_ADMIN_TOKENS": "alice:t1234,bob:t1234"}, "LEDGER_ADMIN_TOKENS"),
        ({"LEDGER_MARKETS": "btcusdt"}, "LEDGER_MARKETS"),
        ({"LEDGER_MARKETS": "BTC-USDT=nowhere"}, "LEDGER_MARKETS"),
        ({"LEDGER_RECONCILIATION_LAG_THRESHOLD": "ten"}, "LEDGER_RECONCILIATION_LAG_THRESHOLD"),
        ({"LEDGER_RECONCILIATION_SAFETY_MODE": "PANIC"}, "LEDGER_RECONCILIATION_SAFETY_MODE"),
        ({"LEDGER_KAFKA_ENABLED": "maybe"}, "LEDGER_KAFKA_ENABLED"),
        ({"LEDGER_HTTP_PORT": "70000"}, "LEDGER_HTTP_PORT"),
    ],
)
def test_an_invalid_setting_names_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        LedgerSettings.from_env(env)


def test_defaults_follow_the_seed() -> None:
    s = LedgerSettings.from_env({})
    assert s.http.port == 8082
    r = s.reconciliation
    assert (r.interval_ms, r.lag_threshold, r.stale_ms) == (5000, 10, 30_000)
    assert (r.safety_mode, r.auto_switch, r.latch_enabled) == ("CANCEL_ONLY", True, True)
    assert s.markets[0].assets == ("BTC", "USDT")


# ---------------------------------------------------------------------- request bodies


def code_of(fn: object, *args: object, **kw: object) -> Code:
    with pytest.raises(ApiError) as info:
        fn(*args, **kw)  # type: ignore[operator]
    return info.value.code


def test_bodies_must_be_json_objects() -> None:
    assert code_of(payloads.parse_json, b"{nope") is Code.MALFORMED_JSON
    assert code_of(payloads.parse_json, b"[1, 2]") is Code.INVALID_PAYLOAD
    assert code_of(payloads.parse_json, b"\xff\xfe") is Code.MALFORMED_JSON


@pytest.mark.parametrize(
    ("value", "code"),
    [(-5, Code.NEGATIVE_AMOUNT), ("-5", Code.NEGATIVE_AMOUNT), (0, Code.INVALID_AMOUNT),
     (True, Code.INVALID_AMOUNT), (1.5, Code.INVALID_AMOUNT), ("1e3", Code.INVALID_AMOUNT),
     (2**63, Code.INVALID_AMOUNT)],
)  # fmt: skip
def test_amounts_are_positive_integers(value: object, code: Code) -> None:
    assert code_of(payloads.amount, {"amount": value}, "amount") is code


def test_amounts_accept_integers_and_decimal_strings() -> None:
    assert payloads.amount({"a": 12}, "a") == 12
    assert payloads.amount({"a": "12"}, "a") == 12
    assert payloads.amount({"a": "-12"}, "a", signed=True) == -12


def trade_body(**over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "envelope": {"event_id": "BTC-USDT:5:0", "symbol": "BTC-USDT", "seq": "5", "epoch": "1"},
        "trade_id": "BTC-USDT:1",
        "buyer_account": "alice",
        "seller_account": "bob",
        "base_asset": "BTC",
        "quote_asset": "USDT",
        "base_amount": "10",
        "quote_amount": "1000",
    }
    body.update(over)
    return body


def test_injected_trades_are_parsed_strictly() -> None:
    trade = payloads.trade(trade_body(), MARKETS)
    assert trade.base_amount == 10 and trade.envelope.seq == 5
    camel = payloads.trade(trade_body(buyerAccount="carol", buyer_account=None), MARKETS)
    assert camel.buyer_account == "carol"
    cases = [
        (trade_body(surprise=1), Code.INVALID_PAYLOAD),
        (trade_body(base_amount="ten"), Code.INVALID_PAYLOAD),
        (trade_body(base_amount="-10"), Code.NEGATIVE_AMOUNT),
        (trade_body(quote_asset="EUR"), Code.UNKNOWN_ASSET),
        (trade_body(base_amount="0"), Code.INVALID_AMOUNT),
        (trade_body(buyer_fee="11"), Code.INVALID_AMOUNT),
        (trade_body(seller_account="alice"), Code.INVALID_EVENT),
        (trade_body(buyer_account="@external"), Code.INVALID_FIELD),
        (trade_body(envelope={"event_id": "BTC-USDT:6:0", "symbol": "BTC-USDT", "seq": "5"}),
         Code.INVALID_EVENT),
        (trade_body(envelope={"event_id": "ETH-USDT:5:0", "symbol": "ETH-USDT", "seq": "5"}),
         Code.UNKNOWN_MARKET),
    ]  # fmt: skip
    for body, code in cases:
        body = {k: v for k, v in body.items() if v is not None}
        assert code_of(payloads.trade, body, MARKETS) is code, body
