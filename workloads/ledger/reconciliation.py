"""Reconciliation decisions, as pure functions over frozen data (the reconciler does the I/O).

What is compared: the matcher's committed seq (its last durable seq, from GetStatus or
pushed to `/v1/internal/reconciliation/engine-seq`) against the ledger's applied seq. Two
samples compare only when the matcher's was taken after the ledger's applied seq was read
(`engine_fresh`): every seq the ledger applied was published, and the matcher publishes
only what is durable, so then applied <= committed must hold. An older sample (the poll
failed, the matcher restarts) says nothing about the applied seq read since.

Breach reasons (`Evaluation.codes`), and when each one breaches:

- `seq_regression`, at once: the matcher reports a seq below one its market already
  published (in the same sample, in an earlier one, or applied by the ledger before the
  sample). Its log went backwards: a lost or truncated WAL, a wrong volume, an old snapshot.
- `epoch_regression`, at once: the ledger applied an epoch that the matcher, sampled after
  it, has not reached.
- `settlement_stalled`, at once: a seq gap parked the market's settlement.
- `lag`, after `lag_grace_ms`: the matcher has been more than `lag_threshold` commands ahead
  of what the ledger applied for longer than the grace.
- `stale`, after `stale_ms`: the matcher's seq has not been observed for that long (it
  cannot be reached, or its pushes stopped).

A matcher that cannot be reached is "unknown since" its last sample, never a mismatch:
its old sample stays the lag's reference and ages towards `stale`.

How long the ledger has been behind is measured on the matcher's own samples (`Backlog`):
the time of the first sample whose seq is more than the threshold past what the ledger has
applied now. Under a steady load the ledger trails by a batch or two, many commands but
well under a second, and the seq count alone would breach; a pause of settlement (a ledger
restart, a broker or database freeze) ages the oldest unsettled sample, and it breaches
only once that outlasts the grace.

On a breach the recommended mode is `LEDGER_RECONCILIATION_SAFETY_MODE` and, with the latch
enabled, the market stays latched after the breach clears, until an admin releases it. The
release is allowed only when the lag is 0, nothing is stale or mismatched, and the
invariants pass at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

SEQ_REGRESSION = "seq_regression"
EPOCH_REGRESSION = "epoch_regression"
SETTLEMENT_STALLED = "settlement_stalled"
LAG = "lag"
STALE = "stale"
IMMEDIATE = frozenset({SEQ_REGRESSION, EPOCH_REGRESSION, SETTLEMENT_STALLED})
"""Reasons that are real inconsistency, never a pause: they breach on first sight."""


class Action(Enum):
    NONE = "none"
    ENGAGE = "engage"  # set the recommended safety mode on the matcher
    RESTORE = "restore"  # set NORMAL again (only a mode the ledger itself set)


@dataclass(frozen=True)
class Limits:
    lag_threshold: int
    """Commands the ledger may trail the matcher by without counting as behind."""
    lag_grace_ms: int
    """How long it may stay behind by more than that before it is a breach."""
    stale_ms: int
    """How long the matcher's seq may go unobserved before it is a breach."""


@dataclass(frozen=True)
class Backlog:
    """The matcher's seq samples (seq, clock ms), oldest first, that the ledger has not yet
    settled to within the threshold. Bounded: an idle matcher adds nothing, and a backlog
    that outlives `CAP` samples keeps its oldest and every second one after it."""

    samples: tuple[tuple[int, int], ...] = ()
    CAP = 1024

    def add(self, seq: int, at_ms: int) -> Backlog:
        if self.samples and seq <= self.samples[-1][0]:
            return self
        samples = self.samples
        if len(samples) >= self.CAP:
            samples = samples[:1] + samples[2::2]
        return Backlog((*samples, (seq, at_ms)))

    def settle(self, applied_seq: int, threshold: int) -> Backlog:
        """Drop the samples the ledger has come within `threshold` of."""
        samples = self.samples
        keep = 0
        while keep < len(samples) and samples[keep][0] <= applied_seq + threshold:
            keep += 1
        return self if keep == 0 else Backlog(samples[keep:])

    @property
    def since_ms(self) -> int | None:
        """Since when the ledger has been behind by more than the threshold (None: it is not)."""
        return self.samples[0][1] if self.samples else None


@dataclass(frozen=True)
class Observation:
    market: str
    applied_seq: int
    applied_epoch: int
    stalled: bool
    stall_reason: str | None
    engine_seq: int | None
    """The matcher's committed seq in its last sample (None: never sampled)."""
    engine_epoch: int | None
    engine_seen_ms: int | None
    now_ms: int
    started_ms: int
    engine_fresh: bool = False
    """The last sample was taken after `applied_seq` was read: the two compare."""
    published_seq: int = 0
    """The highest seq the matcher's market is known to have published, from every sample
    so far (the matcher reports it; one that refuses to serve reports the topic's)."""
    behind_since_ms: int | None = None
    """`Backlog.since_ms` after settling it to `applied_seq`."""


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
    codes: tuple[str, ...] = ()
    behind_ms: int = 0
    """How long the ledger has been more than the threshold behind (0: it is not)."""


def evaluate(obs: Observation, limits: Limits) -> Evaluation:
    found: list[tuple[str, str]] = []  # (code, reason)
    engine_seq = obs.engine_seq
    lag = max(engine_seq - obs.applied_seq, 0) if engine_seq is not None else 0
    behind_ms = obs.now_ms - obs.behind_since_ms if obs.behind_since_ms is not None else 0
    if lag > limits.lag_threshold and behind_ms > limits.lag_grace_ms:
        found.append(
            (
                LAG,
                f"lag {lag} > threshold {limits.lag_threshold} for {behind_ms / 1000:.1f} s"
                f" > grace {limits.lag_grace_ms / 1000:g} s",
            )
        )
    seen = obs.engine_seen_ms if obs.engine_seen_ms is not None else obs.started_ms
    stale = obs.now_ms - seen > limits.stale_ms
    if stale:
        what = "never observed" if obs.engine_seen_ms is None else "last observed"
        found.append(
            (STALE, f"matcher seq {what} {obs.now_ms - seen} ms ago > {limits.stale_ms} ms")
        )
    if obs.stalled:
        found.append((SETTLEMENT_STALLED, f"settlement stalled: {obs.stall_reason}"))
    if engine_seq is not None:
        if obs.engine_fresh and obs.applied_seq > engine_seq:
            found.append(
                (
                    SEQ_REGRESSION,
                    f"ledger applied seq {obs.applied_seq} > matcher seq {engine_seq}"
                    " (sampled after it)",
                )
            )
        elif obs.published_seq > engine_seq:
            found.append(
                (
                    SEQ_REGRESSION,
                    f"matcher seq {engine_seq} < seq {obs.published_seq} its market already"
                    " published",
                )
            )
    if obs.engine_fresh and obs.engine_epoch is not None and obs.applied_epoch > obs.engine_epoch:
        found.append(
            (
                EPOCH_REGRESSION,
                f"ledger epoch {obs.applied_epoch} > matcher epoch {obs.engine_epoch}",
            )
        )
    mismatches = tuple(reason for code, reason in found if code in IMMEDIATE)
    return Evaluation(
        obs.market,
        obs.applied_seq,
        engine_seq,
        lag,
        stale,
        bool(mismatches),
        bool(found),
        tuple(reason for _, reason in found),
        mismatches,
        tuple(code for code, _ in found),
        behind_ms,
    )


@dataclass(frozen=True)
class Safety:
    """Per market, persisted: the latch and whether the ledger set a safety mode."""

    latched: bool = False
    latch_source: str | None = None  # "reconciliation" or "invariant"
    safety_applied: bool = False
    applied_mode: str | None = None
    breach: bool = False


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
