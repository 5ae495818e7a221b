"""The kopf handlers: thin; the work is in `reconcile.py`.

Markets: on create, resume and spec change, apply the Market's children and its venue; a
timer checks each Market (leadership, failover, breach, effective mode) and patches its
status when something changed. No finalizer: children and shared parts go with owner
references; on deletion the venue is applied again without the Market (best effort, the
next check of another Market does it too).

SafetyModes: on create, resume and change, set the market's effective mode on its matcher;
their finalizer (`exchange.io/safetymode-release`) holds a deletion until reconciliation is
healthy and the invariants pass, and releases the ledger's latch for a latched breach.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import kopf

from exchange_operator import reconcile
from exchange_operator.kube import Kube, api_client
from exchange_operator.model import GROUP, MARKETS, SAFETYMODES, VERSION, MarketRef
from exchange_operator.reconcile import Context, SafetyRef
from exchange_operator.settings import OperatorSettings
from exchange_operator.status import condition, now

CHECK_INTERVAL = float(os.environ.get("OPERATOR_STATUS_INTERVAL_S", "5") or 5)
REAPPLY_S = 60.0
"""Children are applied again at least this often (a deleted child comes back)."""

Index = Any  # kopf.Index[key, value]: a mapping of keys to stores of values


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    own = OperatorSettings.from_env()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/safetymode-release"
    settings.watching.server_timeout = 300
    settings.peering.lifetime = 20  # a standby replica takes over within 20 s
    kube = Kube(await asyncio.to_thread(api_client))
    await kube.wait_for_resources((MARKETS, SAFETYMODES), within=300)
    memo.ctx = Context(own, kube)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.ctx.close()


@kopf.index(GROUP, VERSION, MARKETS)
def markets_idx(
    namespace: str | None, body: kopf.Body, meta: kopf.Meta, **_: Any
) -> dict[str, Any]:
    if meta.get("deletionTimestamp"):
        return {}  # a Market on its way out leaves its venue
    return {namespace or "": MarketRef.of(dict(body))}


@kopf.index(GROUP, VERSION, SAFETYMODES)
def safety_idx(
    namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta, **_: Any
) -> dict[tuple[str, str], SafetyRef]:
    market = str(spec.get("market", ""))
    ref = SafetyRef(
        name,
        market,
        str(spec.get("mode", "CANCEL_ONLY")),
        str(spec.get("source", "manual")),
        bool(meta.get("deletionTimestamp")),
    )
    return {(namespace or "", market): ref}


def markets_of(index: Index, namespace: str) -> list[MarketRef]:
    return list(index.get(namespace, []))


def market_named(index: Index, namespace: str, name: str) -> MarketRef | None:
    return next((r for r in markets_of(index, namespace) if r.name == name), None)


def safety_of(ctx: Context, index: Index, namespace: str, market: str) -> list[SafetyRef]:
    """The market's SafetyModes, but those whose release was approved."""
    return [
        s for s in index.get((namespace, market), []) if (namespace, s.name) not in ctx.approved
    ]


# ---------------------------------------------------------------------- Markets


@kopf.on.resume(GROUP, VERSION, MARKETS)
@kopf.on.create(GROUP, VERSION, MARKETS)
@kopf.on.update(GROUP, VERSION, MARKETS, field="spec")
async def market_spec(
    body: kopf.Body, namespace: str | None, memo: kopf.Memo, markets_idx: Index, **_: Any
) -> None:
    ref = MarketRef.of(dict(body))
    if ref.spec.paused:
        return
    await reconcile.apply_market(memo.ctx, namespace or "", ref)
    refs = [r for r in markets_of(markets_idx, namespace or "") if r.name != ref.name] + [ref]
    await reconcile.apply_venue(memo.ctx, namespace or "", refs)


@kopf.on.delete(GROUP, VERSION, MARKETS, optional=True)
async def market_deleted(
    namespace: str | None, name: str, memo: kopf.Memo, markets_idx: Index, **_: Any
) -> None:
    ctx: Context = memo.ctx
    ctx.markets.pop((namespace or "", name), None)
    ctx.venues.pop(namespace or "", None)
    remaining = [r for r in markets_of(markets_idx, namespace or "") if r.name != name]
    await reconcile.apply_venue(ctx, namespace or "", remaining)


@kopf.timer(
    GROUP, VERSION, MARKETS, interval=CHECK_INTERVAL, initial_delay=1, backoff=CHECK_INTERVAL
)
async def market_check(
    body: kopf.Body,
    namespace: str | None,
    memo: kopf.Memo,
    markets_idx: Index,
    safety_idx: Index,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    ctx: Context = memo.ctx
    raw = dict(body)
    ref = MarketRef.of(raw)
    status = dict(raw.get("status") or {})
    memory = ctx.memory(namespace or "", ref.name)
    if ref.spec.paused:
        conditions = list(status.get("conditions") or [])
        paused = condition(
            conditions, "Ready", False, "Paused", "spec.paused: not reconciled",
            raw["metadata"].get("generation", 0),
        )  # fmt: skip
        if status.get("phase") != "Paused":
            others = [c for c in conditions if c.get("type") != "Ready"]
            patch.status.update({"phase": "Paused", "conditions": [paused, *others]})
        return
    loop_time = asyncio.get_running_loop().time()
    if loop_time - memory.applied_at > REAPPLY_S:
        memory.applied = ""
        ctx.venues.pop(namespace or "", None)
        memory.applied_at = loop_time
    problems: list[str] = []
    try:
        await reconcile.apply_market(ctx, namespace or "", ref)
        refs = markets_of(markets_idx, namespace or "") or [ref]
        await reconcile.apply_venue(ctx, namespace or "", refs)
    except (kopf.TemporaryError, kopf.PermanentError) as exc:
        problems.append(str(exc))  # shown in the status (Degraded: ReconcileError)
    safety = safety_of(ctx, safety_idx, namespace or "", ref.name)
    new = await reconcile.check_market(ctx, raw, status, safety, problems)
    if new is not None:
        patch.status.update(new)


# ---------------------------------------------------------------------- SafetyModes


@kopf.on.resume(GROUP, VERSION, SAFETYMODES)
@kopf.on.create(GROUP, VERSION, SAFETYMODES)
@kopf.on.update(GROUP, VERSION, SAFETYMODES, field="spec")
async def safetymode_apply(
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    namespace: str | None,
    memo: kopf.Memo,
    markets_idx: Index,
    safety_idx: Index,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    ctx: Context = memo.ctx
    market = str(spec.get("market", ""))
    generation = int(meta.get("generation") or 0)
    previous = list(status.get("conditions") or [])
    ref = market_named(markets_idx, namespace or "", market)
    if ref is None:
        patch.status.update(
            {
                "applied": False,
                "conditions": [
                    condition(previous, "Applied", False, "MarketNotFound",
                              f"no Market {market} in {namespace}", generation)
                ],
            }
        )  # fmt: skip
        raise kopf.TemporaryError(f"no Market {market} in {namespace} (yet)", delay=15)
    modes = safety_of(ctx, safety_idx, namespace or "", market)
    epoch = await reconcile.apply_safety(ctx, namespace or "", ref, modes)
    patch.status.update(
        {
            "applied": True,
            "appliedEpoch": epoch,
            "appliedAt": now(),
            "observedGeneration": generation,
            "conditions": [
                condition(previous, "Applied", True, "AppliedToMatcher",
                          f"the market's effective mode is set under epoch {epoch}", generation)
            ],
        }
    )  # fmt: skip


@kopf.on.delete(GROUP, VERSION, SAFETYMODES)
async def safetymode_release(
    spec: kopf.Spec,
    status: kopf.Status,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    markets_idx: Index,
    safety_idx: Index,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    ctx: Context = memo.ctx
    market = str(spec.get("market", ""))
    ref = market_named(markets_idx, namespace or "", market)
    if ref is None:
        return  # its Market is gone: nothing left to release
    mine = SafetyRef(name, market, str(spec.get("mode")), str(spec.get("source", "manual")), True)
    blockers = await reconcile.release_blockers(ctx, namespace or "", ref, mine)
    if blockers:
        patch.status.update({"releasable": False, "blockedBy": blockers})
        raise kopf.TemporaryError("not releasable: " + "; ".join(blockers), delay=10)
    ctx.approved.add((namespace or "", name))
    await reconcile.apply_safety(
        ctx, namespace or "", ref, safety_of(ctx, safety_idx, namespace or "", market)
    )


@kopf.timer(GROUP, VERSION, SAFETYMODES, interval=10, initial_delay=5, backoff=10)
async def safetymode_check(
    spec: kopf.Spec,
    status: kopf.Status,
    namespace: str | None,
    memo: kopf.Memo,
    markets_idx: Index,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    """Whether a release would be accepted now (breach cleared), for `kubectl get sm`."""
    ctx: Context = memo.ctx
    ref = market_named(markets_idx, namespace or "", str(spec.get("market", "")))
    if ref is None:
        return
    ledger, _error = await reconcile.ledger_view(ctx, namespace or "", ref)
    releasable = ledger is not None and not ledger.get("breach")
    if status.get("releasable") != releasable:
        blocked = list((ledger or {}).get("reasons") or ["the ledger cannot be asked"])
        patch.status.update(
            {"releasable": releasable, "blockedBy": None if releasable else blocked}
        )
