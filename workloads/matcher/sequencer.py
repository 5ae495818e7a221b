"""The sequencer: stamps, executes, group-commits and only then answers.

Commands arrive from the gRPC edge in batches. Each gets the next seq and the batch's
timestamp (never earlier than the previous one), runs through the engine at once, and
joins the pending WAL group. Group commit is pipelined: when no write is in flight, the
pending group is encoded at once and handed to the WAL thread, which writes and fsyncs it
while the engine goes on executing the next group on the event loop; when the fsync
returns, the next group goes out in one write and one fsync, however many callers it
holds. A caller's results are released only when the WAL holds every command it depends
on: the "executed" line is the fsync, as the architecture demands.

The hot path does per command only what the WAL needs (one tuple, the WAL entry); per
caller batch one future, per group one encode, one write, one fsync and one wake-up of
the loop. Replies are built from the entries only when they are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from workloads.matcher import engine as e
from workloads.matcher import snapshot, wal
from workloads.matcher.engine import Engine
from workloads.matcher.epoch import EpochProvider

log = logging.getLogger(__name__)

COMMANDS = Counter("matcher_commands_total", "Commands by outcome", ["status"])
_ACCEPTED = COMMANDS.labels("accepted")  # bound once: labels() costs microseconds per call
_REJECTED = COMMANDS.labels("rejected")
_DUPLICATE = COMMANDS.labels("duplicate")
FSYNC_SECONDS = Histogram(
    "matcher_wal_fsync_seconds",
    "Time to write and fsync one group-commit batch",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)
BATCH_COMMANDS = Histogram(
    "matcher_wal_batch_commands",
    "Commands covered by one fsync",
    buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000),
)
COMMIT_SECONDS = Histogram(
    "matcher_commit_seconds",
    "From a submitted batch's execution until its WAL record is durable (its reply may go)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)
SEQ = Gauge("matcher_seq", "Last sequenced command")
DURABLE_SEQ = Gauge("matcher_durable_seq", "Last command whose WAL record is fsynced")
COMMITTED_SEQ = Gauge(
    "matcher_committed_seq",
    "Last command released to callers and the outbox (durable here and on an in-sync standby)",
)

_REJECT_KINDS = frozenset((e.E_REJECTED, e.E_FUNDING_REJECTED))
_SNAPSHOT_NICENESS = 10  # periodic snapshots' child: behind the serving process for the CPU
_WHOLE_WAVE = sys.maxsize  # no early write: the group closes when the loop has run its queue
T = TypeVar("T")


def tune_runtime() -> None:
    """Tune the interpreter for a process that holds an engine and serves from one loop.

    - The engine's state is millions of long-lived objects: move what exists now out of
      the cyclic collector's sight (`freeze`; snapshots freeze again what has grown).
    - Young collections every 5,000 net allocations: grpc.aio leaves a small reference
      cycle behind every call, so a large threshold makes rare collections that free tens
      of thousands of objects at once (20-40 ms stalls measured at 50,000); at 5,000 they
      stay around a millisecond for the same total work.
    - A 1 ms GIL switch interval (default 5 ms): the WAL thread needs the GIL back after
      each fsync to release its callers, and grpc's poller thread to deliver calls; while
      the loop executes a large batch, each would otherwise wait up to 5 ms.

    Called by the process after recovery and by the benchmarks, so that they measure the
    same thing.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 10, 100)
    sys.setswitchinterval(0.001)


class NotLeader(RuntimeError):
    """This instance cannot prove it leads the market; commands must go elsewhere."""


class SequencerFailed(RuntimeError):
    """The WAL could not be written: nothing more is accepted (the process must restart)."""


class Result(NamedTuple):
    """One command's outcome, as the edge turns it into a reply."""

    status: int
    reason: int
    seq: int
    epoch: int
    ts: int
    events: Sequence[Any]
    correlation_id: str
    order_id: int = 0
    command_kind: int = 0
    """The engine's kind of the command (`cmd[0]`): a reject's event names it."""


class Executed:
    """What one caller batch did: its WAL entries and, in place, any duplicates.

    Built on the hot path with no per-command object beyond the WAL entry itself;
    `results()` makes the `Result`s when the edge needs them, after durability.
    """

    __slots__ = ("duplicates", "entries", "epoch", "first_seq", "last_seq")

    def __init__(
        self,
        first_seq: int,
        last_seq: int,
        epoch: int,
        entries: list[tuple[Any, ...]],
        duplicates: dict[int, Result] | None,
    ) -> None:
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.epoch = epoch
        self.entries = entries
        """WAL entries `(ts, command, events, correlation id, state hash)` in seq order."""
        self.duplicates = duplicates
        """Position in the caller's batch -> the original's result, for idempotent retries."""

    def __len__(self) -> int:
        return len(self.entries) + (len(self.duplicates) if self.duplicates else 0)

    def results(self) -> Iterator[Result]:
        """One `Result` per command of the caller's batch, in its order."""
        duplicates = self.duplicates or {}
        epoch = self.epoch
        entries = iter(self.entries)
        seq = self.first_seq
        for position in range(len(self)):
            duplicate = duplicates.get(position)
            if duplicate is not None:
                yield duplicate
                continue
            ts, cmd, events, correlation_id, _ = next(entries)
            status, reason = e.outcome(events)
            order_id = seq if cmd[0] == e.C_PLACE and status == e.ACCEPTED else 0
            yield Result(status, reason, seq, epoch, ts, events, correlation_id, order_id, cmd[0])
            seq += 1


@dataclass(frozen=True)
class SequencerSettings:
    max_batch: int = 2000
    """Most commands one WAL record covers (one fsync may cover several records)."""
    max_delay: float = 0.0
    """Seconds to let a group grow when no write is in flight. 0 is best: groups grow on
    their own while the previous fsync runs."""
    segment_bytes: int = 64 << 20
    snapshot_every: int = 200_000
    """Commands between periodic snapshots (0: only on demand and at shutdown)."""


class _WalThread:
    """One thread that runs the WAL's blocking work (write+fsync, rotation, segment
    removal, snapshot publication) in order, handing results back to the loop.

    Leaner than a ThreadPoolExecutor: one queue put to start a job, one
    `call_soon_threadsafe` to finish it, no concurrent.futures machinery in between.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[
            tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any, BaseException | None], None]]
            | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="wal", daemon=True)
        self._thread.start()

    def call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        done: Callable[[Any, BaseException | None], None],
    ) -> None:
        """Run `fn(*args)` in the thread; then `done(result, error)` on the loop."""
        self._jobs.put((fn, args, done))

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run `fn(*args)` in the thread, as a future of the loop."""
        future: asyncio.Future[T] = self._loop.create_future()

        def done(result: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        self.call(fn, args, done)
        return future

    def _run(self) -> None:
        loop = self._loop
        while (job := self._jobs.get()) is not None:
            fn, args, done = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the loop, which decides
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(done, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    async def stop(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)


class CommitGate(Protocol):
    """What the commit line waits for besides the local disk: an in-sync standby's
    acknowledgement (`replication.Replication`)."""

    in_sync: bool
    acked_seq: int


class Sequencer:
    def __init__(
        self,
        engine: Engine,
        data_dir: Path,
        epoch: int,
        fencing: EpochProvider,
        settings: SequencerSettings,
        clock: Callable[[], int] = time.time_ns,
        snapshot_seq: int = 0,
    ) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.epoch = epoch
        self.fencing = fencing
        self.settings = settings
        self.clock = clock
        self.writer = wal.WalWriter(data_dir / "wal", engine.seq + 1, settings.segment_bytes)
        self.durable_seq = engine.seq
        """The last command whose WAL record is fsynced here."""
        self.committed_seq = engine.seq
        """The last command released to its caller and to the outbox: durable here and, while
        a standby is in sync, acknowledged by it too (`gate`)."""
        self.gate: CommitGate | None = None
        self.on_records: Callable[[list[tuple[int, bytes]]], None] | None = None
        """Called with each group's encoded records as they go to the disk (replication)."""
        self.durable_changed = asyncio.Event()
        self.failed: BaseException | None = None
        self._last_ts = 0
        self._pending: list[tuple[Any, ...]] = []
        self._pending_first = engine.seq + 1
        self._writing = False  # a group is in the WAL thread
        # ... its last seq, command count, start time and the time its commands executed
        self._in_flight = (0, 0, 0.0, 0.0)
        self._executing = 0.0  # seconds the pending commands took to execute
        self._delayed: asyncio.Handle | None = None
        # Pending commands that start a write at once when none is in flight: half of what
        # the last fsync released, when executing them outlasts an fsync. Those callers
        # come back soon; sending the first half of them while the second half executes
        # keeps the engine busy during every fsync (two groups alternate) instead of idling
        # through one big one. Otherwise a write starts once the woken callers have run.
        self._early = _WHOLE_WAVE
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._thread: _WalThread | None = None
        self.snapshot_seq = snapshot_seq
        self._snapshotting = False
        self._snapshot_task: asyncio.Task[Path] | None = None
        SEQ.set_function(lambda: self.engine.seq)  # read at scrape time: free on the hot path
        DURABLE_SEQ.set_function(lambda: self.durable_seq)
        COMMITTED_SEQ.set_function(lambda: self.committed_seq)

    @property
    def dispatched_seq(self) -> int:
        """The last command handed to the disk (written, or being written)."""
        return self._pending_first - 1

    def start(self) -> None:
        self._thread = _WalThread(asyncio.get_running_loop())

    # ------------------------------------------------------------------ commands

    def execute_nowait(self, items: Sequence[tuple[tuple[Any, ...], str]]) -> Executed:
        """Sequence and execute now; the results must not be released before `durable()`
        of the returned batch's `last_seq`."""
        if self.failed is not None:
            raise SequencerFailed(str(self.failed))
        if not self.fencing.is_leader():
            raise NotLeader(f"{self.fencing.identity} does not hold the market's lease")
        engine = self.engine
        execute = engine.execute
        duplicate_of = engine.duplicate_of
        reject_kinds = _REJECT_KINDS
        started = time.perf_counter()
        ts = self.clock()  # one stamp per batch: its commands arrived together
        if ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        seq = first = engine.seq + 1
        entries: list[tuple[Any, ...]] = []
        append = entries.append
        duplicates: dict[int, Result] | None = None
        rejected = 0
        try:
            for position, (cmd, correlation_id) in enumerate(items):
                original = duplicate_of(cmd)
                if original is not None:
                    if duplicates is None:
                        duplicates = {}
                    dup_seq, _status, reason, order_id = original
                    duplicates[position] = Result(
                        e.DUPLICATE, reason, dup_seq, self.epoch, 0, (), correlation_id, order_id
                    )
                    continue
                events = execute(cmd, seq, ts)
                append((ts, cmd, events, correlation_id, engine.state_hash))
                if events[0][0] in reject_kinds:
                    rejected += 1
                seq += 1
        finally:  # whatever the engine executed goes to the WAL, even if a command raised
            self._pending.extend(entries)
            self._executing += time.perf_counter() - started
        if entries:
            _ACCEPTED.inc(len(entries) - rejected)
            if rejected:
                _REJECTED.inc(rejected)
            pending = self._pending
            if not self._writing:
                delay = self.settings.max_delay
                if len(pending) >= (self.settings.max_batch if delay else self._early):
                    self._dispatch()
                elif self._delayed is None:
                    loop = asyncio.get_running_loop()
                    if delay:
                        self._delayed = loop.call_later(delay, self._dispatch)
                    else:  # after the callers already woken have run: they join this group
                        self._delayed = loop.call_soon(self._dispatch)
        if duplicates:
            _DUPLICATE.inc(len(duplicates))
        return Executed(first, seq - 1, self.epoch, entries, duplicates)

    async def submit(self, items: Sequence[tuple[tuple[Any, ...], str]]) -> Executed:
        """Execute `items` in order and return what they did once it is durable."""
        executed = self.execute_nowait(items)
        started = time.perf_counter()
        await self.durable(executed.last_seq)
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        return executed

    async def durable(self, seq: int) -> None:
        """Wait until every command up to `seq` is committed: in the fsynced WAL and, while a
        standby is in sync, in its fsynced WAL too."""
        if seq <= self.committed_seq:
            return
        if self.failed is not None:
            raise SequencerFailed(str(self.failed))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        await future

    # ------------------------------------------------------------------ group commit

    def _dispatch(self) -> None:
        """Encode everything pending (records of at most `max_batch` commands) and hand
        it to the WAL thread as one write and one fsync."""
        if self._delayed is not None:
            self._delayed.cancel()
            self._delayed = None
        pending = self._pending
        if self._writing or not pending or self.failed is not None:
            return
        assert self._thread is not None, "start() the sequencer first"
        self._pending = []
        first = self._pending_first
        count = len(pending)
        self._pending_first += count
        limit = self.settings.max_batch
        epoch = self.epoch
        records = []
        for start in range(0, count, limit):
            entries = pending[start : start + limit] if count > limit else pending
            records.append(
                (first + start, wal.encode(first + start, epoch, entries[-1][4], entries))
            )
        self._writing = True
        self._in_flight = (first + count - 1, count, time.perf_counter(), self._executing)
        self._executing = 0.0
        self._thread.call(self._write, (records,), self._written)
        if self.on_records is not None:
            self.on_records(records)  # the standby writes them while we do

    def _write(self, records: list[tuple[int, bytes]]) -> None:
        """In the WAL thread: append the records, fsync once."""
        writer = self.writer
        for first_seq, record in records:
            writer.write(record, first_seq)
        writer.sync()

    def _written(self, _: None, error: BaseException | None) -> None:
        """On the loop: the group is durable (or the disk failed); release and go on."""
        self._writing = False
        if error is not None:
            self._fail(error)
            return
        last_seq, count, started, executing = self._in_flight
        writing = time.perf_counter() - started
        FSYNC_SECONDS.observe(writing)
        BATCH_COMMANDS.observe(count)
        # Split the wave of callers this releases only when executing it takes longer than
        # an fsync: then its first half's fsync hides behind its second half's execution.
        # Otherwise one group is cheaper (fewer fsyncs, same latency).
        self._early = early = max(1, count // 2) if executing > writing else _WHOLE_WAVE
        if len(self._pending) >= early:
            self._dispatch()  # what arrived meanwhile goes out now: the next fsync starts
            self._advance(last_seq)
        else:
            self._advance(last_seq)  # wakes the callers first: their commands join the group
            if self._pending and self._delayed is None:
                self._delayed = asyncio.get_running_loop().call_soon(self._dispatch)

    def _advance(self, seq: int) -> None:
        self.durable_seq = seq
        self.release()
        every = self.settings.snapshot_every
        if every and seq - self.snapshot_seq >= every and not self._snapshotting:
            self._snapshot_task = asyncio.create_task(
                self.snapshot(niceness=_SNAPSHOT_NICENESS), name="snapshot"
            )

    def release(self) -> None:
        """Move the commit line as far as the local disk and the gate allow, and wake the
        callers (and the outbox) it passes. The gate calls it when the standby acknowledges
        or falls out of sync."""
        gate = self.gate
        commit = self.durable_seq
        if gate is not None and gate.in_sync:
            commit = min(commit, gate.acked_seq)
        if commit <= self.committed_seq:
            return
        self.committed_seq = commit
        waiters = self._waiters
        while waiters and waiters[0][0] <= commit:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)
        self.durable_changed.set()

    def _fail(self, exc: BaseException) -> None:
        log.critical("WAL write failed; refusing further commands", exc_info=exc)
        self.failed = exc
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(SequencerFailed(str(exc)))

    # ------------------------------------------------------------------ snapshots

    async def snapshot(self, *, niceness: int = 0) -> Path:
        """Snapshot the state as it is now, without stalling the event loop.

        A forked child serializes its copy-on-write image of the engine and writes the
        file, while this process goes on serving (serializing a large book in-process
        would block every reply for most of a second). The file is published only once
        the WAL covers its seq: a snapshot is never ahead of the log. Periodic snapshots
        run the child with a `niceness`, so that on a busy machine it yields the CPU to
        the process serving replies (measured: 40-80 ms stalls of the loop after a fork
        while the child serialized at full priority on two cores).
        """
        self._snapshotting = True
        try:
            engine = self.engine
            seq, state_hash = engine.seq, engine.state_hash
            temporary = snapshot.temporary_path(self.data_dir / "snapshots", seq)
            # The state grown since the last freeze leaves the collector's sight too: full
            # collections stay small, and the collector does not write to (and so copy)
            # the pages the child is reading. A young collection first, so that little
            # garbage is frozen with it.
            gc.collect(1)
            gc.freeze()
            pid = os.fork()
            if pid == 0:  # the child: write the file and leave at once, touching nothing else
                code = 1
                try:
                    if niceness:
                        os.nice(niceness)
                    snapshot.write_file(temporary, seq, state_hash, engine.to_state())
                    code = 0
                finally:
                    os._exit(code)
            loop = asyncio.get_running_loop()
            _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"snapshot child for seq {seq} failed ({status})")
            await self.durable(seq)
            path = await self._run_in_wal_thread(snapshot.publish, temporary)
            self.snapshot_seq = seq
            log.info("snapshot written", extra={"seq": seq, "path": str(path)})
            return path
        finally:
            self._snapshotting = False

    async def compact(self, published_seq: int) -> int:
        """Delete WAL segments nothing needs any more: recovery starts at the snapshot and
        the outbox at its published cursor, so keep everything from the lower of the two."""
        keep_from = min(self.snapshot_seq, published_seq) + 1
        removed = await self._run_in_wal_thread(self.writer.remove_before, keep_from)
        return len(removed)

    async def seal(self) -> bool:
        """Seal the WAL's current segment (for the archive). The rotation is queued behind
        every group handed to the WAL thread so far, so the new segment starts exactly at
        the next group's first seq."""
        if self.failed is not None:
            return False
        return await self._run_in_wal_thread(self.writer.rotate, self._pending_first)

    async def _run_in_wal_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking WAL-directory work, in order with the writes (never beside a rotation)."""
        assert self._thread is not None, "start() the sequencer first"
        return await self._thread.run(fn, *args)

    async def close(self) -> None:
        """Flush what is pending and stop the WAL thread (call after the edge stopped)."""
        if self._delayed is not None:
            self._delayed.cancel()
            self._dispatch()
        if self.failed is None:
            await self.durable(self.engine.seq)
        if self._snapshot_task is not None:
            with contextlib.suppress(Exception):
                await self._snapshot_task
        if self._thread is not None:
            await self._thread.stop()
        self.writer.close()
