"""The hot standby's side of WAL replication: follow the leader's `Replication.Follow` stream
into this instance's own engine and WAL.

Each record is applied command by command, and the engine's state hash after each command
must equal the one the leader recorded: the matcher is deterministic, so anything else means
the two logs or engines differ, and the standby stops with an error naming the seq (it never
goes on with a state that is not the leader's). The records are then written, byte for byte,
to this instance's WAL, fsynced, and acknowledged. Told to start over (SNAPSHOT), the standby
moves its data aside (`discarded/<time>/`, kept for inspection: a former leader's tail that
was never replicated is there) and starts from the leader's snapshot.

It counts as caught up (and may be promoted) only while its durable log reaches the leader's
commit line as the leader last reported it: everything a trader saw acknowledged is then here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from prometheus_client import Gauge

from contracts.v1 import replication_pb2 as r
from contracts.v1 import replication_pb2_grpc
from workloads.common.channels import matcher_channel
from workloads.matcher import snapshot, wal
from workloads.matcher.engine import Engine
from workloads.matcher.spec import MarketSpec

log = logging.getLogger(__name__)

SILENCE_S = 2.0
"""A leader that sends nothing this long (it sends a heartbeat every 0.2 s) is gone or
frozen: the standby stops following it and looks at the Lease. It also bounds a connection
to a frozen process, which the kernel accepts but nobody answers."""

STANDBY_DURABLE = Gauge("matcher_standby_durable_seq", "Last command this standby has fsynced")
STANDBY_BEHIND = Gauge(
    "matcher_standby_behind_records", "Leader's commit line minus this standby's durable seq"
)


class Diverged(RuntimeError):
    """A record does not replay to the state the leader recorded: the standby stops."""


class Standby:
    def __init__(
        self, spec: MarketSpec, data_dir: Path, engine: Engine, identity: str,
        segment_bytes: int = 64 << 20,
    ) -> None:  # fmt: skip
        self.spec = spec
        self.data_dir = data_dir
        self.engine = engine
        self.identity = identity
        self.segment_bytes = segment_bytes
        self.durable_seq = engine.seq
        self.leader_commit = 0
        self.leader_epoch = 0
        self.followed = False
        """Whether it has heard from a leader since it started: only then does it know a
        commit line to be caught up to."""
        self.writer: wal.WalWriter | None = None
        STANDBY_DURABLE.set_function(lambda: self.durable_seq)
        STANDBY_BEHIND.set_function(lambda: max(self.leader_commit - self.durable_seq, 0))

    @property
    def caught_up(self) -> bool:
        return self.followed and self.durable_seq >= self.leader_commit

    async def follow(self, target: str) -> None:
        """One stream from the leader at `target` until it ends (returns) or the records do
        not replay (raises `Diverged`)."""
        acks: asyncio.Queue[int | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[r.FollowerMessage]:
            engine = self.engine
            yield r.FollowerMessage(
                hello=r.Hello(
                    identity=self.identity, symbol=self.spec.symbol, last_seq=engine.seq,
                    last_hash=engine.state_hash & ((1 << 64) - 1),
                )
            )  # fmt: skip
            while (durable := await acks.get()) is not None:
                yield r.FollowerMessage(ack=r.Ack(durable_seq=durable))

        writes: asyncio.Queue[tuple[bytes, int, int] | None] = asyncio.Queue()
        syncer = asyncio.create_task(self._sync(writes, acks), name="standby-wal")
        async with matcher_channel(target) as channel:
            stream = replication_pb2_grpc.ReplicationStub(channel).Follow(requests())
            snapshot_parts: list[bytes] = []
            try:
                while not syncer.done():
                    try:
                        async with asyncio.timeout(SILENCE_S):
                            message = await stream.read()
                    except TimeoutError:
                        log.warning("the leader went silent", extra={"leader": target})
                        break
                    if message is grpc.aio.EOF:
                        break
                    kind = message.WhichOneof("body")
                    if kind == "start":
                        await self._start(message.start, snapshot_parts)
                        acks.put_nowait(self.durable_seq)  # what it holds already counts
                    elif kind == "snapshot":
                        snapshot_parts.append(message.snapshot.data)
                        if message.snapshot.last:
                            await self._install(b"".join(snapshot_parts))
                            snapshot_parts.clear()
                            acks.put_nowait(self.durable_seq)
                    elif kind == "records":
                        records = message.records
                        if records.first_seq != self.engine.seq + 1:
                            raise Diverged(
                                f"records start at seq {records.first_seq}, the engine is at "
                                f"{self.engine.seq}"
                            )
                        # The fsync starts first and overlaps the replay. Records that turn
                        # out not to replay are on disk then: `Diverged` moves that log aside.
                        writes.put_nowait((records.data, records.first_seq, records.last_seq))
                        await asyncio.sleep(0)  # the writer takes them to its thread now
                        self._replay(records.data, records.first_seq, records.last_seq)
                        self._heard(records.commit_seq)
                    elif kind == "heartbeat":
                        self._heard(message.heartbeat.commit_seq)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "the leader's stream ended",
                    extra={"leader": target, "why": f"{exc.code().name}: {exc.details()}"},
                )
            finally:
                writes.put_nowait(None)
                await asyncio.wait([syncer])  # what was replayed is on disk before anything else
                acks.put_nowait(None)  # ends the requests, so that gRPC's reader of them ends
                stream.cancel()
                self._close_writer()
        if (failure := syncer.exception()) is not None:
            raise failure  # the engine is ahead of the disk: this process must not lead

    async def _sync(
        self, writes: asyncio.Queue[tuple[bytes, int, int] | None], acks: asyncio.Queue[int | None]
    ) -> None:
        """The standby's group commit: records replayed on the loop are appended and fsynced
        in a worker thread, all that arrived meanwhile with one fsync, so replaying the next
        records overlaps the fsync of the last; each fsync acknowledges the seq it reached."""
        while True:
            batch = [await writes.get()]
            while not writes.empty():
                batch.append(writes.get_nowait())
            records = [item for item in batch if item is not None]
            if records:
                writer = self.writer
                assert writer is not None
                await asyncio.to_thread(_write_all_and_sync, writer, records)
                self.durable_seq = records[-1][2]
                acks.put_nowait(self.durable_seq)
            if None in batch:
                return

    def _heard(self, commit_seq: int) -> None:
        self.followed = True
        self.leader_commit = max(self.leader_commit, commit_seq)

    async def _start(self, start: r.Start, parts: list[bytes]) -> None:
        self.leader_epoch = start.epoch
        parts.clear()
        self._close_writer()
        if start.mode == r.Start.SNAPSHOT:
            log.warning(
                "starting over from the leader's snapshot",
                extra={"snapshot_seq": start.snapshot_seq, "reason": start.reason,
                       "our_seq": self.engine.seq},
            )  # fmt: skip
            await asyncio.to_thread(self._discard)
            self.engine = Engine(self.spec)
            self.durable_seq = 0
            if start.snapshot_seq == 0:
                self._open_writer()
        else:
            log.info("following the leader", extra={"from_seq": self.engine.seq + 1})
            self._open_writer()

    def _discard(self) -> None:
        """Move the WAL and snapshots aside (the newest discarded set only is kept)."""
        aside = self.data_dir / "discarded"
        shutil.rmtree(aside, ignore_errors=True)
        target = aside / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target.mkdir(parents=True)
        for name in ("wal", "snapshots"):
            if (self.data_dir / name).exists():
                (self.data_dir / name).rename(target / name)
        wal.fsync_dir(self.data_dir)

    async def _install(self, data: bytes) -> None:
        directory = self.data_dir / "snapshots"
        parsed = snapshot.parse(data, directory)
        if parsed is None:
            raise Diverged("the leader's snapshot is damaged")
        engine = Engine.from_state(self.spec, parsed.state)
        if engine.state_hash != parsed.state_hash or engine.seq != parsed.seq:
            raise Diverged(f"the leader's snapshot at seq {parsed.seq} does not match its header")

        def write() -> None:
            temporary = snapshot.temporary_path(directory, parsed.seq)
            temporary.write_bytes(data)
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            snapshot.publish(temporary)

        await asyncio.to_thread(write)
        self.engine = engine
        self.durable_seq = engine.seq
        self._open_writer()
        log.info("installed the leader's snapshot", extra={"seq": engine.seq})

    def _replay(self, data: bytes, first_seq: int, last_seq: int) -> None:
        """Execute the records' commands, checking the leader's hash after each."""
        engine = self.engine
        if first_seq != engine.seq + 1:
            raise Diverged(f"records start at seq {first_seq}, the engine is at {engine.seq}")
        execute = engine.execute
        for _, record in wal.scan(Path("<stream>"), data, last_segment=False):
            if record is None:
                raise Diverged(f"a torn record in the stream at seq {engine.seq + 1}")
            seq = record.first_seq
            for ts, cmd, _events, _correlation, recorded in record.entries:
                execute(cmd, seq, ts)
                if engine.state_hash != recorded:
                    raise Diverged(
                        f"state hash mismatch at seq {seq}: the leader's record does not "
                        "replay here (a different engine, or a damaged log)"
                    )
                seq += 1
        if engine.seq != last_seq:
            raise Diverged(f"records through {last_seq} brought the engine to {engine.seq}")

    def _open_writer(self) -> None:
        self.writer = wal.WalWriter(self.data_dir / "wal", self.engine.seq + 1, self.segment_bytes)

    def _close_writer(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError):
                self.writer.close()
            self.writer = None


def _write_all_and_sync(writer: wal.WalWriter, records: list[tuple[bytes, int, int]]) -> None:
    for data, first_seq, _ in records:
        writer.write(data, first_seq)
    writer.sync()
