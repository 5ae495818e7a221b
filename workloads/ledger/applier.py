"""The single settlement writer: the Kafka consumer and HTTP injection share it.

Both paths `submit` decoded events and get one outcome per event back, after the database
commit. Submissions that wait together are group-committed in one transaction (up to
`max_events`), so 64 concurrent HTTP injections cost one transaction, not 64, and the two
paths can never race each other: there is one code path for exactly-once.

Two stages, so that Python's work overlaps PostgreSQL's:
- the planner gathers submissions into a batch and plans it (`plan.plan`) against the
  cursors and journal ids it predicts, i.e. as they will be once everything planned before
  has committed;
- the writer executes plans in order; `store.execute` checks the prediction under the lock
  and refuses a plan the database does not match, and the batch then takes the full path
  (`store.apply_batch`). A batch the planner declines (a gap, funding, a new account) takes
  the full path too, and the planner waits for it to commit before predicting again.

Failures: a lost connection, a deadlock or a serialization failure is retried (with a new
connection) until it succeeds or the applier stops. Any other database error fails the
submissions of that batch, each retried alone first so one bad submission cannot fail the
others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from opentelemetry.trace import NoOpTracer, SpanKind, Tracer

from workloads.common.tracing import parent_of, span_after
from workloads.ledger import metrics, store
from workloads.ledger.cursor import Cursor, Verdict
from workloads.ledger.plan import Outcome, Plan, plan
from workloads.ledger.rules import Incoming
from workloads.ledger.store import AccountCache, PlanRejected

log = logging.getLogger(__name__)

CONNECTION_SETTINGS = {"plan_cache_mode": "force_custom_plan"}
"""The settlement connection plans every statement for its batch. Batches range from one
event to thousands and the tables from empty to every account; a generic plan cached early
(say, a hash join over a seq scan of `balances` while it was small) would be kept as they
grow. Planning costs well under a millisecond against a batch's tens."""

TRANSIENT = (
    OSError,
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


class ApplierStopped(RuntimeError):
    """The applier stopped before the submission was applied (it may be resubmitted)."""


@dataclass
class _Job:
    items: Sequence[Incoming]
    future: asyncio.Future[list[Outcome]]
    parents: Sequence[bytes] = ()  # traceparents of sampled orders among the items


@dataclass
class _Planned:
    jobs: list[_Job]
    items: list[Incoming]
    plan: Plan | None


_STOP = _Planned([], [], None)


@dataclass
class Applier:
    dsn: str
    fee_account: str
    max_events: int = 10_000
    retry_delay: float = 0.5
    tracer: Tracer = field(default_factory=NoOpTracer)
    """Spans per batch (`ledger.settle_batch`), never per event: one of its own (sampled at
    LEDGER_OTEL_SAMPLE_PROB), or, when the batch holds events of sampled orders, one in each
    of their traces instead, under the matcher's publish span."""
    accounts: AccountCache = field(init=False)
    cursors: dict[str, Cursor] = field(default_factory=dict, init=False)
    """The cursors as of the last commit by this process (the database is the truth)."""
    batches: int = field(default=0, init=False)
    planned_batches: int = field(default=0, init=False)
    _next_id: int | None = field(default=None, init=False)  # committed
    _predicted: dict[str, Cursor] = field(default_factory=dict, init=False)
    _predicted_next_id: int | None = field(default=None, init=False)
    _resync: bool = field(default=True, init=False)
    _queue: asyncio.Queue[_Job] = field(default_factory=asyncio.Queue, init=False)
    _ready: asyncio.Queue[_Planned] = field(init=False)
    _inflight: int = field(default=0, init=False)
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _conn: asyncpg.Connection | None = field(default=None, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _stopping: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.accounts = AccountCache(self.fee_account)
        self._ready = asyncio.Queue(maxsize=2)
        self._idle.set()

    async def start(self) -> None:
        self._conn = await self._connect()
        self._tasks = [
            asyncio.create_task(self._plan_loop(), name="ledger-planner"),
            asyncio.create_task(self._write_loop(), name="ledger-writer"),
        ]

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, server_settings=CONNECTION_SETTINGS)

    async def stop(self) -> None:
        """Finish what was submitted, then close."""
        self._stopping = True
        await self._queue.put(_Job((), asyncio.get_running_loop().create_future()))
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            _fail(self._queue.get_nowait(), ApplierStopped("ledger stopping"))
        if self._conn is not None:
            await self._conn.close()

    async def submit(
        self, items: Sequence[Incoming], parents: Sequence[bytes] = ()
    ) -> list[Outcome]:
        """Apply `items` in order (exactly once); one outcome per item, after the commit.
        `parents`: the W3C traceparents (Kafka headers) of sampled orders among them."""
        if self._stopping or not self._tasks:
            raise ApplierStopped("ledger stopping")
        if not items:
            return []
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(items, future, parents))
        return await asyncio.shield(future)

    # ------------------------------------------------------------------ planner

    async def _gather(self) -> list[_Job] | None:
        job = await self._queue.get()
        if not job.items:  # the stop sentinel
            return None
        jobs = [job]
        size = len(job.items)
        while size < self.max_events and not self._queue.empty():
            nxt = self._queue.get_nowait()
            if not nxt.items:
                self._queue.put_nowait(nxt)  # keep the sentinel for the next round
                break
            jobs.append(nxt)
            size += len(nxt.items)
        return jobs

    async def _plan_loop(self) -> None:
        while True:
            jobs = await self._gather()
            if jobs is None:
                await self._hand_over(_STOP)
                return
            if self._resync or self._predicted_next_id is None:
                await self._idle.wait()  # everything planned before has committed
                self._predicted = dict(self.cursors)
                self._predicted_next_id = self._next_id
                self._resync = False
            items = [item for job in jobs for item in job.items]
            made: Plan | None = None
            if self._predicted_next_id is not None:
                args = (items, self._predicted, self.accounts.ids, self._predicted_next_id)
                # A big batch is planned in a worker thread: pure Python holds the GIL, but
                # the interpreter switches every 5 ms, so the event loop keeps feeding the
                # database the batch in flight instead of stalling behind the planner.
                made = await asyncio.to_thread(plan, *args) if len(items) >= 500 else plan(*args)
            if made is None:
                self._predicted_next_id = None  # unknown until this batch has committed
            else:
                self._predicted.update(made.after)
                self._predicted_next_id = made.next_id
            await self._hand_over(_Planned(jobs, items, made))

    async def _hand_over(self, planned: _Planned) -> None:
        self._inflight += 1
        self._idle.clear()
        await self._ready.put(planned)

    # ------------------------------------------------------------------ writer

    async def _write_loop(self) -> None:
        while True:
            planned = await self._ready.get()
            try:
                if planned is _STOP:
                    return
                await self._apply_jobs(planned)
            finally:
                self._inflight -= 1
                if not self._inflight:
                    self._idle.set()

    async def _apply_jobs(self, planned: _Planned) -> None:
        jobs = planned.jobs
        parents = [parent for job in jobs for parent in job.parents]
        try:
            if parents:
                outcomes = await self._apply_traced(planned, parents)
            else:
                with self.tracer.start_as_current_span("ledger.settle_batch") as span:
                    outcomes = await self._apply(planned.items, planned.plan)
                    if span.is_recording():
                        span.set_attributes(_span_attributes(planned, outcomes, len(jobs)))
        except TRANSIENT:  # only while stopping: _apply retries these otherwise
            for job in jobs:
                _fail(job, ApplierStopped("ledger stopping"))
            return
        except Exception as exc:
            self._resync = True
            if len(jobs) == 1:
                log.error("settlement batch failed", extra={"events": len(planned.items),
                                                            "why": str(exc)})  # fmt: skip
                _fail(jobs[0], exc)
                return
            for job in jobs:  # isolate the bad submission
                await self._apply_jobs(_Planned([job], list(job.items), None))
            return
        start = 0
        for job in jobs:
            end = start + len(job.items)
            if not job.future.done():
                job.future.set_result(outcomes[start:end])
            start = end

    async def _apply_traced(self, planned: _Planned, parents: list[bytes]) -> list[Outcome]:
        """`_apply`, timed, then one `ledger.settle_batch` span per sampled order's trace
        (child of the matcher's publish span), all with the batch's timing and figures."""
        started = time.time_ns()
        error: BaseException | None = None
        outcomes: list[Outcome] = []
        try:
            outcomes = await self._apply(planned.items, planned.plan)
            return outcomes
        except BaseException as exc:
            error = exc
            raise
        finally:
            ended = time.time_ns()
            attributes = _span_attributes(planned, outcomes, len(planned.jobs))
            # each command's events share one traceparent: one span per command
            contexts = [c for c in map(parent_of, dict.fromkeys(parents)) if c is not None]
            attributes["ledger.traces"] = len(contexts)
            for context in contexts:
                span_after(
                    self.tracer,
                    "ledger.settle_batch",
                    context,
                    started,
                    ended,
                    kind=SpanKind.CONSUMER,
                    attributes=attributes,
                    error=error,
                )

    async def _apply(self, items: list[Incoming], made: Plan | None) -> list[Outcome]:
        if made is not None and self._nothing_to_write(made):
            result = store.BatchResult(made.outcomes, made.after, {}, 0, made.next_id, {}, [])
            self._observe(items, result, 0.0)
            return result.outcomes
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                started = time.perf_counter()
                result = await self._execute(self._conn, items, made)
            except TRANSIENT as exc:
                metrics.APPLY_ERRORS.inc()
                log.warning("settlement batch will be retried", extra={"why": repr(exc)})
                if self._conn is not None and not self._conn.is_closed():
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                self._conn = None
                if self._stopping:
                    raise
                await asyncio.sleep(self.retry_delay)
                continue
            self.accounts.commit(result.new_accounts)
            self.cursors.update(result.cursors)
            self._next_id = result.next_id
            self._observe(items, result, time.perf_counter() - started)
            return result.outcomes

    async def _execute(
        self, conn: asyncpg.Connection, items: list[Incoming], made: Plan | None
    ) -> store.BatchResult:
        if made is not None:
            try:
                result = await store.execute(conn, made)
                self.planned_batches += 1
                return result
            except PlanRejected as why:
                log.info("plan refused; full path", extra={"why": str(why)})
                self._resync = True
        return await store.apply_batch(conn, items, self.accounts)

    def _nothing_to_write(self, made: Plan) -> bool:
        """Whether a plan only finds duplicates of positions this process has seen committed.

        Cursors never move back, so such a verdict stays true whatever another writer did
        since, and the batch needs no transaction (64 concurrent injections of one event:
        the 63 duplicates are answered without a round trip). A plan made on a prediction
        that has not committed (yet, or ever) goes to the database, which checks it."""
        return not made.rows.journal and all(
            made.after[market] == cursor and self.cursors.get(market) == cursor
            for market, cursor in made.before.items()
        )

    def _observe(self, items: list[Incoming], result: store.BatchResult, seconds: float) -> None:
        self.batches += 1
        metrics.BATCH_SECONDS.observe(seconds)
        metrics.BATCH_EVENTS.observe(len(items))
        metrics.POSTINGS.inc(result.postings)
        counts: dict[Verdict, int] = {}
        for outcome in result.outcomes:
            counts[outcome.verdict] = counts.get(outcome.verdict, 0) + 1
        metrics.APPLIED.inc(counts.get(Verdict.APPLY, 0))
        metrics.DUPLICATES.inc(counts.get(Verdict.DUPLICATE, 0))
        metrics.PARKED.inc(counts.get(Verdict.GAP, 0))
        for market, count in result.stale.items():
            metrics.STALE_EPOCH.labels(market).inc(count)
        for market in result.gaps:
            metrics.GAPS.labels(market).inc()
        for market, cursor in result.cursors.items():
            metrics.APPLIED_SEQ.labels(market).set(cursor.seq)


def _span_attributes(planned: _Planned, outcomes: list[Outcome], jobs: int) -> dict[str, Any]:
    applied = sum(1 for o in outcomes if o.verdict is Verdict.APPLY)
    return {
        "messaging.system": "kafka",
        "ledger.events": len(planned.items),
        "ledger.applied": applied,
        "ledger.submissions": jobs,
        "ledger.planned": planned.plan is not None,
        "ledger.markets": sorted({item.market for item in planned.items}),
    }


def _fail(job: _Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)
