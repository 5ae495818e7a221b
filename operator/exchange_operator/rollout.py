"""The matcher's rollout (pure): its StatefulSet is `OnDelete`, the operator deletes the pods.

The StatefulSet's own rolling update goes from the highest ordinal down, blind to who leads:
with a leader and its hot standby it would switch leadership twice when the leader happens
to be the last pod. The operator switches once:

1. Outdated pods that do not lead go first, one at a time (a pod that is not ready is never
   in the way: it cannot get worse). A deleted standby comes back updated and catches up.
2. Then the leader, once its standby is in sync. Its graceful stop (SIGTERM) lets the
   commands in flight commit on the standby, ends the standby's stream and releases the
   Lease; the standby leads at once, and the old pod comes back as the updated standby.
   A standby that never gets in sync holds the rollout there and the Market says why.

A single instance is replaced as it is: the market pauses for its restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange_operator.kube import PodState


@dataclass(frozen=True)
class Step:
    delete: PodState | None
    """The pod to delete now (None: nothing, or wait)."""
    updated: int
    """Pods that run the update revision."""
    message: str
    """What the rollout does or waits for ("" when every pod is up to date)."""


def next_step(
    pods: list[PodState],
    replicas: int,
    update_revision: str,
    leader: str,
    standby_in_sync: bool,
) -> Step:
    """`leader`: the pod that holds the Lease ("" when nobody leads); `standby_in_sync`: the
    leader says its standby is in sync."""
    if not update_revision:
        return Step(None, 0, "")
    updated = sum(1 for p in pods if p.revision == update_revision)
    outdated = [p for p in pods if p.revision != update_revision]
    if not outdated:
        return Step(None, updated, "")
    going = [p.name for p in pods if p.deleting]
    if going:
        return Step(None, updated, f"waiting for {', '.join(going)} to go")
    if len(pods) < replicas:
        return Step(None, updated, "waiting for every pod to be created again")
    followers = sorted((p for p in outdated if p.name != leader), key=lambda p: (p.ready, p.name))
    if followers:
        target = followers[0]
        waiting = [p.name for p in pods if not p.ready and p.name not in (target.name, leader)]
        if target.ready and waiting:
            return Step(None, updated, f"waiting for {', '.join(waiting)} to be ready")
        return Step(target, updated, f"replacing {target.name} (not leading)")
    (target,) = outdated  # the leader
    if replicas > 1 and not standby_in_sync:
        return Step(
            None, updated, f"waiting for the standby to be in sync before {target.name} hands over"
        )
    action = "hands over to its standby" if replicas > 1 else "restarts (no standby)"
    return Step(target, updated, f"replacing the leader {target.name}: it {action}")
