"""Failover decisions (pure): whether a market's leader is lost, and what the operator does.

The matcher fences itself (it stops at its renew deadline, `workloads/matcher/lease.py`) and
its instance manager restarts a crashed process at once; the operator covers what a process
cannot do for itself:

- The leader is alive but silent (frozen, hung, cut off from the API server): its lease has
  not changed for `leaseDurationSeconds` + `timeoutSeconds` of the operator's own clock. The
  operator deletes that pod (by UID, so never a successor): demote first. The kubelet kills
  it, the StatefulSet creates the pod again on the same volume.
- The leader's pod is gone (deleted by the operator, drained, evicted): the process is dead
  once the API no longer has its pod. If the operator deleted it, or the lease has expired
  anyway, it empties the lease's holder (conditional on the version it read), and the next
  instance takes it at once, with epoch + 1: promote second. A pod that vanished by force
  deletion may still run somewhere, so then the operator waits for the lease to expire.
- The leader's pod has been NotReady for `timeoutSeconds` while it still renews (its WAL
  failed, say): fenced like a silent one.
- A matcher that refuses to serve (its log is behind what its market published) is left
  alone: a restart would not help; the Market says so and the ledger latches the market.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from exchange_operator.kube import LeaseState, PodState
from exchange_operator.model import Failover
from workloads.matcher.lease import Identity


class Action(Enum):
    NONE = "none"
    FENCE = "fence"  # delete the holder's pod
    RELEASE = "release"  # empty the lease's holder: its pod is gone


@dataclass(frozen=True)
class LeaderView:
    """What the operator sees of a market's leadership at one check."""

    lease: LeaseState | None
    lease_unchanged_s: float
    """Seconds of the operator's clock since it first saw the lease's current version."""
    holder_pod: PodState | None
    """The pod the holder identity names, if it exists (with any UID)."""
    not_ready_s: float
    """How long that pod has been NotReady (0: ready, or gone)."""
    refusing: bool
    """The market's matcher answers that it refuses to serve."""
    fenced_uids: frozenset[str]
    """Pods the operator deleted itself."""


@dataclass(frozen=True)
class Judgement:
    action: Action
    failing_over: bool
    reason: str
    message: str
    leader: str = ""
    """The holder's pod name ("" when nobody leads)."""


def judge(view: LeaderView, failover: Failover) -> Judgement:
    lease = view.lease
    if lease is None or not lease.holder:
        if lease is not None and lease.transitions > 0:
            return Judgement(
                Action.NONE, True, "LeaderReleased", "the leader released the lease; the next "
                "instance takes it at once"
            )  # fmt: skip
        return Judgement(Action.NONE, False, "NoLeaderYet", "the matcher has not led yet")
    holder = Identity.parse(lease.holder)
    pod = view.holder_pod
    name = holder.pod if holder else lease.holder
    expired = view.lease_unchanged_s >= failover.lease_duration_seconds
    if holder is None or pod is None or pod.uid != holder.uid:
        if holder is not None and (holder.uid in view.fenced_uids or expired):
            return Judgement(
                Action.RELEASE, True, "LeaderPodGone",
                f"{name} is gone; releasing its lease for the next instance",
            )  # fmt: skip
        return Judgement(
            Action.NONE, True, "LeaderPodGone",
            f"{name} is gone; the lease expires {_left(view, failover)}",
        )  # fmt: skip
    if view.refusing:
        return Judgement(Action.NONE, False, "MatcherRefusing", "the matcher refuses to serve")
    if pod.deleting:
        return Judgement(Action.NONE, True, "Fencing", f"{name} is being deleted", name)
    if view.lease_unchanged_s >= failover.lease_duration_seconds + failover.timeout_seconds:
        return Judgement(
            Action.FENCE, True, "LeaseExpired",
            f"{name} has not renewed the lease for {view.lease_unchanged_s:.0f} s: fencing it",
            name,
        )  # fmt: skip
    if expired:
        return Judgement(
            Action.NONE, True, "LeaseExpired",
            f"{name} has not renewed the lease for {view.lease_unchanged_s:.0f} s",
            name,
        )  # fmt: skip
    if view.not_ready_s >= failover.timeout_seconds:
        return Judgement(
            Action.FENCE, True, "LeaderNotReady",
            f"{name} leads but has not been ready for {view.not_ready_s:.0f} s: fencing it",
            name,
        )  # fmt: skip
    return Judgement(Action.NONE, False, "LeaderServing", f"{name} leads", name)


def _left(view: LeaderView, failover: Failover) -> str:
    left = failover.lease_duration_seconds - view.lease_unchanged_s
    return f"in {left:.0f} s" if left > 0 else "now"


def failover_reason(previous: Identity | None, current: Identity | None, fenced: bool) -> str:
    """Why the epoch changed, for the Market's status and its Event."""
    if fenced:
        return "LeaderFenced"
    if previous is not None and current is not None and previous.same_pod(current):
        return "LeaderRestarted"
    return "LeaderReplaced"
