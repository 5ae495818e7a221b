"""A Market's status from what the operator observed (pure): phase, conditions in the
`metav1.Condition` shape with constant types and CamelCase reasons, fencing, the effective
mode, the matcher's and the reconciliation's figures.

`changed` decides whether to patch: only when something but the check time moved, or the
check time is a minute old, so an idle market's status is not rewritten every few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exchange_operator.failover import Judgement
from exchange_operator.observe import MatcherState
from exchange_operator.rollout import Step
from workloads.matcher.lease import Identity

READY = "Ready"
DEGRADED = "Degraded"
FAILING_OVER = "FailingOver"
RECONCILIATION_HEALTHY = "ReconciliationHealthy"
SAFETY_MODE_ACTIVE = "SafetyModeActive"
CONDITIONS = (READY, DEGRADED, FAILING_OVER, RECONCILIATION_HEALTHY, SAFETY_MODE_ACTIVE)

BREACH_REASONS = {
    "seq_regression": "SeqRegression",
    "epoch_regression": "EpochRegression",
    "settlement_stalled": "SettlementStalled",
    "lag": "LagBreach",
    "stale": "MatcherStale",
}
STALE_CHECK_S = 60


@dataclass(frozen=True)
class Observation:
    generation: int
    paused: bool
    matcher_ready: int
    gateway_available: int
    gateway_wanted: int
    ledger_ready: int
    matcher: MatcherState | None
    matcher_error: str
    judgement: Judgement
    epoch: int
    leader: str
    leader_since: str
    ledger: dict[str, Any] | None
    ledger_error: str
    desired_mode: str
    desired_source: str
    problems: tuple[str, ...] = ()
    """Reconcile errors worth showing (a spec the gateway's catalogue refuses, ...)."""
    replicas: int = 1
    rollout: Step | None = None
    archive_alert_seconds: int = 0
    """spec.archive.lagAlertSeconds: an archive lag past it degrades the Market (0: none)."""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    previous: list[dict[str, Any]], type_: str, status: bool | None, reason: str, message: str,
    generation: int,
) -> dict[str, Any]:  # fmt: skip
    """A condition; its transition time moves only when its status does."""
    value = "Unknown" if status is None else ("True" if status else "False")
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == value else now()
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def compute(obs: Observation, previous: dict[str, Any]) -> dict[str, Any]:
    old = list(previous.get("conditions") or [])
    gen = obs.generation
    m = obs.matcher
    serving = m is not None and m.leader and obs.matcher_ready > 0
    refusing = m is not None and bool(m.refusal)

    if obs.paused:
        ready = (False, "Paused", "spec.paused: the operator does not reconcile this Market")
    elif refusing:
        ready = (False, "MatcherRefusing", m.refusal if m else "")
    elif not serving:
        why = obs.matcher_error or obs.judgement.message or "the matcher does not lead yet"
        ready = (False, "MatcherNotReady", why)
    elif obs.gateway_available < 1:
        ready = (False, "GatewayNotReady", "no gateway replica is available")
    elif obs.ledger_ready < 1:
        ready = (False, "LedgerNotReady", "the ledger is not ready")
    else:
        ready = (True, "MarketReady", f"{obs.leader} leads with epoch {obs.epoch}")

    ledger = obs.ledger
    codes = list((ledger or {}).get("reason_codes") or [])
    if ledger is None:
        recon: tuple[bool | None, str, str] = (None, "LedgerUnreachable", obs.ledger_error)
    elif ledger.get("breach"):
        reasons = "; ".join(ledger.get("reasons") or [])
        recon = (False, BREACH_REASONS.get(codes[0], "Breach") if codes else "Breach", reasons)
    elif ledger.get("latched"):
        recon = (False, "Latched", "the breach cleared; the latch holds until it is released")
    else:
        recon = (True, "InSync", f"lag {ledger.get('lag')}")

    degraded_reasons = []
    if refusing:
        degraded_reasons.append(("MatcherRefusing", m.refusal if m else ""))
    if recon[0] is False:
        degraded_reasons.append(("ReconciliationBreach", recon[2]))
    if obs.gateway_available < obs.gateway_wanted:
        degraded_reasons.append(
            ("GatewayDegraded", f"{obs.gateway_available}/{obs.gateway_wanted} gateways available")
        )
    if serving and obs.replicas > 1 and m is not None and not m.standby_in_sync:
        degraded_reasons.append(("NoSyncStandby", _no_sync_standby(m)))
    if serving and m is not None and m.archive is not None and obs.archive_alert_seconds:
        last_seq, lag, error = m.archive
        if lag > obs.archive_alert_seconds:
            degraded_reasons.append(
                ("ArchiveLagging", f"the oldest unarchived WAL segment has waited {lag:.0f}s"
                 f" (bound {obs.archive_alert_seconds}s); archived to seq {last_seq}; {error}")
            )  # fmt: skip
    degraded_reasons.extend(("ReconcileError", p) for p in obs.problems)
    degraded = (
        (True, degraded_reasons[0][0], "; ".join(msg for _, msg in degraded_reasons))
        if degraded_reasons
        else (False, "AsExpected", "nothing is degraded")
    )
    j = obs.judgement
    safety = obs.desired_mode != "NORMAL"
    conditions = [
        condition(old, READY, ready[0], ready[1], ready[2], gen),
        condition(old, DEGRADED, degraded[0], degraded[1], degraded[2], gen),
        condition(old, FAILING_OVER, j.failing_over, j.reason, j.message, gen),
        condition(old, RECONCILIATION_HEALTHY, recon[0], recon[1], recon[2] or "", gen),
        condition(
            old, SAFETY_MODE_ACTIVE, safety,
            obs.desired_source.capitalize() if safety else "Normal",
            f"{obs.desired_mode} ({obs.desired_source})" if safety else "no SafetyMode applies",
            gen,
        ),
    ]  # fmt: skip
    if obs.paused:
        phase = "Paused"
    elif j.failing_over:
        phase = "FailingOver"
    elif ready[0]:
        phase = "Degraded" if degraded[0] else "Ready"
    elif degraded[0] or refusing or obs.epoch:
        phase = "Degraded"  # it has served before: something is wrong now
    elif obs.matcher_ready or obs.gateway_available or obs.ledger_ready:
        phase = "Provisioning"
    else:
        phase = "Pending"

    status: dict[str, Any] = {
        "phase": phase,
        "observedGeneration": gen,
        "conditions": conditions,
        # A date-time field must hold a date-time: no `since` while nobody leads.
        "fencing": {"epoch": obs.epoch, "leader": obs.leader}
        | ({"since": obs.leader_since} if obs.leader_since else {}),
        "currentLeader": obs.leader,
        "targetLeader": j.leader or obs.leader,
        "effectiveMode": m.mode if m is not None else "UNKNOWN",
    }
    if m is not None:
        status["matcher"] = {
            "seq": m.seq,
            "stateHash": m.state_hash,
            "durableSeq": m.durable_seq,
            "publishedSeq": m.published_seq,
            "outboxLag": m.outbox_lag,
            "refusal": m.refusal,
        }
    if m is not None and m.leader and m.archive is not None:
        status["archive"] = {
            "lastSeq": m.archive[0],
            "lagSeconds": round(m.archive[1], 1),
            "lastError": m.archive[2],
        }
    if m is not None and m.leader and obs.replicas > 1:
        standby = Identity.parse(m.standby)
        status["replication"] = {
            "standby": standby.pod if standby is not None else "",
            "inSync": m.standby_in_sync,
            "lagRecords": m.replication_lag,
            "committedSeq": m.committed_seq,
        }
    if obs.rollout is not None and obs.rollout.message:
        status["rollout"] = {
            "updated": obs.rollout.updated,
            "replicas": obs.replicas,
            "message": obs.rollout.message,
        }
    elif previous.get("rollout"):
        status["rollout"] = None  # done: the merge patch removes it
    if ledger is not None:
        status["reconciliation"] = {
            "lag": ledger.get("lag") or 0,
            "behindSeconds": float(ledger.get("behind_seconds") or 0.0),
            "breach": bool(ledger.get("breach")),
            "latched": bool(ledger.get("latched")),
            "reasons": list(ledger.get("reasons") or []),
            "lastCheck": now(),
        }
    return status


def _no_sync_standby(m: MatcherState) -> str:
    standby = Identity.parse(m.standby)
    if standby is None:
        return "no standby follows the leader: losing it now waits for its restart"
    return (
        f"the standby {standby.pod} is {m.replication_lag} records behind, not in sync: "
        "losing the leader now waits for its restart"
    )


def _without_times(status: dict[str, Any]) -> dict[str, Any]:
    """The status without what moves by itself: the check time, the archive's lag (its
    last seq and error still count; a lag past the bound shows as a condition)."""
    result = dict(status)
    if result.get("reconciliation"):
        result["reconciliation"] = {
            k: v for k, v in result["reconciliation"].items() if k != "lastCheck"
        }
    if result.get("archive"):
        result["archive"] = {k: v for k, v in result["archive"].items() if k != "lagSeconds"}
    return result


def changed(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether `new` is worth a patch over `old` (see the module docstring)."""
    if _without_times(new) != _without_times({k: old.get(k) for k in new}):
        return True
    checked = (old.get("reconciliation") or {}).get("lastCheck")
    if "reconciliation" not in new or not checked:
        return "reconciliation" in new
    age = datetime.now(UTC) - datetime.strptime(checked, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return age.total_seconds() >= STALE_CHECK_S
