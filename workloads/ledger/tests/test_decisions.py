"""Pure decisions at the edges: reconciliation, latch, tokens, settings, request bodies."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from workloads.ledger import payloads
from workloads.ledger import reconciliation as rec
from workloads.ledger.auth import AdminTokens
from workloads.ledger.errors import ApiError, Code
from workloads.ledger.settings import LedgerSettings, SettingsError, parse_markets, parse_tokens

pytestmark = pytest.mark.unit

MARKETS = parse_markets("BTC-USDT=127.0.0.1:1")


LIMITS = rec.Limits(lag_threshold=10, lag_grace_ms=60_000, stale_ms=5_000)


def obs(**kw: object) -> rec.Observation:
    """The ledger at seq 100 and a matcher sampled at 100 right after it, 500 ms ago."""
    base = rec.Observation(
        "BTC-USDT", 100, 1, False, None, 100, 1, 1_000, 1_500, 0, engine_fresh=True
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def evaluate(**kw: object) -> rec.Evaluation:
    return rec.evaluate(obs(**kw), LIMITS)


def test_lag_past_the_threshold_breaches_only_once_it_outlasts_the_grace() -> None:
    assert not evaluate(engine_seq=110, behind_since_ms=None).breach
    inside = evaluate(engine_seq=5_000, behind_since_ms=1_500 - 60_000)
    assert not inside.breach and inside.lag == 4_900 and inside.behind_ms == 60_000
    past = evaluate(engine_seq=5_000, behind_since_ms=1_500 - 60_001)
    assert past.breach and past.codes == ("lag",) and not past.mismatch
    assert past.reasons == ("lag 4900 > threshold 10 for 60.0 s > grace 60 s",)
    # Behind for long, but by no more than the threshold now: caught up enough.
    assert not evaluate(engine_seq=110, behind_since_ms=-100_000).breach


def test_the_backlog_dates_the_oldest_sample_the_ledger_has_not_settled() -> None:
    backlog = rec.Backlog().add(100, 1_000).add(100, 2_000).add(150, 3_000).add(400, 4_000)
    assert backlog.samples == ((100, 1_000), (150, 3_000), (400, 4_000))  # idle adds nothing
    assert backlog.settle(applied_seq=80, threshold=10).since_ms == 1_000
    assert backlog.settle(applied_seq=90, threshold=10).since_ms == 3_000  # 100 within 10
    assert backlog.settle(applied_seq=390, threshold=10).since_ms is None
    assert backlog.settle(applied_seq=0, threshold=10) is backlog


def test_a_long_backlog_keeps_its_oldest_sample_and_thins_the_rest() -> None:
    backlog = rec.Backlog()
    for n in range(3 * rec.Backlog.CAP):
        backlog = backlog.add(n + 1, n)
    assert len(backlog.samples) <= rec.Backlog.CAP and backlog.samples[0] == (1, 0)
    assert backlog.samples[-1] == (3 * rec.Backlog.CAP, 3 * rec.Backlog.CAP - 1)


def test_staleness_counts_from_the_last_observation_or_from_the_start() -> None:
    assert evaluate(now_ms=7_000).stale
    assert evaluate(now_ms=7_000).codes == ("stale",)
    assert not evaluate(now_ms=6_000).stale
    never = evaluate(engine_seq=None, engine_seen_ms=None, engine_fresh=False, now_ms=4_000)
    assert not never.breach  # the start-up grace
    never = evaluate(engine_seq=None, engine_seen_ms=None, engine_fresh=False, now_ms=6_000)
    assert never.stale and "never observed" in never.reasons[0]


def test_an_old_sample_after_a_failed_poll_is_unknown_not_a_mismatch() -> None:
    """The restart race: the ledger settled on to 1568 while the matcher was being
    restarted; the last sample (1208) was read before that and compares with nothing."""
    old = evaluate(applied_seq=1_568, applied_epoch=2, engine_seq=1_208, engine_fresh=False)
    assert not old.breach and not old.mismatch and old.lag == 0


def test_a_ledger_ahead_of_a_sample_taken_after_it_is_a_seq_regression_at_once() -> None:
    ahead = evaluate(applied_seq=101)
    assert ahead.breach and ahead.mismatch and ahead.codes == ("seq_regression",)
    assert ahead.reasons == ("ledger applied seq 101 > matcher seq 100 (sampled after it)",)


def test_a_matcher_below_what_its_market_published_is_a_seq_regression_at_once() -> None:
    # A matcher that recovered 1208 where 1568 is in the topic: whatever the ledger saw.
    regressed = evaluate(applied_seq=0, engine_seq=1_208, published_seq=1_568, engine_fresh=False)
    assert regressed.breach and regressed.codes == ("seq_regression",)
    assert regressed.reasons == ("matcher seq 1208 < seq 1568 its market already published",)
    assert not evaluate(published_seq=100).breach


def test_a_stalled_settlement_or_a_newer_epoch_in_the_ledger_is_a_mismatch_at_once() -> None:
    stalled = evaluate(stalled=True, stall_reason="seq gap")
    assert stalled.mismatch and stalled.breach and stalled.lag == 0
    assert stalled.codes == ("settlement_stalled",)
    epoch = evaluate(applied_epoch=2)
    assert epoch.mismatch and epoch.codes == ("epoch_regression",)
    # An old sample may predate the matcher's new epoch: not comparable.
    assert not evaluate(applied_epoch=2, engine_fresh=False).breach


def decide(prev: rec.Safety, ev: rec.Evaluation, mode: str | None, **kw: bool):  # type: ignore[no-untyped-def]
    args = {"latch_enabled": True, "auto_switch": True, "can_switch": True} | kw
    return rec.decide(prev, ev, safety_mode="CANCEL_ONLY", engine_mode=mode, **args)


def test_a_breach_latches_and_engages_the_safety_mode_once() -> None:
    breach = evaluate(engine_seq=200, behind_since_ms=-100_000)
    state, action = decide(rec.Safety(), breach, "NORMAL")
    assert action is rec.Action.ENGAGE and state.latched and state.latch_source == "reconciliation"
    state = replace(state, safety_applied=True)
    assert decide(state, breach, "CANCEL_ONLY")[1] is rec.Action.NONE
    assert decide(state, breach, "HARD_HALT")[1] is rec.Action.NONE  # stricter: left alone
    healthy = evaluate()
    state, action = decide(state, healthy, "CANCEL_ONLY")
    assert state.latched and action is rec.Action.NONE  # latched: no automatic way back
    assert rec.recommended_mode(state, "CANCEL_ONLY") == "CANCEL_ONLY"


def test_without_the_latch_a_healthy_market_gets_normal_back() -> None:
    breach = evaluate(engine_seq=200, behind_since_ms=-100_000)
    state, action = decide(rec.Safety(), breach, "NORMAL", latch_enabled=False)
    assert action is rec.Action.ENGAGE and not state.latched
    state = replace(state, safety_applied=True)
    state, action = decide(state, evaluate(), "CANCEL_ONLY", latch_enabled=False)
    assert action is rec.Action.RESTORE
    # A mode someone else set since is not the ledger's to undo.
    _, action = decide(
        replace(state, safety_applied=True), evaluate(), "HARD_HALT",
        latch_enabled=False,
    )  # fmt: skip
    assert action is rec.Action.NONE


def test_cluster_mode_only_recommends() -> None:
    breach = evaluate(engine_seq=200, behind_since_ms=-100_000)
    state, action = decide(rec.Safety(), breach, "NORMAL", auto_switch=False)
    assert action is rec.Action.NONE and state.latched and state.breach
    assert rec.recommended_mode(state, "SOFT_HALT") == "SOFT_HALT"


def test_release_needs_zero_lag_no_mismatch_no_staleness_and_passing_invariants() -> None:
    healthy = evaluate()
    assert rec.release_refusals(healthy, [], latched=True) == []
    assert rec.release_refusals(healthy, [], latched=False) == ["not latched"]
    lagging = evaluate(engine_seq=103)
    assert not lagging.breach and rec.release_refusals(lagging, [], True) == ["lag is 3, must be 0"]
    failing = rec.release_refusals(healthy, ["no_negative_balances"], True)
    assert failing == ["invariant failed: no_negative_balances"]
    stalled = evaluate(stalled=True, stall_reason="gap")
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


def test_a_pause_gets_a_grace_and_a_restarted_ledger_its_partitions_at_once() -> None:
    s = LedgerSettings.from_env({})
    assert s.reconciliation.limits == rec.Limits(10, 60_000, 30_000)
    assert s.kafka.group_instance_id == f"ledger-{socket.gethostname()}"
    assert not LedgerSettings.from_env(
        {"LEDGER_KAFKA_GROUP_INSTANCE_ID": ""}
    ).kafka.group_instance_id
    with pytest.raises(SettingsError, match="LEDGER_KAFKA_SESSION_TIMEOUT_MS"):
        LedgerSettings.from_env({"LEDGER_KAFKA_SESSION_TIMEOUT_MS": "1000"})


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
