"""The reconciliation loop: observe, evaluate, act, record (decisions in `reconciliation`).

Every `LEDGER_RECONCILIATION_INTERVAL_MS`, per configured market: read the applied cursor,
then ask the matcher for its status (when it has a target; in this order, so that the two
samples compare), evaluate, decide, switch the matcher's mode when the decision says so
(local mode with auto-switch), and write the state and one history row. The state (latch,
whether the ledger set a mode) survives restarts.
In cluster mode the operator reads the status endpoint and turns a breach into a SafetyMode.

The invariant guard shares the latch: a failed invariant latches the markets it concerns
and, with `LEDGER_GUARD_AUTO_SWITCH`, sets `LEDGER_GUARD_SAFETY_MODE` on their matchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import grpc

from contracts.v1 import matcher_pb2
from workloads.ledger import metrics
from workloads.ledger import reconciliation as rec
from workloads.ledger.invariants import InvariantReport, Invariants
from workloads.ledger.matchers import MatcherClients, NoMatcher, mode_name
from workloads.ledger.settings import LedgerSettings

log = logging.getLogger(__name__)


def now_ms() -> int:
    """Wall-clock ms, for what people read (status, history)."""
    return int(time.time() * 1000)


def clock_ms() -> int:
    """Monotonic ms, for every duration the decisions judge (staleness, grace)."""
    return int(time.monotonic() * 1000)


@dataclass
class Engine:
    """What the ledger last learnt of a matcher."""

    seq: int | None = None
    epoch: int | None = None
    mode: str | None = None
    seen_ms: int | None = None  # wall clock, shown
    seen_clock_ms: int | None = None  # monotonic, judged
    leader: bool | None = None
    published: int = 0  # the highest seq its market is known to have published
    refusal: str | None = None  # why the matcher refuses to serve, as it says
    unreachable_since_ms: int | None = None  # wall clock of the first failed poll since a success
    error: str | None = None


@dataclass
class View:
    safety: rec.Safety = field(default_factory=rec.Safety)
    engine: Engine = field(default_factory=Engine)
    backlog: rec.Backlog = field(default_factory=rec.Backlog)
    evaluation: rec.Evaluation | None = None
    evaluated_at: float | None = None
    last_action: str | None = None


class LatchRefused(Exception):
    def __init__(self, refusals: list[str]) -> None:
        super().__init__("; ".join(refusals))
        self.refusals = refusals


@dataclass
class Reconciler:
    settings: LedgerSettings
    pool: asyncpg.Pool
    matchers: MatcherClients
    invariants: Invariants
    views: dict[str, View] = field(default_factory=dict, init=False)
    started_ms: int = field(default_factory=clock_ms, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self.views = {m.symbol: View() for m in self.settings.markets}

    async def load(self) -> None:
        """Restore latches and the last observations from the database."""
        rows = await self.pool.fetch("SELECT * FROM reconciliation_state")
        for r in rows:
            view = self.views.get(r["market"])
            if view is None:
                continue
            view.safety = rec.Safety(
                r["latched"], r["latch_source"], r["safety_applied"], r["applied_mode"], r["breach"]
            )

    # ------------------------------------------------------------------ observing

    async def observe(self, symbol: str) -> None:
        if not self.matchers.has(symbol):
            return
        engine = self.views[symbol].engine
        try:
            status = await self.matchers.status(symbol)
        except (grpc.aio.AioRpcError, NoMatcher) as exc:
            # Unknown since then: the last sample stays as it was and ages towards stale.
            if engine.unreachable_since_ms is None:
                engine.unreachable_since_ms = now_ms()
                log.warning("matcher unreachable", extra={"market": symbol, "why": repr(exc)})
            engine.error = repr(exc)
            return
        engine.unreachable_since_ms = None
        engine.error = None
        self._seen(symbol, status)

    def _seen(self, symbol: str, status: matcher_pb2.MatcherStatus) -> None:
        view = self.views[symbol]
        engine = view.engine
        engine.mode = mode_name(status.mode)
        engine.leader = status.leader
        engine.refusal = status.refusal or None
        if not (status.leader or status.refusal):
            return  # a standby's seq says nothing about what was committed
        # One that refuses to serve is sampled too: its seq and the published seq it found
        # are what shows a log that went backwards.
        self._sample(view, status.last_durable_seq or status.seq, status.epoch)
        engine.published = max(engine.published, status.last_published_seq)

    def _sample(self, view: View, seq: int, epoch: int | None) -> None:
        engine = view.engine
        engine.seq = seq
        engine.epoch = epoch if epoch is not None else engine.epoch
        engine.seen_ms = now_ms()
        engine.seen_clock_ms = clock_ms()
        view.backlog = view.backlog.add(seq, engine.seen_clock_ms)

    def push(self, symbol: str, seq: int, epoch: int | None) -> bool:
        """The engine seq pushed over HTTP (markets without a matcher target)."""
        view = self.views.get(symbol)
        if view is None:
            return False
        self._sample(view, seq, epoch)
        return True

    async def _cursors(self) -> tuple[dict[str, Any], int]:
        """The applied cursors, and the clock when they were read (before any sample that
        is to compare with them)."""
        read_at = clock_ms()
        rows = await self.pool.fetch(
            "SELECT market, applied_seq, max_epoch, stalled, stall_reason FROM market_state"
            " WHERE market = ANY($1::text[])",
            list(self.views),
        )
        return {r["market"]: r for r in rows}, read_at

    async def _sample_after_cursors(self, symbols: list[str]) -> tuple[dict[str, Any], int]:
        cursors = await self._cursors()
        await asyncio.gather(*(self.observe(symbol) for symbol in symbols))
        return cursors

    def _evaluate(self, symbol: str, cursor: Any, read_at: int) -> rec.Evaluation:
        view = self.views[symbol]
        engine = view.engine
        s = self.settings.reconciliation
        applied = cursor["applied_seq"] if cursor else 0
        view.backlog = view.backlog.settle(applied, s.lag_threshold)
        seen = engine.seen_clock_ms
        obs = rec.Observation(
            symbol,
            applied,
            cursor["max_epoch"] if cursor else 0,
            bool(cursor["stalled"]) if cursor else False,
            cursor["stall_reason"] if cursor else None,
            engine.seq,
            engine.epoch,
            seen,
            clock_ms(),
            self.started_ms,
            engine_fresh=seen is not None and seen >= read_at,
            published_seq=engine.published,
            behind_since_ms=view.backlog.since_ms,
        )
        return rec.evaluate(obs, s.limits)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        interval = self.settings.reconciliation.interval_ms / 1000
        while True:
            try:
                await self.evaluate_all()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("reconciliation failed", extra={"why": repr(exc)})
            await asyncio.sleep(interval)

    async def evaluate_all(self) -> list[rec.Evaluation]:
        async with self._lock:
            cursors, read_at = await self._sample_after_cursors(list(self.views))
            evaluations = []
            for symbol, view in self.views.items():
                ev = self._evaluate(symbol, cursors.get(symbol), read_at)
                if ev.breach and not view.safety.breach:
                    metrics.RECONCILIATION_ALERTS.inc()
                    log.warning(
                        "reconciliation breach",
                        extra={"market": symbol, "reasons": list(ev.reasons)},
                    )
                if ev.mismatch:
                    metrics.RECONCILIATION_MISMATCHES.inc()
                if ev.stale:
                    metrics.RECONCILIATION_STALE.inc()
                await self._step(symbol, view, ev)
                evaluations.append(ev)
            self._gauges()
            await self._persist(evaluations)
            return evaluations

    async def _step(self, symbol: str, view: View, ev: rec.Evaluation) -> None:
        s = self.settings.reconciliation
        mode = self._mode_for(view.safety)
        state, action = rec.decide(
            view.safety,
            ev,
            latch_enabled=s.latch_enabled,
            auto_switch=s.auto_switch,
            can_switch=self.matchers.has(symbol),
            safety_mode=mode,
            engine_mode=view.engine.mode,
        )
        view.evaluation = ev
        view.evaluated_at = time.time()
        view.last_action = None
        view.safety = await self._act(symbol, view, state, action, ", ".join(ev.reasons))

    def _mode_for(self, safety: rec.Safety) -> str:
        if safety.latch_source == "invariant":
            return self.settings.guard.safety_mode
        return self.settings.reconciliation.safety_mode

    async def _act(
        self, symbol: str, view: View, state: rec.Safety, action: rec.Action, why: str
    ) -> rec.Safety:
        guard = state.latch_source == "invariant"
        if action is rec.Action.ENGAGE:
            mode = state.applied_mode or self._mode_for(state)
            source = "guard" if guard else "reconciliation"
            ok = await self._set_mode(symbol, mode, f"ledger {source}: {why}")
            if ok:
                triggers = (
                    metrics.INVARIANT_SAFETY_TRIGGERS
                    if guard
                    else metrics.RECONCILIATION_SAFETY_TRIGGERS
                )
                triggers.inc()
                view.engine.mode = mode
                view.last_action = f"engaged {mode}"
                return replace(state, safety_applied=True, applied_mode=mode)
            failures = (
                metrics.INVARIANT_SAFETY_FAILURES
                if guard
                else metrics.RECONCILIATION_SAFETY_FAILURES
            )
            failures.inc()
            view.last_action = f"engage {mode} failed"
            return replace(state, applied_mode=view.safety.applied_mode)
        if action is rec.Action.RESTORE:
            if await self._set_mode(symbol, "NORMAL", "ledger: reconciliation healthy"):
                view.engine.mode = "NORMAL"
                view.last_action = "restored NORMAL"
                return replace(state, safety_applied=False, applied_mode=None)
            view.last_action = "restore NORMAL failed"
        return state

    async def _set_mode(self, symbol: str, mode: str, reason: str) -> bool:
        try:
            reply = await self.matchers.set_mode(symbol, mode, reason[:200])
        except (grpc.aio.AioRpcError, NoMatcher) as exc:
            log.error(
                "could not set the matcher's mode",
                extra={"market": symbol, "mode": mode, "why": repr(exc)},
            )
            return False
        ok = reply.status == matcher_pb2.COMMAND_STATUS_ACCEPTED
        log.warning(
            "matcher mode set" if ok else "matcher refused the mode",
            extra={"market": symbol, "mode": mode, "reason": reason},
        )
        return ok

    def _gauges(self) -> None:
        lags = [v.evaluation.lag for v in self.views.values() if v.evaluation is not None]
        for symbol, view in self.views.items():
            if view.evaluation is not None:
                metrics.RECONCILIATION_LAG.labels(symbol).set(view.evaluation.lag)
                metrics.RECONCILIATION_BEHIND_SECONDS.labels(symbol).set(
                    view.evaluation.behind_ms / 1000
                )
            for source in ("reconciliation", "invariant"):
                latched = view.safety.latched and view.safety.latch_source == source
                metrics.RECONCILIATION_LATCHED.labels(symbol, source).set(int(latched))
        metrics.RECONCILIATION_LAG_GRACE.set(self.settings.reconciliation.lag_grace_ms / 1000)
        metrics.RECONCILIATION_LAG_MAX.set(max(lags, default=0))
        metrics.RECONCILIATION_BREACH_ACTIVE.set(
            sum(1 for v in self.views.values() if v.evaluation is not None and v.evaluation.breach)
        )

    async def _persist(self, evaluations: list[rec.Evaluation]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for ev in evaluations:
                view = self.views[ev.market]
                await _save_state(conn, ev.market, view)
                await conn.execute(
                    """INSERT INTO reconciliation_history (market, engine_seq, applied_seq, lag,
                           stale, mismatch, breach, latched, reasons, action)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
                    ev.market,
                    ev.engine_seq,
                    ev.applied_seq,
                    ev.lag,
                    ev.stale,
                    ev.mismatch,
                    ev.breach,
                    view.safety.latched,
                    list(ev.reasons),
                    view.last_action,
                )

    # ------------------------------------------------------------------ latch and guard

    async def release(self, symbol: str, admin: str) -> dict[str, Any]:
        """Release a latch if reconciliation is healthy and the invariants pass right now."""
        async with self._lock:
            view = self.views[symbol]
            cursors, read_at = await self._sample_after_cursors([symbol])
            ev = self._evaluate(symbol, cursors.get(symbol), read_at)
            report = await self.invariants.check()
            allow = self.settings.reconciliation.latch_allow_negative
            failures = [c.name for c in report.failed(allow_negative=allow)]
            refusals = rec.release_refusals(ev, failures, view.safety.latched)
            view.evaluation = ev
            view.evaluated_at = time.time()
            if refusals:
                view.last_action = f"latch release by {admin} refused"
                await self._persist([ev])
                raise LatchRefused(refusals)
            state = replace(view.safety, latched=False, latch_source=None, breach=False)
            view.last_action = f"latch released by {admin}"
            if state.safety_applied and view.engine.mode in (state.applied_mode, None):
                state = await self._act(symbol, view, state, rec.Action.RESTORE, "")
                view.last_action = f"latch released by {admin}; {view.last_action}"
            view.safety = state
            await self._persist([ev])
            log.warning("latch released", extra={"market": symbol, "admin": admin})
            self._gauges()
            return self.market_status(symbol)

    async def guard(self, report: InvariantReport) -> None:
        """Latch (and, with auto-switch, halt) the markets a failed invariant concerns."""
        failed = report.failed(allow_negative=False)
        if not failed:
            return
        markets = {m for check in failed for m in check.markets}
        async with self._lock:
            for symbol in sorted(markets & set(self.views)):
                view = self.views[symbol]
                state = rec.trip(view.safety)
                why = ", ".join(c.name for c in failed)
                switchable = self.settings.guard.auto_switch and self.matchers.has(symbol)
                if switchable and view.engine.mode in ("NORMAL", None):
                    mode = self.settings.guard.safety_mode
                    state = replace(state, applied_mode=mode)
                    state = await self._act(symbol, view, state, rec.Action.ENGAGE, why)
                view.safety = state
                await self._save(symbol)

    async def _save(self, symbol: str) -> None:
        async with self.pool.acquire() as conn:
            await _save_state(conn, symbol, self.views[symbol])

    # ------------------------------------------------------------------ status

    def market_status(self, symbol: str) -> dict[str, Any]:
        view = self.views[symbol]
        ev = view.evaluation
        s = self.settings.reconciliation
        safety = view.safety
        recommended = rec.recommended_mode(safety, self._mode_for(safety))
        return {
            "symbol": symbol,
            "applied_seq": ev.applied_seq if ev else None,
            "engine_seq": view.engine.seq,
            "engine_epoch": view.engine.epoch,
            "engine_mode": view.engine.mode,
            "engine_seen_at_ms": view.engine.seen_ms,
            "engine_published_seq": view.engine.published,
            "engine_unreachable_since_ms": view.engine.unreachable_since_ms,
            "engine_error": view.engine.error,
            "engine_refusal": view.engine.refusal,
            "lag": ev.lag if ev else None,
            "lag_threshold": s.lag_threshold,
            "behind_seconds": ev.behind_ms / 1000 if ev else None,
            "lag_grace_seconds": s.lag_grace_ms / 1000,
            "stale": ev.stale if ev else None,
            "mismatch": ev.mismatch if ev else None,
            "breach": ev.breach if ev else None,
            "reasons": list(ev.reasons) if ev else [],
            "reason_codes": list(ev.codes) if ev else [],
            "recommended_mode": recommended,
            "safety_mode": self._mode_for(safety),
            "latch_enabled": s.latch_enabled,
            "latched": safety.latched,
            "latch_source": safety.latch_source,
            "safety_applied": safety.safety_applied,
            "applied_mode": safety.applied_mode,
            "auto_switch": s.auto_switch and self.matchers.has(symbol),
            "evaluated_at": view.evaluated_at,
            "last_action": view.last_action,
        }

    def status(self) -> dict[str, Any]:
        markets = [self.market_status(symbol) for symbol in self.views]
        return {
            "enabled": self.settings.reconciliation.enabled,
            "interval_ms": self.settings.reconciliation.interval_ms,
            "stale_ms": self.settings.reconciliation.stale_ms,
            "lag_grace_ms": self.settings.reconciliation.lag_grace_ms,
            "lag_max": max((m["lag"] or 0 for m in markets), default=0),
            "breach_active": sum(1 for m in markets if m["breach"]),
            "markets": markets,
        }

    async def history(self, symbol: str, limit: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT id, evaluated_at, engine_seq, applied_seq, lag, stale, mismatch, breach,
                      latched, reasons, action
                 FROM reconciliation_history WHERE market = $1 ORDER BY id DESC LIMIT $2""",
            symbol,
            limit,
        )
        return [{**dict(r), "evaluated_at": r["evaluated_at"].isoformat()} for r in rows]


async def _save_state(conn: asyncpg.Connection, symbol: str, view: View) -> None:
    ev = view.evaluation
    safety = view.safety
    await conn.execute(
        """INSERT INTO reconciliation_state AS s (market, engine_seq, engine_epoch, engine_mode,
               engine_seen_at, applied_seq, lag, stale, mismatch, breach, reasons, latched,
               latch_source, latched_at, safety_applied, applied_mode, evaluated_at)
           VALUES ($1, $2, $3, $4, to_timestamp($5::float8 / 1000), $6, $7, $8, $9, $10, $11,
                   $12, $13, CASE WHEN $12 THEN now() END, $14, $15, now())
           ON CONFLICT (market) DO UPDATE SET
               engine_seq = EXCLUDED.engine_seq, engine_epoch = EXCLUDED.engine_epoch,
               engine_mode = EXCLUDED.engine_mode, engine_seen_at = EXCLUDED.engine_seen_at,
               applied_seq = EXCLUDED.applied_seq, lag = EXCLUDED.lag, stale = EXCLUDED.stale,
               mismatch = EXCLUDED.mismatch, breach = EXCLUDED.breach, reasons = EXCLUDED.reasons,
               latched = EXCLUDED.latched, latch_source = EXCLUDED.latch_source,
               latched_at = CASE WHEN EXCLUDED.latched
                                 THEN coalesce(s.latched_at, now()) END,
               safety_applied = EXCLUDED.safety_applied, applied_mode = EXCLUDED.applied_mode,
               evaluated_at = now()""",
        symbol,
        view.engine.seq,
        view.engine.epoch,
        view.engine.mode,
        view.engine.seen_ms,
        ev.applied_seq if ev else 0,
        ev.lag if ev else 0,
        ev.stale if ev else False,
        ev.mismatch if ev else False,
        safety.breach,
        list(ev.reasons) if ev else [],
        safety.latched,
        safety.latch_source,
        safety.safety_applied,
        safety.applied_mode,
    )


async def run_guard(invariants: Invariants, reconciler: Reconciler, interval_ms: int) -> None:
    """The periodic invariant job: check, and let the guard act on failures."""
    while True:
        await asyncio.sleep(interval_ms / 1000)
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            report = await invariants.check()
            if not report.ok:
                log.error(
                    "invariants failed",
                    extra={"failed": [c.name for c in report.checks if not c.ok]},
                )
                await reconciler.guard(report)
