"""Reconciliation decisions, as pure functions over frozen data (the reconciler does the I/O).

What is compared: the matcher's committed seq (its last durable seq, from GetStatus or
pushed to `/v1/internal/reconciliation/engine-seq`) against the ledger's applied seq.

A market is in breach when
- its lag (committed - applied) exceeds `LEDGER_RECONCILIATION_LAG_THRESHOLD`, or
- the matcher's seq was last observed more than `LEDGER_RECONCILIATION_STATE_STALE_MS`
  ago (or never, once that long has passed since the ledger started), or
- there is a mismatch: a seq gap stalled settlement, the ledger is ahead of the matcher,
  or the ledger applied an epoch the matcher has not reached.

On a breach the recommended mode is `LEDGER_RECONCILIATION_SAFETY_MODE` and, with the latch
enabled, the market stays latched after the breach clears, until an admin releases it. The
release is allowed only when the lag is 0, nothing is stale or mismatched, and the
invariants pass at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum


class Action(Enum):
    NONE = "none"
    ENGAGE = "engage"  # set the recommended safety mode on the matcher
    RESTORE = "restore"  # set NORMAL again (only a mode the ledger itself set)


@dataclass(frozen=True)
class Observation:
    market: str
    applied_seq: int
    applied_epoch: int
    stalled: bool
    stall_reason: str | None
    engine_seq: int | None
    engine_epoch: int | None
    engine_seen_ms: int | None
    now_ms: int
    started_ms: int


@dataclass(frozen=True)
class Evaluation:
    market: str
    applied_seq: int
    engine_seq: int | None
    lag: int
    stale: bool
    mismatch: bool
    breach: bool
    reasons: tuple[str, ...]
    mismatch_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Safety:
    """Per market, persisted: the latch and whether the ledger set a safety mode."""

    latched: bool = False
    latch_source: str | None = None  # "reconciliation" or "invariant"
    safety_applied: bool = False
    applied_mode: str | None = None
    breach: bool = False


def evaluate(obs: Observation, lag_threshold: int, stale_ms: int) -> Evaluation:
    reasons: list[str] = []
    lag = max((obs.engine_seq or 0) - obs.applied_seq, 0) if obs.engine_seq is not None else 0
    if lag > lag_threshold:
        reasons.append(f"lag {lag} > threshold {lag_threshold}")
    seen = obs.engine_seen_ms if obs.engine_seen_ms is not None else obs.started_ms
    stale = obs.now_ms - seen > stale_ms
    if stale:
        what = "never observed" if obs.engine_seen_ms is None else "last observed"
        reasons.append(f"matcher seq {what} {obs.now_ms - seen} ms ago > {stale_ms} ms")
    mismatches: list[str] = []
    if obs.stalled:
        mismatches.append(f"settlement stalled: {obs.stall_reason}")
    if obs.engine_seq is not None and obs.applied_seq > obs.engine_seq:
        mismatches.append(f"ledger applied seq {obs.applied_seq} > matcher seq {obs.engine_seq}")
    if obs.engine_epoch is not None and obs.applied_epoch > obs.engine_epoch:
        mismatches.append(f"ledger epoch {obs.applied_epoch} > matcher epoch {obs.engine_epoch}")
    reasons.extend(mismatches)
    return Evaluation(
        obs.market,
        obs.applied_seq,
        obs.engine_seq,
        lag,
        stale,
        bool(mismatches),
        bool(reasons),
        tuple(reasons),
        tuple(mismatches),
    )


def decide(
    prev: Safety,
    ev: Evaluation,
    *,
    latch_enabled: bool,
    auto_switch: bool,
    can_switch: bool,
    safety_mode: str,
    engine_mode: str | None,
) -> tuple[Safety, Action]:
    """The next safety state and what to ask of the matcher.

    ENGAGE while the market needs safety and the matcher trades normally (or its mode is
    unknown and the ledger has not set one yet); a stricter mode someone else chose is left
    alone. RESTORE only the mode the ledger set, once nothing holds the market.
    """
    state = replace(prev, breach=ev.breach)
    if ev.breach and latch_enabled and not prev.latched:
        state = replace(state, latched=True, latch_source="reconciliation")
    needs_safety = ev.breach or state.latched
    if not (auto_switch and can_switch):
        return state, Action.NONE
    if needs_safety:
        unknown_and_unset = engine_mode is None and not prev.safety_applied
        if engine_mode == "NORMAL" or unknown_and_unset:
            return replace(state, applied_mode=safety_mode), Action.ENGAGE
        return state, Action.NONE
    if prev.safety_applied and engine_mode in (prev.applied_mode, None):
        return state, Action.RESTORE
    return state, Action.NONE


def trip(prev: Safety) -> Safety:
    """An invariant failed: latch the market (the guard sets its own mode)."""
    if prev.latched:
        return prev
    return replace(prev, latched=True, latch_source="invariant")


def recommended_mode(state: Safety, safety_mode: str) -> str:
    if state.latched or state.breach:
        return state.applied_mode or safety_mode
    return "NORMAL"


def release_refusals(ev: Evaluation, invariant_failures: list[str], latched: bool) -> list[str]:
    """Why a latch release is refused now (empty: allowed)."""
    refusals: list[str] = []
    if not latched:
        refusals.append("not latched")
    if ev.engine_seq is None:
        refusals.append("matcher seq unknown")
    if ev.lag != 0:
        refusals.append(f"lag is {ev.lag}, must be 0")
    if ev.stale:
        refusals.append("matcher seq is stale")
    refusals.extend(f"mismatch: {reason}" for reason in ev.mismatch_reasons)
    refusals.extend(f"invariant failed: {name}" for name in invariant_failures)
    return refusals
