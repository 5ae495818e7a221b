"""The leader's side of WAL replication: the `Replication.Follow` stream to the hot standby,
and the gate that holds the commit line until the standby has the records.

How a standby joins: it says where its log ends (seq and state hash). If the leader's log has
that seq with that hash, the standby's log is a prefix of the leader's and records follow
from there (RESUME); otherwise (a log that went past the leader's, a former leader's tail
that was never replicated, a log older than the leader's oldest segment) it starts over from
the leader's newest snapshot (SNAPSHOT). The leader then streams what its disk holds up to
the last group it dispatched, and after that every new group as it goes to its own disk (the
standby writes it while the leader does).

In sync: once the standby has acknowledged everything the leader has made durable, the
commit line (what replies and the outbox wait for) needs its acknowledgement too. If an
acknowledgement is late by more than `MATCHER_REPLICATION_SYNC_TIMEOUT_MS` (or the stream
ends), the standby is out of sync and the leader goes on alone: the window in which
acknowledged commands live on one copy only opens then, and closes when the standby has
caught up again. The leader says so in `GetStatus` and in the Lease's annotation
`exchange.io/sync-standby` (who may be promoted).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Counter, Gauge

from contracts.v1 import replication_pb2 as r
from contracts.v1 import replication_pb2_grpc
from workloads.matcher import snapshot, wal
from workloads.matcher.sequencer import Sequencer

log = logging.getLogger(__name__)

IN_SYNC = Gauge("matcher_standby_in_sync", "1 while a standby is in sync (the commit waits for it)")
STANDBY_LAG = Gauge(
    "matcher_standby_lag_records", "Commands durable here and not yet on the standby"
)
OUT_OF_SYNC = Counter("matcher_standby_out_of_sync_total", "Times the standby fell out of sync")
CHUNK_BYTES = 1 << 20
HEARTBEAT_S = 0.2


@dataclass
class Follower:
    identity: str
    queue: asyncio.Queue[list[tuple[int, bytes]] | None] = field(
        default_factory=lambda: asyncio.Queue()
    )
    sent: deque[tuple[int, float]] = field(default_factory=deque)
    """(last seq, when it was sent) of records not yet acknowledged."""


class Replication(replication_pb2_grpc.ReplicationServicer):
    """One standby at a time (a second stream replaces the first). Implements the
    sequencer's `CommitGate`."""

    def __init__(
        self,
        sequencer: Sequencer,
        data_dir: Path,
        epoch: int,
        sync_timeout: float = 1.0,
        on_sync_change: Callable[[str], Coroutine[Any, Any, bool]] | None = None,
    ) -> None:
        self.sequencer = sequencer
        self.data_dir = data_dir
        self.epoch = epoch
        self.sync_timeout = sync_timeout
        self.on_sync_change = on_sync_change
        self.in_sync = False
        self.acked_seq = 0
        self.follower: Follower | None = None
        self.needed_from: int | None = None
        """While a standby catches up from the disk: the first seq it still needs (compaction
        keeps it)."""
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._leaving = False
        """Out of sync, its designation being withdrawn: the commit still waits for it."""
        sequencer.gate = self
        sequencer.on_records = self._push
        IN_SYNC.set_function(lambda: int(self.in_sync))
        STANDBY_LAG.set_function(lambda: self.lag)

    @property
    def lag(self) -> int:
        return max(self.sequencer.durable_seq - self.acked_seq, 0) if self.follower else 0

    @property
    def standby(self) -> str:
        return self.follower.identity if self.follower is not None else ""

    def start(self) -> None:
        self._watchdog = asyncio.create_task(self._watch(), name="replication-watchdog")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self.follower is not None:
            self.follower.queue.put_nowait(None)

    # ------------------------------------------------------------------ the gate

    def _push(self, records: list[tuple[int, bytes]]) -> None:
        follower = self.follower
        if follower is not None:
            follower.queue.put_nowait(records)

    def _acked(self, follower: Follower, seq: int) -> None:
        if follower is not self.follower:
            return
        self.acked_seq = max(self.acked_seq, seq)
        while follower.sent and follower.sent[0][0] <= seq:
            follower.sent.popleft()
        if not self.in_sync and not self._leaving and self.acked_seq >= self.sequencer.durable_seq:
            self._set_sync(True, "caught up")
        self.sequencer.release()

    def _set_sync(self, in_sync: bool, why: str) -> None:
        if in_sync == self.in_sync or (not in_sync and self._leaving):
            return
        if in_sync:
            self.in_sync = True
            log.info("standby in sync", extra={"standby": self.standby, "seq": self.acked_seq})
            self._spawn(self._designate(self.standby))
            return
        OUT_OF_SYNC.inc()
        log.warning(
            "standby out of sync",
            extra={"standby": self.standby, "why": why, "acked_seq": self.acked_seq},
        )
        if self.on_sync_change is None:
            self._go_alone()
            return
        # It may no longer be promoted before anything commits without it: withdraw its
        # designation in the Lease first, and only then let the commit line go on alone.
        self._leaving = True
        self._spawn(self._withdraw())

    def _go_alone(self) -> None:
        self.in_sync = False
        self._leaving = False
        log.warning(
            "committing without a standby", extra={"durable_seq": self.sequencer.durable_seq}
        )
        self.sequencer.release()  # what waited for the standby goes on without it

    async def _designate(self, identity: str) -> None:
        if self.on_sync_change is not None and not await self.on_sync_change(identity):
            log.warning(
                "could not name the in-sync standby in the Lease", extra={"standby": identity}
            )

    async def _withdraw(self) -> None:
        assert self.on_sync_change is not None
        for attempt in itertools.count():
            if await self.on_sync_change(""):
                self._go_alone()
                return
            # The API server is away: so is the lease, soon; the commit waits meanwhile.
            await asyncio.sleep(min(0.2 * (attempt + 1), 1.0))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        """Out of sync when the oldest unacknowledged group has waited past the timeout."""
        while True:
            await asyncio.sleep(min(0.05, self.sync_timeout / 4))
            follower = self.follower
            if not self.in_sync or follower is None or not follower.sent:
                continue
            waited = time.monotonic() - follower.sent[0][1]
            if waited > self.sync_timeout:
                self._set_sync(False, f"no acknowledgement for {waited * 1000:.0f} ms")

    # ------------------------------------------------------------------ the stream

    async def Follow(
        self,
        request_iterator: AsyncIterator[r.FollowerMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[r.LeaderMessage]:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message is Hello")
            return
        hello = first.hello
        previous = self.follower
        follower = self.follower = Follower(hello.identity)
        if previous is not None:
            previous.queue.put_nowait(None)
        self._set_sync(False, "a standby (re)connected")
        self.acked_seq = 0
        acks = asyncio.create_task(self._read_acks(request_iterator, follower))
        try:
            # Everything dispatched from here on reaches the follower's queue; what was
            # dispatched before is read from the disk once it is durable.
            boundary = self.sequencer.dispatched_seq
            start, snap = await asyncio.to_thread(self._plan, hello.last_seq, hello.last_hash)
            log.info(
                "standby connected",
                extra={"standby": hello.identity, "its_seq": hello.last_seq,
                       "mode": r.Start.Mode.Name(start.mode), "reason": start.reason},
            )  # fmt: skip
            yield r.LeaderMessage(start=start)
            from_seq = (
                start.snapshot_seq if start.mode == r.Start.SNAPSHOT else hello.last_seq
            ) + 1
            self.needed_from = from_seq
            if snap is not None:
                async for chunk in _chunks(snap):
                    yield r.LeaderMessage(snapshot=chunk)
            # Not in sync while it catches up: the commit line is the local disk's.
            await self.sequencer.durable(boundary)
            async for message in self._backlog(from_seq, boundary, follower):
                yield message
            self.needed_from = None
            async for message in self._live(follower, boundary + 1):
                yield message
        finally:
            self.needed_from = None
            acks.cancel()
            if self.follower is follower:
                self.follower = None
                self._set_sync(False, "the stream ended")

    def _plan(self, last_seq: int, last_hash: int) -> tuple[r.Start, Path | None]:
        """RESUME when the follower's (seq, hash) is on the leader's history, else SNAPSHOT."""
        engine = self.sequencer.engine
        why = ""
        if last_seq > engine.seq:
            why = f"its log ends at seq {last_seq}, past the leader's {engine.seq}"
        elif last_seq == 0:
            if _oldest_wal_seq(self.data_dir / "wal") <= 1:
                return r.Start(mode=r.Start.RESUME, epoch=self.epoch), None
            why = "its log is empty and the leader's no longer starts at seq 1"
        else:
            found = _hash_at(self.data_dir / "wal", last_seq)
            if found == last_hash:
                return r.Start(mode=r.Start.RESUME, epoch=self.epoch), None
            why = (
                f"seq {last_seq} is not in the leader's log any more"
                if found is None
                else f"its log differs from the leader's at seq {last_seq}"
            )
        latest = snapshot.latest_path(self.data_dir / "snapshots")
        if latest is None:
            return r.Start(mode=r.Start.SNAPSHOT, epoch=self.epoch, reason=why), None
        seq, state_hash = snapshot.header(latest)
        start = r.Start(
            mode=r.Start.SNAPSHOT, epoch=self.epoch, snapshot_seq=seq,
            snapshot_hash=state_hash & ((1 << 64) - 1), reason=why,
        )  # fmt: skip
        return start, latest

    async def _backlog(
        self, from_seq: int, through: int, follower: Follower
    ) -> AsyncIterator[r.LeaderMessage]:
        """The records from `from_seq` through `through`, from the disk, in chunks."""
        seq = from_seq
        while seq <= through:
            data, first, last = await asyncio.to_thread(
                _read_records, self.data_dir / "wal", seq, through, CHUNK_BYTES
            )
            if not data:
                raise RuntimeError(f"the WAL does not hold seq {seq} any more")
            follower.sent.append((last, time.monotonic()))
            yield r.LeaderMessage(
                records=r.Records(data=data, first_seq=first, last_seq=last,
                                  commit_seq=self.sequencer.committed_seq)
            )  # fmt: skip
            seq = last + 1

    async def _live(self, follower: Follower, next_seq: int) -> AsyncIterator[r.LeaderMessage]:
        queue = follower.queue
        while True:
            try:
                records = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield r.LeaderMessage(
                    heartbeat=r.Heartbeat(
                        commit_seq=self.sequencer.committed_seq,
                        durable_seq=self.sequencer.durable_seq,
                    )
                )
                continue
            if records is None:
                return  # replaced by another stream, or stopping
            first = records[0][0]
            if first != next_seq:
                raise RuntimeError(f"replication out of order: {first} after {next_seq - 1}")
            last = first + _count(records) - 1
            next_seq = last + 1
            follower.sent.append((last, time.monotonic()))
            yield r.LeaderMessage(
                records=r.Records(
                    data=b"".join(data for _, data in records), first_seq=first, last_seq=last,
                    commit_seq=self.sequencer.committed_seq,
                )
            )  # fmt: skip

    async def _read_acks(
        self, request_iterator: AsyncIterator[r.FollowerMessage], follower: Follower
    ) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for message in request_iterator:
                if message.HasField("ack"):
                    self._acked(follower, message.ack.durable_seq)


def _count(records: list[tuple[int, bytes]]) -> int:
    """Commands in encoded records (from their headers)."""
    return sum(wal.HEADER.unpack_from(data)[3] for _, data in records)


async def _chunks(path: Path) -> AsyncIterator[r.SnapshotChunk]:
    handle = await asyncio.to_thread(open, path, "rb")  # first: a newer one may replace it
    with handle:
        size = os.fstat(handle.fileno()).st_size
        sent = 0
        while True:
            data = await asyncio.to_thread(handle.read, CHUNK_BYTES)
            sent += len(data)
            yield r.SnapshotChunk(data=data, last=sent >= size)
            if sent >= size:
                return


def _oldest_wal_seq(directory: Path) -> int:
    files = wal.segments(directory)
    return int(files[0].stem) if files else 1


def _hash_at(directory: Path, seq: int) -> int | None:
    """The engine's state hash after command `seq`, from the WAL (None: not in it)."""
    if _oldest_wal_seq(directory) > seq:
        return None
    for record in wal.read(directory, seq):
        if record.first_seq <= seq <= record.last_seq:
            return int(record.entries[seq - record.first_seq][4])
        return None
    return None


def _read_records(
    directory: Path, from_seq: int, through: int, limit: int
) -> tuple[bytes, int, int]:
    """Whole records covering `from_seq`.. (at most about `limit` bytes, never past
    `through`), trimmed so that the first one starts at `from_seq`."""
    parts: list[bytes] = []
    size, first, last = 0, 0, 0
    for record in wal.read(directory, from_seq):
        if record.first_seq > through or size >= limit:
            break
        entries = record.entries
        start = record.first_seq
        if start < from_seq:  # a record that straddles the position: send its tail
            entries = entries[from_seq - start :]
            start = from_seq
        if record.last_seq > through:
            entries = entries[: through - start + 1]
        data = wal.encode(start, record.epoch, entries[-1][4], entries)
        parts.append(data)
        size += len(data)
        first = first or start
        last = start + len(entries) - 1
    return b"".join(parts), first, last
