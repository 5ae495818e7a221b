"""The operator's pure decisions: when a leader is lost and what to do, what status says,
and when it is worth a patch."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from exchange_operator.failover import Action, LeaderView, failover_reason, judge
from exchange_operator.kube import LeaseState, PodState
from exchange_operator.model import Failover
from exchange_operator.observe import MatcherState
from exchange_operator.rollout import Step, next_step
from exchange_operator.status import Observation, changed, compute
from workloads.matcher.lease import Identity

pytestmark = pytest.mark.unit

FAILOVER = Failover(timeout_seconds=5, lease_duration_seconds=10)
HOLDER = Identity("matcher-btc-usdt-0", "uid-1", "boot-a")
LEASE = LeaseState(str(HOLDER), 3, "100", "2026-12-07T10:00:00Z")
POD = PodState("matcher-btc-usdt-0", "uid-1", True, "10.244.0.9", False)


def view(**kw: Any) -> LeaderView:
    base = LeaderView(LEASE, 1.0, POD, 0.0, False, frozenset())
    return replace(base, **kw)


def test_a_leader_that_renews_and_is_ready_is_left_alone() -> None:
    j = judge(view(), FAILOVER)
    assert (j.action, j.failing_over, j.reason) == (Action.NONE, False, "LeaderServing")


def test_a_silent_leader_is_fenced_only_past_the_lease_and_the_timeout() -> None:
    waiting = judge(view(lease_unchanged_s=12), FAILOVER)
    assert (waiting.action, waiting.failing_over, waiting.reason) == (
        Action.NONE, True, "LeaseExpired",
    )  # fmt: skip
    fence = judge(view(lease_unchanged_s=15), FAILOVER)
    assert (fence.action, fence.reason) == (Action.FENCE, "LeaseExpired")
    deleting = judge(view(lease_unchanged_s=20, holder_pod=replace(POD, deleting=True)), FAILOVER)
    assert (deleting.action, deleting.reason) == (Action.NONE, "Fencing")  # once is enough


def test_a_leader_not_ready_past_the_timeout_is_fenced() -> None:
    assert judge(view(not_ready_s=4.9), FAILOVER).action is Action.NONE
    j = judge(view(not_ready_s=5), FAILOVER)
    assert (j.action, j.reason) == (Action.FENCE, "LeaderNotReady")


def test_a_gone_leader_is_released_when_fenced_by_us_or_expired_never_before() -> None:
    gone = view(holder_pod=None)
    assert judge(gone, FAILOVER).action is Action.NONE  # maybe force-deleted: still running?
    assert judge(replace(gone, lease_unchanged_s=10), FAILOVER).action is Action.RELEASE
    assert judge(replace(gone, fenced_uids=frozenset({"uid-1"})), FAILOVER).action is Action.RELEASE
    # The pod of the same name was created again (another UID): the old one is gone.
    recreated = view(holder_pod=replace(POD, uid="uid-2"), fenced_uids=frozenset({"uid-1"}))
    assert judge(recreated, FAILOVER).action is Action.RELEASE


def test_a_refusing_matcher_is_not_restarted_in_a_loop() -> None:
    j = judge(view(lease_unchanged_s=60, refusing=True), FAILOVER)
    assert (j.action, j.reason, j.failing_over) == (Action.NONE, "MatcherRefusing", False)


def test_without_a_holder_nobody_is_fenced() -> None:
    fresh = judge(view(lease=replace(LEASE, holder="", transitions=0)), FAILOVER)
    assert (fresh.action, fresh.reason, fresh.failing_over) == (Action.NONE, "NoLeaderYet", False)
    released = judge(view(lease=replace(LEASE, holder="")), FAILOVER)
    assert (released.reason, released.failing_over) == ("LeaderReleased", True)


def test_the_reason_of_an_epoch_change() -> None:
    restarted = Identity("matcher-btc-usdt-0", "uid-1", "boot-b")
    assert failover_reason(HOLDER, restarted, fenced=False) == "LeaderRestarted"
    assert (
        failover_reason(HOLDER, Identity("matcher-btc-usdt-0", "uid-2"), False) == "LeaderReplaced"
    )
    assert failover_reason(HOLDER, restarted, fenced=True) == "LeaderFenced"


# ---------------------------------------------------------------------- status

MATCHER = MatcherState(42, 3, "NORMAL", "ab12", 42, 40, 2, True, "")
LEDGER = {"lag": 2, "behind_seconds": 0.0, "breach": False, "latched": False, "reasons": [],
          "reason_codes": []}  # fmt: skip


def observation(**kw: Any) -> Observation:
    base = Observation(
        generation=4, paused=False, matcher_ready=1, gateway_available=1, gateway_wanted=1,
        ledger_ready=1, matcher=MATCHER, matcher_error="", judgement=judge(view(), FAILOVER),
        epoch=3, leader="matcher-btc-usdt-0", leader_since="2026-12-07T10:00:00Z",
        ledger=LEDGER, ledger_error="", desired_mode="NORMAL", desired_source="manual",
    )  # fmt: skip
    return replace(base, **kw)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_serving_market_is_ready_with_its_figures() -> None:
    status = compute(observation(), {})
    assert status["phase"] == "Ready" and status["observedGeneration"] == 4
    assert conditions(status) == {
        "Ready": ("True", "MarketReady"),
        "Degraded": ("False", "AsExpected"),
        "FailingOver": ("False", "LeaderServing"),
        "ReconciliationHealthy": ("True", "InSync"),
        "SafetyModeActive": ("False", "Normal"),
    }
    assert status["fencing"] == {"epoch": 3, "leader": "matcher-btc-usdt-0",
                                 "since": "2026-12-07T10:00:00Z"}  # fmt: skip
    assert status["matcher"]["seq"] == 42 and status["reconciliation"]["lag"] == 2
    assert status["effectiveMode"] == "NORMAL"


def test_a_breach_and_its_safety_mode_show_in_the_conditions() -> None:
    breach = {**LEDGER, "breach": True, "latched": True, "reason_codes": ["lag"],
              "reasons": ["lag 500 > threshold 10 for 61.0 s > grace 60 s"]}  # fmt: skip
    status = compute(
        observation(ledger=breach, desired_mode="CANCEL_ONLY", desired_source="reconciliation",
                    matcher=replace(MATCHER, mode="CANCEL_ONLY")),
        {},
    )  # fmt: skip
    got = conditions(status)
    assert got["ReconciliationHealthy"] == ("False", "LagBreach")
    assert got["SafetyModeActive"] == ("True", "Reconciliation")
    assert got["Degraded"] == ("True", "ReconciliationBreach")
    assert status["phase"] == "Degraded" and status["effectiveMode"] == "CANCEL_ONLY"
    latched = compute(observation(ledger={**LEDGER, "latched": True}), {})
    assert conditions(latched)["ReconciliationHealthy"] == ("False", "Latched")


def test_no_date_time_field_is_ever_empty() -> None:
    """The CRD's schema refuses "" for a date-time: the whole status patch would fail."""
    nobody = compute(observation(leader="", leader_since="", epoch=0), {})
    assert "since" not in nobody["fencing"]


def test_failing_over_and_refusing_markets() -> None:
    lost = judge(view(lease_unchanged_s=12), FAILOVER)
    status = compute(observation(judgement=lost, matcher=None, matcher_error="UNAVAILABLE"), {})
    assert status["phase"] == "FailingOver" and status["effectiveMode"] == "UNKNOWN"
    assert conditions(status)["FailingOver"] == ("True", "LeaseExpired")
    refusing = replace(MATCHER, leader=False, refusal="the matcher's log ends at seq 9 but ...")
    status = compute(observation(matcher=refusing), {})
    assert conditions(status)["Ready"] == ("False", "MatcherRefusing")
    assert status["phase"] == "Degraded"
    ledger_down = compute(observation(ledger=None, ledger_error="connection refused"), {})
    assert conditions(ledger_down)["ReconciliationHealthy"] == ("Unknown", "LedgerUnreachable")


def test_a_condition_keeps_its_transition_time_while_its_status_stays() -> None:
    first = compute(observation(), {})
    for c in first["conditions"]:
        c["lastTransitionTime"] = "2026-12-07T09:00:00Z"
    again = compute(observation(), first)
    assert {c["lastTransitionTime"] for c in again["conditions"]} == {"2026-12-07T09:00:00Z"}
    moved = compute(observation(judgement=judge(view(lease_unchanged_s=12), FAILOVER)), first)
    failing = next(c for c in moved["conditions"] if c["type"] == "FailingOver")
    assert failing["lastTransitionTime"] != "2026-12-07T09:00:00Z"


def test_status_is_patched_on_change_only() -> None:
    first = compute(observation(), {})
    assert changed(first, {})
    assert not changed(compute(observation(), first), first)  # the check time alone: no
    assert changed(compute(observation(matcher=replace(MATCHER, seq=43)), first), first)
    stale = {**first, "reconciliation": {**first["reconciliation"],
                                         "lastCheck": "2026-12-07T00:00:00Z"}}  # fmt: skip
    assert changed(compute(observation(), stale), stale)  # a minute-old check: refreshed


# ---------------------------------------------------------------------- hot standby


def test_the_standby_shows_in_the_status_and_a_standby_out_of_sync_degrades() -> None:
    standby = str(Identity("matcher-btc-usdt-1", "uid-2", "boot-b"))
    synced = replace(MATCHER, standby=standby, standby_in_sync=True, committed_seq=42)
    status = compute(observation(matcher=synced, replicas=2), {})
    assert status["replication"] == {"standby": "matcher-btc-usdt-1", "inSync": True,
                                     "lagRecords": 0, "committedSeq": 42}  # fmt: skip
    assert status["phase"] == "Ready"
    behind = replace(synced, standby_in_sync=False, replication_lag=900)
    status = compute(observation(matcher=behind, replicas=2), {})
    assert conditions(status)["Degraded"] == ("True", "NoSyncStandby")
    assert "900 records behind" in next(
        c["message"] for c in status["conditions"] if c["type"] == "Degraded"
    )
    assert status["phase"] == "Degraded" and conditions(status)["Ready"][0] == "True"
    alone = compute(observation(matcher=MATCHER, replicas=1), {})
    assert "replication" not in alone and alone["phase"] == "Ready"


# ---------------------------------------------------------------------- rollout

OLD, NEW = "rev-1", "rev-2"


def pods(*states: tuple[str, str, bool]) -> list[PodState]:
    return [
        PodState(f"matcher-btc-usdt-{n}", f"uid-{n}", ready, f"10.0.0.{n}", False, revision)
        for n, (_, revision, ready) in enumerate(states)
    ]


def test_a_rollout_replaces_the_standby_first_then_switches_the_leader_once() -> None:
    leader = "matcher-btc-usdt-1"  # the highest ordinal: the StatefulSet would take it first
    both_old = pods(("0", OLD, True), ("1", OLD, True))
    step = next_step(both_old, 2, NEW, leader, standby_in_sync=True)
    assert step.delete is not None and step.delete.name == "matcher-btc-usdt-0"
    standby_new = pods(("0", NEW, False), ("1", OLD, True))
    waiting = next_step(standby_new, 2, NEW, leader, standby_in_sync=False)
    assert waiting.delete is None and "in sync" in waiting.message and waiting.updated == 1
    switch = next_step(pods(("0", NEW, True), ("1", OLD, True)), 2, NEW, leader, True)
    assert switch.delete is not None and switch.delete.name == leader
    assert "hands over" in switch.message
    done = next_step(pods(("0", NEW, True), ("1", NEW, True)), 2, NEW, "matcher-btc-usdt-0", True)
    assert done == Step(None, 2, "")


def test_a_rollout_waits_for_a_pod_on_its_way_and_never_takes_two_at_once() -> None:
    going = [replace(p, deleting=p.name.endswith("0")) for p in pods(("0", OLD, True),
                                                                     ("1", OLD, True))]  # fmt: skip
    assert next_step(going, 2, NEW, "matcher-btc-usdt-1", True).delete is None
    missing = pods(("0", OLD, True))
    assert next_step(missing, 2, NEW, "matcher-btc-usdt-0", True).delete is None
    assert (
        next_step(pods(("0", OLD, True)), 1, NEW, "matcher-btc-usdt-0", False).delete
        == (pods(("0", OLD, True))[0])
    )  # a single instance: replaced as it is
    nobody = next_step(pods(("0", OLD, False), ("1", OLD, True)), 2, NEW, "", False)
    assert nobody.delete is not None and nobody.delete.name == "matcher-btc-usdt-0"
    assert next_step(pods(("0", OLD, True)), 1, "", "", False) == Step(None, 0, "")


def test_the_archive_shows_in_the_status_and_a_lag_past_its_bound_degrades() -> None:
    archiving = replace(MATCHER, archive=(40, 2.0, ""))
    status = compute(observation(matcher=archiving, archive_alert_seconds=300), {})
    assert status["archive"] == {"lastSeq": 40, "lagSeconds": 2.0, "lastError": ""}
    assert conditions(status)["Degraded"] == ("False", "AsExpected")
    # The lag alone moving is no reason to patch; a new archived seq is.
    later = compute(observation(matcher=replace(archiving, archive=(40, 9.0, ""))), status)
    assert not changed(later, status)
    assert changed(compute(observation(matcher=replace(archiving, archive=(42, 0.0, ""))), status),
                   status)  # fmt: skip
    stuck = replace(MATCHER, archive=(40, 301.0, "ConnectError: connection refused"))
    degraded = compute(observation(matcher=stuck, archive_alert_seconds=300), status)
    assert conditions(degraded)["Degraded"] == ("True", "ArchiveLagging")
    assert degraded["phase"] == "Degraded"
    assert "connection refused" in next(
        c["message"] for c in degraded["conditions"] if c["type"] == "Degraded"
    )
    assert "archive" not in compute(observation(), {})  # no archive configured
