"""Waiting for pods and rollouts with a deadline, and saying why when they miss it.

A test that waits for a pod and times out is only useful if it shows what the pod went
through: every wait here, on timeout, raises `RolloutTimeout` whose message carries the
events and the container logs (current and previous) of the pods concerned.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from e2e.env.process import wait_until

Kubectl = Callable[..., str]
"""`Cluster.kubectl`: runs kubectl with the given arguments and returns its stdout."""


class RolloutTimeout(AssertionError):
    """A pod or workload did not reach the wanted state; the message says what happened."""


def get(kubectl: Kubectl, namespace: str, resource: str) -> dict[str, Any]:
    """The object as JSON, or {} when it does not exist (yet)."""
    out = kubectl("get", "-n", namespace, resource, "-o", "json", check=False)
    return dict(json.loads(out)) if out.strip() else {}


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait_pod(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    *,
    timeout: float = 60.0,
    until: Callable[[dict[str, Any]], bool] = pod_ready,
    what: str = "Ready",
) -> dict[str, Any]:
    """Wait until `until(pod)` holds (default: Ready); return the pod."""
    seen: dict[str, Any] = {}

    def check() -> bool:
        seen.update(get(kubectl, namespace, f"pod/{name}"))
        return bool(seen) and until(seen)

    _wait(kubectl, namespace, [name], check, timeout, f"pod {namespace}/{name} {what}")
    return seen


def wait_pod_phase(
    kubectl: Kubectl, namespace: str, name: str, phase: str = "Succeeded", timeout: float = 60.0
) -> dict[str, Any]:
    """Wait for a run-to-completion pod; fail at once if it reaches the other end state."""

    def reached(pod: dict[str, Any]) -> bool:
        current = pod.get("status", {}).get("phase")
        if current in ("Succeeded", "Failed") and current != phase:
            raise RolloutTimeout(
                f"pod {namespace}/{name} is {current}, wanted {phase}\n"
                + diagnostics(kubectl, namespace, [name])
            )
        return bool(current == phase)

    return wait_pod(kubectl, namespace, name, timeout=timeout, until=reached, what=phase)


def wait_available(
    kubectl: Kubectl, namespace: str, deployment: str, timeout: float = 60.0
) -> float:
    """Wait for a Deployment's rollout: the current generation observed, every replica
    updated and available. Returns the seconds it took."""

    def done() -> bool:
        d = get(kubectl, namespace, f"deployment/{deployment}")
        status, spec = d.get("status", {}), d.get("spec", {})
        return bool(d) and (
            status.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == spec.get("replicas", 1)
            and status.get("availableReplicas", 0) == spec.get("replicas", 1)
        )

    selector = _selector(kubectl, namespace, f"deployment/{deployment}")
    return _wait(
        kubectl, namespace, selector, done, timeout, f"deployment {namespace}/{deployment}"
    )


def wait_statefulset(kubectl: Kubectl, namespace: str, name: str, timeout: float = 60.0) -> float:
    """Wait until every replica of a StatefulSet is ready and current."""

    def done() -> bool:
        s = get(kubectl, namespace, f"statefulset/{name}")
        status, spec = s.get("status", {}), s.get("spec", {})
        return bool(s) and (
            status.get("observedGeneration", 0) >= s["metadata"]["generation"]
            and status.get("readyReplicas", 0) == spec.get("replicas", 1)
            and status.get("currentRevision") == status.get("updateRevision")
        )

    selector = _selector(kubectl, namespace, f"statefulset/{name}")
    return _wait(kubectl, namespace, selector, done, timeout, f"statefulset {namespace}/{name}")


def _selector(kubectl: Kubectl, namespace: str, resource: str) -> str:
    labels = get(kubectl, namespace, resource).get("spec", {}).get("selector", {})
    match = labels.get("matchLabels", {})
    return ",".join(f"{k}={v}" for k, v in match.items())


def _wait(
    kubectl: Kubectl,
    namespace: str,
    pods: list[str] | str,
    check: Callable[[], bool],
    timeout: float,
    what: str,
) -> float:
    try:
        return wait_until(check, timeout=timeout, what=what, interval=0.25)
    except TimeoutError as exc:
        report = diagnostics(kubectl, namespace, pods)
        print(f"\n{exc}\n{report}", file=sys.stderr)
        raise RolloutTimeout(f"{exc}\n{report}") from None


def diagnostics(kubectl: Kubectl, namespace: str, pods: list[str] | str) -> str:
    """Status, events and logs of the pods named (a list) or selected (a label selector)."""
    if isinstance(pods, str):
        out = kubectl("get", "pods", "-n", namespace, "-l", pods, "-o", "name", check=False)
        names = [line.removeprefix("pod/") for line in out.split()]
    else:
        names = pods
    if not names:
        events = kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)
        return f"no pods; events in {namespace}:\n{events}"
    sections = []
    for name in names:
        pod = get(kubectl, namespace, f"pod/{name}")
        statuses = pod.get("status", {}).get("containerStatuses", [])
        states = "; ".join(
            f"{c['name']}: {json.dumps(c.get('state'))} restarts={c.get('restartCount')}"
            for c in statuses
        )
        events = kubectl(
            "get", "events", "-n", namespace,
            "--field-selector", f"involvedObject.name={name}",
            "--sort-by=.lastTimestamp",
            check=False,
        )  # fmt: skip
        logs = kubectl("logs", "-n", namespace, name, "--all-containers", "--tail=40", check=False)
        previous = kubectl(
            "logs", "-n", namespace, name, "--all-containers", "--previous", "--tail=40",
            check=False,
        )  # fmt: skip
        sections.append(
            f"--- pod {namespace}/{name}: phase {pod.get('status', {}).get('phase')}; {states}\n"
            f"events:\n{events or '(none)'}\nlogs:\n{logs or '(none)'}"
            + (f"\nprevious logs:\n{previous}" if previous.strip() else "")
        )
    return "\n".join(sections)
