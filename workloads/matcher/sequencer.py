"""The sequencer: stamps, executes, group-commits and only then answers.

Commands arrive from the gRPC edge in batches. Each gets the next seq and a timestamp
(never earlier than the previous one), runs through the engine at once, and joins the
pending WAL batch. A single flusher writes and fsyncs pending batches in a worker thread;
while one fsync is in flight the next batch grows, so one fsync covers many commands
(group commit). A caller's results are released only when the WAL holds every command it
depends on: the "executed" line is the fsync, as the architecture demands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

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
SEQ = Gauge("matcher_seq", "Last sequenced command")
DURABLE_SEQ = Gauge("matcher_durable_seq", "Last command whose WAL record is fsynced")


class NotLeader(RuntimeError):
    """This instance cannot prove it leads the market; commands must go elsewhere."""


class SequencerFailed(RuntimeError):
    """The WAL could not be written: nothing more is accepted (the process must restart)."""


class Result(NamedTuple):
    """One command's outcome, released to the caller once durable (a tuple: cheap to make)."""

    status: int
    reason: int
    seq: int
    epoch: int
    ts: int
    events: Sequence[Any]
    correlation_id: str
    order_id: int = 0


@dataclass(frozen=True)
class SequencerSettings:
    max_batch: int = 2000
    """Most commands one WAL record (and one fsync) covers."""
    max_delay: float = 0.0
    """Seconds the flusher waits for a batch to grow when it is idle. 0 is best: batches
    grow on their own while the previous fsync runs."""
    segment_bytes: int = 64 << 20
    snapshot_every: int = 200_000
    """Commands between periodic snapshots (0: only on demand and at shutdown)."""


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
        self.durable_changed = asyncio.Event()
        self.failed: BaseException | None = None
        self._last_ts = 0
        self._pending: list[list[Any]] = []
        self._pending_first = engine.seq + 1
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="wal")
        self.snapshot_seq = snapshot_seq
        self._snapshotting = False
        self._snapshot_task: asyncio.Task[Path] | None = None
        self._flusher: asyncio.Task[None] | None = None
        SEQ.set(engine.seq)
        DURABLE_SEQ.set(engine.seq)

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="wal-flusher")

    # ------------------------------------------------------------------ commands

    def execute_nowait(self, items: Sequence[tuple[tuple[Any, ...], str]]) -> list[Result]:
        """Sequence and execute now; the results must not be released before `durable()`."""
        if self.failed is not None:
            raise SequencerFailed(str(self.failed))
        if not self.fencing.is_leader():
            raise NotLeader(f"{self.fencing.identity} does not hold the market's lease")
        engine = self.engine
        epoch = self.epoch
        results = []
        pending = self._pending
        rejected = duplicates = 0
        for cmd, correlation_id in items:
            original = engine.duplicate_of(cmd)
            if original is not None:
                seq, status, reason, order_id = original
                results.append(
                    Result(e.DUPLICATE, reason, seq, epoch, 0, (), correlation_id, order_id)
                )
                duplicates += 1
                continue
            seq = engine.seq + 1
            ts = self.clock()
            if ts < self._last_ts:
                ts = self._last_ts
            self._last_ts = ts
            events = engine.execute(cmd, seq, ts)
            pending.append([ts, cmd, events, correlation_id, engine.state_hash])
            status, reason = e.outcome(events)
            order_id = seq if cmd[0] == e.C_PLACE and status == e.ACCEPTED else 0
            results.append(Result(status, reason, seq, epoch, ts, events, correlation_id, order_id))
            if status != e.ACCEPTED:
                rejected += 1
        _ACCEPTED.inc(len(items) - rejected - duplicates)
        if rejected:
            _REJECTED.inc(rejected)
        if duplicates:
            _DUPLICATE.inc(duplicates)
        if pending:
            self._wakeup.set()
        SEQ.set(engine.seq)
        return results

    async def submit(self, items: Sequence[tuple[tuple[Any, ...], str]]) -> list[Result]:
        """Execute `items` in order and return their results once they are durable."""
        results = self.execute_nowait(items)
        await self.durable(self.engine.seq)
        return results

    async def durable(self, seq: int) -> None:
        """Wait until every command up to `seq` is in the fsynced WAL."""
        if seq <= self.durable_seq:
            return
        if self.failed is not None:
            raise SequencerFailed(str(self.failed))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        await future

    # ------------------------------------------------------------------ group commit

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if settings.max_delay and len(self._pending) < settings.max_batch:
                await asyncio.sleep(settings.max_delay)
            while self._pending:
                entries = self._pending[: settings.max_batch]
                del self._pending[: settings.max_batch]
                first = self._pending_first
                self._pending_first += len(entries)
                record = wal.encode(first, self.epoch, entries[-1][4], entries)
                started = time.perf_counter()
                try:
                    await loop.run_in_executor(self._io, self._write, record, first)
                except OSError as exc:  # a full or failing disk: stop rather than lie
                    self._fail(exc)
                    return
                FSYNC_SECONDS.observe(time.perf_counter() - started)
                BATCH_COMMANDS.observe(len(entries))
                self._advance(first + len(entries) - 1)

    def _write(self, record: bytes, first_seq: int) -> None:
        self.writer.write(record, first_seq)
        self.writer.sync()

    def _advance(self, seq: int) -> None:
        self.durable_seq = seq
        DURABLE_SEQ.set(seq)
        waiters = self._waiters
        while waiters and waiters[0][0] <= seq:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)
        self.durable_changed.set()
        every = self.settings.snapshot_every
        if every and seq - self.snapshot_seq >= every and not self._snapshotting:
            self._snapshot_task = asyncio.create_task(self.snapshot(), name="snapshot")

    def _fail(self, exc: BaseException) -> None:
        log.critical("WAL write failed; refusing further commands", exc_info=exc)
        self.failed = exc
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(SequencerFailed(str(exc)))

    # ------------------------------------------------------------------ snapshots

    async def snapshot(self) -> Path:
        """Snapshot the state as it is now, without stalling the event loop.

        A forked child serializes its copy-on-write image of the engine and writes the
        file, while this process goes on serving (serializing a large book in-process
        would block every reply for most of a second). The file is published only once
        the WAL covers its seq: a snapshot is never ahead of the log.
        """
        self._snapshotting = True
        try:
            engine = self.engine
            seq, state_hash = engine.seq, engine.state_hash
            temporary = snapshot.temporary_path(self.data_dir / "snapshots", seq)
            pid = os.fork()
            if pid == 0:  # the child: write the file and leave at once, touching nothing else
                code = 1
                try:
                    snapshot.write_file(temporary, seq, state_hash, engine.to_state())
                    code = 0
                finally:
                    os._exit(code)
            loop = asyncio.get_running_loop()
            _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"snapshot child for seq {seq} failed ({status})")
            await self.durable(seq)
            path = await loop.run_in_executor(self._io, snapshot.publish, temporary)
            self.snapshot_seq = seq
            log.info("snapshot written", extra={"seq": seq, "path": str(path)})
            return path
        finally:
            self._snapshotting = False

    async def compact(self, published_seq: int) -> int:
        """Delete WAL segments nothing needs any more: recovery starts at the snapshot and
        the outbox at its published cursor, so keep everything from the lower of the two."""
        keep_from = min(self.snapshot_seq, published_seq) + 1
        loop = asyncio.get_running_loop()
        removed = await loop.run_in_executor(self._io, self.writer.remove_before, keep_from)
        return len(removed)

    async def close(self) -> None:
        """Flush what is pending and stop the flusher (call after the edge stopped)."""
        if self.failed is None:
            await self.durable(self.engine.seq)
        if self._snapshot_task is not None:
            with contextlib.suppress(Exception):
                await self._snapshot_task
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._io.shutdown(wait=True)
        self.writer.close()
