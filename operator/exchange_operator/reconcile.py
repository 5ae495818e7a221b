"""The operator's reconcile steps, called by the thin kopf handlers in `handlers.py`.

Each step acts on current state (events can be coalesced) and is idempotent: apply a Market's
children and its venue's shared parts; check a Market (leadership, failover, the ledger's
verdict, the effective mode, status); apply and release SafetyModes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from exchange_operator import children, metrics
from exchange_operator.failover import Action, Judgement, LeaderView, failover_reason, judge
from exchange_operator.kube import Kube, KubeUnavailable, LeaseState, PodState
from exchange_operator.model import (
    API_VERSION,
    MarketRef,
    matcher_name,
    most_restrictive,
    selector,
)
from exchange_operator.observe import Ledger, Matchers, MatcherState, Unreachable
from exchange_operator.rollout import next_step
from exchange_operator.settings import OperatorSettings
from exchange_operator.status import Observation, changed, compute
from exchange_operator.venue import Venue
from workloads.gateway.markets import MarketError
from workloads.matcher.lease import Identity
from workloads.matcher.outbox import topic_partitions

log = logging.getLogger(__name__)

PARTITIONS = 3
"""Partitions of a venue's events topic (a market's events share one)."""


@dataclass(frozen=True)
class SafetyRef:
    """A SafetyMode as the index keeps it."""

    name: str
    market: str
    mode: str
    source: str
    deleting: bool


@dataclass
class MarketMemory:
    """What the operator remembers of one Market between checks (its own clock)."""

    lease_seen: tuple[str, float] | None = None
    not_ready_since: float | None = None
    fenced_uids: set[str] = field(default_factory=set)
    epoch: int = 0
    holder: str = ""
    applied: str = ""
    applied_at: float = 0.0
    released_at: float = 0.0

    def lease_unchanged_for(self, lease: LeaseState | None, now: float) -> float:
        version = lease.resource_version if lease else ""
        if self.lease_seen is None or self.lease_seen[0] != version:
            self.lease_seen = (version, now)
        return now - self.lease_seen[1]

    def not_ready_for(self, pod: PodState | None, now: float) -> float:
        if pod is None or pod.ready:
            self.not_ready_since = None
            return 0.0
        if self.not_ready_since is None:
            self.not_ready_since = now
        return now - self.not_ready_since


@dataclass
class Context:
    """The operator's clients and memory (kept in kopf's memo)."""

    settings: OperatorSettings
    kube: Kube
    matchers: Matchers = field(default_factory=Matchers)
    ledger: Ledger = field(default_factory=Ledger)
    markets: dict[tuple[str, str], MarketMemory] = field(default_factory=dict)
    venues: dict[str, str] = field(default_factory=dict)
    approved: set[tuple[str, str]] = field(default_factory=set)
    """SafetyModes (namespace, name) whose release passed: no longer applied."""

    def memory(self, namespace: str, name: str) -> MarketMemory:
        return self.markets.setdefault((namespace, name), MarketMemory())

    async def close(self) -> None:
        await self.matchers.close()
        await self.ledger.close()


def event(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """A Kubernetes Event on the Market (kopf posts it in the background)."""
    kopf.event(cast(kopf.Body, body), type=kind, reason=reason, message=message)


def digest(manifests: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------- children and venue


async def apply_market(ctx: Context, namespace: str, ref: MarketRef) -> None:
    """The Market's own objects. A spec the catalogue refuses is a PermanentError."""
    try:
        children.catalogue_entry(ref, namespace)
    except MarketError as exc:
        raise kopf.PermanentError(f"invalid market spec: {exc}") from None
    config = await ctx.kube.config_map(namespace, ref.spec.connections.config_map)
    venue = Venue(namespace, [ref], ctx.settings, config)
    manifests = children.market_children(
        ref, namespace, ctx.settings, venue.matcher_egress(), config.get("EXCHANGE_S3_ENDPOINT", "")
    )
    memory = ctx.memory(namespace, ref.name)
    signature = digest(manifests)
    if memory.applied == signature:
        return
    try:
        await ctx.kube.create_lease(children.lease(ref, namespace))
        for manifest in manifests:
            await ctx.kube.apply(manifest)
    except (ApiException, KubeUnavailable) as exc:
        metrics.ERRORS.labels("apply").inc()
        raise kopf.TemporaryError(f"applying the matcher's objects: {_why(exc)}", delay=5) from exc
    memory.applied = signature
    metrics.RECONCILES.labels("market").inc()


async def apply_venue(ctx: Context, namespace: str, refs: list[MarketRef]) -> None:
    """The namespace's gateway and ledger for its current Markets (nothing when none is
    left: the garbage collector removes them with the last owner)."""
    if not refs:
        ctx.venues.pop(namespace, None)
        return
    first = sorted(refs, key=lambda r: (r.created, r.name))[0]
    config = await ctx.kube.config_map(namespace, first.spec.connections.config_map)
    try:
        venue = Venue(namespace, refs, ctx.settings, config)
        manifests = venue.manifests()
    except MarketError as exc:
        raise kopf.PermanentError(f"invalid market spec: {exc}") from None
    signature = digest(manifests)
    if ctx.venues.get(namespace) == signature:
        return
    if not venue.kafka:
        raise kopf.TemporaryError(
            f"ConfigMap {first.spec.connections.config_map} has no EXCHANGE_KAFKA_BOOTSTRAP",
            delay=10,
        )
    await ensure_topic(venue.kafka, venue.topic)
    try:
        for manifest in manifests:
            await ctx.kube.apply(manifest)
    except (ApiException, KubeUnavailable) as exc:
        metrics.ERRORS.labels("apply").inc()
        raise kopf.TemporaryError(f"applying the venue: {_why(exc)}", delay=5) from exc
    ctx.venues[namespace] = signature
    metrics.RECONCILES.labels("venue").inc()
    log.info("venue applied", extra={"namespace": namespace, "markets": [r.name for r in refs]})


async def ensure_topic(bootstrap: str, topic: str) -> None:
    """The venue's events topic, created once (the brokers do not auto-create topics)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        if await topic_partitions(bootstrap, topic, within=10):
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()
    except (KafkaError, OSError, TimeoutError) as exc:
        raise kopf.TemporaryError(f"Kafka at {bootstrap}: {exc!r}", delay=10) from exc


# ---------------------------------------------------------------------- checking a Market


async def check_market(
    ctx: Context,
    body: dict[str, Any],
    status: dict[str, Any],
    safety: list[SafetyRef],
    problems: list[str] | None = None,
) -> dict[str, Any] | None:
    """Observe, fail over if needed, turn a breach into a SafetyMode, apply the effective
    mode; the new status, or None when it is not worth a patch. `problems`: what the
    reconcile before it could not do, for the status to say."""
    ref = MarketRef.of(body)
    namespace = body["metadata"]["namespace"]
    memory = ctx.memory(namespace, ref.name)
    spec = ref.spec
    now = time.monotonic()
    name = matcher_name(ref.name)
    problems = list(problems or [])

    lease = await ctx.kube.lease(namespace, name)
    unchanged = memory.lease_unchanged_for(lease, now)
    holder = Identity.parse(lease.holder) if lease else None
    pods = await ctx.kube.pods(namespace, selector("matcher", ref.name))
    holder_pod = next((p for p in pods if holder is not None and p.name == holder.pod), None)
    leading = (
        holder_pod if holder is not None and holder_pod is not None and holder_pod.uid == holder.uid
        else None
    )  # fmt: skip
    pod, matcher, matcher_error = await ask_matcher(ctx, leading, pods)
    view = LeaderView(
        lease,
        unchanged,
        holder_pod,
        memory.not_ready_for(holder_pod if holder_pod and holder else None, now),
        matcher is not None and bool(matcher.refusal),
        frozenset(memory.fenced_uids),
    )
    judgement = judge(view, spec.failover)
    await _act(ctx, body, namespace, name, judgement, holder_pod, lease, memory)
    last_failover = _record_failover(body, lease, memory)
    step = next_step(
        pods,
        spec.matcher_replicas,
        await ctx.kube.update_revision(namespace, name),
        leading.name if leading is not None else "",
        matcher is not None and matcher.leader and matcher.standby_in_sync,
    )
    if step.delete is not None and not judgement.failing_over:
        event(body, "Normal", "RollingUpdate", step.message)
        await ctx.kube.delete_pod(namespace, step.delete, grace=None)

    ledger, ledger_error = await ledger_view(ctx, namespace, ref)
    if ledger is not None and ledger.get("latched"):
        await _latch_to_safetymode(ctx, namespace, ref, ledger, safety, memory)
    active = [s for s in safety if not s.deleting]
    desired = most_restrictive([s.mode for s in active])
    source = next((s.source for s in active if s.mode == desired), "manual")
    if matcher is not None and matcher.leader and pod is not None and matcher.mode != desired:
        try:
            await ctx.matchers.set_mode(pod.ip, spec.symbol, desired, f"operator: {source}")
            metrics.MODES_APPLIED.inc()
            event(body, "Normal", "SafetyModeApplied", f"{matcher.mode} -> {desired}")
        except Unreachable as exc:
            problems.append(f"could not set mode {desired}: {exc}")

    # The venue's gateway is shared: it runs the replicas the oldest Market asks for, and
    # each Market judges it by those, not by its own spec (venue.py).
    gateway_available, gateway_wanted = await ctx.kube.deployment_replicas(namespace, "gateway")
    observation = Observation(
        generation=body["metadata"].get("generation", 0),
        paused=spec.paused,
        matcher_ready=int(leading is not None and leading.ready),
        gateway_available=gateway_available,
        gateway_wanted=max(gateway_wanted, 1),
        ledger_ready=await ctx.kube.statefulset_ready(namespace, "ledger"),
        matcher=matcher,
        matcher_error=matcher_error,
        judgement=judgement,
        epoch=lease.transitions if lease else 0,
        leader=holder.pod if holder else "",
        leader_since=lease.acquire_time if lease and lease.holder else "",
        ledger=ledger,
        ledger_error=ledger_error,
        desired_mode=desired,
        desired_source=source,
        problems=tuple(problems),
        replicas=spec.matcher_replicas,
        rollout=step,
        archive_alert_seconds=spec.archive.lag_alert_seconds if spec.archive else 0,
    )
    new = compute(observation, status)
    if last_failover is not None:
        new["lastFailover"] = last_failover
    if not changed(new, status):
        return None
    metrics.STATUS_PATCHES.inc()
    return new


async def ask_matcher(
    ctx: Context, leading: PodState | None, pods: list[PodState]
) -> tuple[PodState | None, MatcherState | None, str]:
    """The leader's status (the pod holding the Lease); while nobody leads, the instance
    that says why it may not (a refusal), else any that answers. (pod, state, error)."""
    candidates = [leading] if leading is not None else pods
    answered: list[tuple[PodState, MatcherState]] = []
    errors: list[str] = []
    for pod in candidates:
        if not pod.ip:
            errors.append(f"{pod.name} has no address yet")
            continue
        try:
            answered.append((pod, await ctx.matchers.status(pod.ip)))
        except Unreachable as exc:
            errors.append(f"{pod.name}: {exc}")
    answered.sort(key=lambda found: (not found[1].leader, not found[1].refusal))
    if answered:
        return answered[0][0], answered[0][1], ""
    return None, None, "; ".join(errors) or "the matcher has no pod yet"


async def _act(
    ctx: Context,
    body: dict[str, Any],
    namespace: str,
    name: str,
    judgement: Judgement,
    holder_pod: PodState | None,
    lease: LeaseState | None,
    memory: MarketMemory,
) -> None:
    if judgement.action is Action.FENCE and holder_pod is not None:
        event(body, "Warning", "Fencing", judgement.message)
        await ctx.kube.delete_pod(namespace, holder_pod, grace=1)
        memory.fenced_uids.add(holder_pod.uid)
        metrics.FENCES.inc()
    elif (
        judgement.action is Action.RELEASE
        and lease is not None
        and await ctx.kube.release_lease(namespace, name, lease)
    ):
        event(body, "Normal", "LeaseReleased", judgement.message)


def _record_failover(
    body: dict[str, Any], lease: LeaseState | None, memory: MarketMemory
) -> dict[str, Any] | None:
    """When the epoch grew since the last check: the failover, as status and an Event."""
    if lease is None or not lease.holder:
        return None
    known = memory.epoch or int((body.get("status") or {}).get("fencing", {}).get("epoch") or 0)
    previous = memory.holder
    memory.epoch, memory.holder = lease.transitions, lease.holder
    if not known or lease.transitions <= known:
        return None
    before, after = Identity.parse(previous), Identity.parse(lease.holder)
    fenced = before is not None and before.uid in memory.fenced_uids
    reason = failover_reason(before, after, fenced)
    metrics.FAILOVERS.labels(reason).inc()
    leader = after.pod if after else "?"
    event(
        body, "Normal", "FailedOver", f"epoch {known} -> {lease.transitions} ({reason}), {leader}"
    )
    return {"fromEpoch": known, "toEpoch": lease.transitions, "reason": reason} | (
        {"at": lease.acquire_time} if lease.acquire_time else {}
    )


async def ledger_view(
    ctx: Context, namespace: str, ref: MarketRef
) -> tuple[dict[str, Any] | None, str]:
    pod = await ctx.kube.pod(namespace, "ledger-0")
    if pod is None or not pod.ip:
        return None, "the ledger's pod has no address yet"
    token = await admin_token(ctx, namespace, ref)
    try:
        return await ctx.ledger.market(pod.ip, ref.spec.symbol, token), ""
    except Unreachable as exc:
        return None, str(exc)


async def admin_token(ctx: Context, namespace: str, ref: MarketRef) -> str:
    """The venue's admin token for the operator: the entry named `operator` of the Secret's
    `tokens` (LEDGER_ADMIN_TOKENS format), else its first."""
    raw = await ctx.kube.secret_value(namespace, ref.spec.connections.admin_tokens_secret, "tokens")
    pairs = [item.split(":", 1) for item in raw.split(",") if ":" in item]
    named = dict((k.strip(), v.strip()) for k, v in pairs)
    return named.get("operator") or (pairs[0][1].strip() if pairs else "")


async def _latch_to_safetymode(
    ctx: Context,
    namespace: str,
    ref: MarketRef,
    ledger: dict[str, Any],
    safety: list[SafetyRef],
    memory: MarketMemory,
) -> None:
    """The ledger latched the market: a latched SafetyMode with its source, unless one is
    there (or was just released: the verdict read may predate the release)."""
    source = ledger.get("latch_source") or "reconciliation"
    if any(s.source == source for s in safety):
        return
    if time.monotonic() - memory.released_at < 2 * ctx.settings.status_interval:
        return
    name = f"{ref.name}-{source}"
    body = {
        "apiVersion": API_VERSION,
        "kind": "SafetyMode",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"exchange.io/market": ref.name, "exchange.io/source": source},
            "ownerReferences": [ref.owner_reference(controller=False)],
        },
        "spec": {
            "market": ref.name,
            "mode": ledger.get("recommended_mode") or "CANCEL_ONLY",
            "source": source,
            "latched": True,
            "reason": ("; ".join(ledger.get("reasons") or []) or "latched by the ledger")[:1024],
        },
    }
    if await ctx.kube.create_safetymode(namespace, body):
        metrics.BREACHES.inc()
        log.warning("breach latched as a SafetyMode", extra={"namespace": namespace, "name": name})


# ---------------------------------------------------------------------- SafetyModes


async def apply_safety(
    ctx: Context, namespace: str, ref: MarketRef, safety: list[SafetyRef]
) -> int:
    """Set the market's effective mode (the most restrictive SafetyMode) on its matcher;
    the epoch it was applied under. TemporaryError while the matcher cannot be reached."""
    name = matcher_name(ref.name)
    lease = await ctx.kube.lease(namespace, name)
    holder = Identity.parse(lease.holder) if lease else None
    pod = await ctx.kube.pod(namespace, holder.pod) if holder is not None else None
    if holder is None or pod is None or pod.uid != holder.uid or not pod.ip:
        raise kopf.TemporaryError("the matcher has no leader right now", delay=3)
    desired = most_restrictive([s.mode for s in safety if not s.deleting])
    try:
        state = await ctx.matchers.status(pod.ip)
        if not state.leader:
            raise kopf.TemporaryError("the matcher does not lead right now", delay=3)
        if state.mode != desired:
            await ctx.matchers.set_mode(pod.ip, ref.spec.symbol, desired, "operator: SafetyMode")
            metrics.MODES_APPLIED.inc()
    except Unreachable as exc:
        raise kopf.TemporaryError(f"the matcher: {exc}", delay=3) from exc
    return state.epoch


async def release_blockers(
    ctx: Context, namespace: str, ref: MarketRef, mode: SafetyRef
) -> list[str]:
    """Why a SafetyMode may not be released now ([]: it may): reconciliation must be
    healthy and the invariants pass; a latch of the ledger's is released in the ledger."""
    pod = await ctx.kube.pod(namespace, "ledger-0")
    if pod is None or not pod.ip:
        return ["the ledger is not running"]
    token = await admin_token(ctx, namespace, ref)
    try:
        market = await ctx.ledger.market(pod.ip, ref.spec.symbol, token)
        if market.get("breach"):
            return [f"reconciliation breach: {r}" for r in market.get("reasons") or []]
        failures = await ctx.ledger.invariant_failures(pod.ip, token)
        if failures:
            return [f"invariant failed: {name}" for name in failures]
        if mode.source != "manual" and market.get("latched"):
            refusals = await ctx.ledger.release(pod.ip, ref.spec.symbol, token)
            if refusals and not any("not latched" in r for r in refusals):
                return [f"the ledger refuses the release: {r}" for r in refusals]
            ctx.memory(namespace, ref.name).released_at = time.monotonic()
    except Unreachable as exc:
        return [str(exc)]
    return []


def _why(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}: {(exc.body or '')[:300]}"
    return str(exc)
