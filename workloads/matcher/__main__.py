"""`python -m workloads.matcher` (console script `exchange-matcher`): one market's matcher.

Start: on an empty volume with an archive configured, restore from the archive first
(`restore.py`); recover (snapshot + WAL tail, hash-checked) while reading the highest seq of the
market already in the events topic; if the recovered seq is below it, refuse to serve
(`refusal.py`): a published seq is never reused. Otherwise take a new epoch, write
EpochStarted, then serve gRPC, the ops HTTP endpoints and the outbox. SIGTERM or SIGINT:
stop accepting, flush the WAL, write a snapshot, let the outbox catch up briefly, exit 0.
If the outbox finds Kafka ahead of the log later (a commit the start-up read could not see
yet), the matcher stops and exits 1; the next start refuses.

`python -m workloads.matcher restore --to-seq N [--data-dir DIR]` restores the market from
its archive up to seq N into DIR for inspection (a snapshot there), and prints what it
restored; it serves nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from aiokafka.errors import KafkaError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import Gauge, Histogram

from contracts.v1 import matcher_pb2, replication_pb2_grpc
from workloads.common import logs, ops_http, tracing
from workloads.common.channels import SERVER_OPTIONS
from workloads.common.objectstore import open_store
from workloads.matcher import engine as e
from workloads.matcher import roles, snapshot, wal
from workloads.matcher.archive import Archiver, ArchiveRefused, check_store
from workloads.matcher.engine import Engine
from workloads.matcher.epoch import FileEpoch
from workloads.matcher.lease import LeaseEpoch, LeaseLost
from workloads.matcher.outbox import EncodedEvents, Outbox, PublishedAhead, WalGap, published_seq
from workloads.matcher.recovery import Recovered, RecoveryError, recover
from workloads.matcher.refusal import StatusOnlyService, StatusServer, engine_status, refuse
from workloads.matcher.replication import Replication
from workloads.matcher.restore import RestoreError, restore
from workloads.matcher.sequencer import Sequencer, tune_runtime
from workloads.matcher.service import SERVICE_NAME, MatcherService, add_to_server
from workloads.matcher.settings import MatcherSettings, SettingsError
from workloads.matcher.standby import Diverged, Standby
from workloads.matcher.tracing import MatcherTracing
from workloads.matcher.wal import WalCorruption

if TYPE_CHECKING:
    from workloads.matcher.lease_api import PodRole

log = logging.getLogger("workloads.matcher")
LOOP_LAG = Histogram(
    "matcher_event_loop_lag_seconds",
    "How late the event loop woke a 20 ms timer: anything that blocks it (a GC pause, a long "
    "batch, the CPU taken by others) delays every reply by as much",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
GC_PAUSE = Histogram(
    "matcher_gc_pause_seconds",
    "Pauses of the cyclic garbage collector, by oldest generation collected",
    ["generation"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)
EPOCH = Gauge("matcher_epoch", "Fencing epoch this process serves under (0: not serving yet)")
LEADER = Gauge(
    "matcher_leader",
    "1 while this process can prove it leads its market (its lease renewed within the renew "
    "deadline; local mode: its epoch taken); a market none of whose processes says 1 has no "
    "leader",
)
VOLUME_FREE = Gauge(
    "matcher_volume_free_bytes", "Bytes free for this process on its data volume (WAL, snapshots)"
)
VOLUME_SIZE = Gauge("matcher_volume_size_bytes", "Size of the data volume in bytes")


def _watch_volume(data_dir: Path) -> None:
    """Report the data volume's space when scraped (a full volume stops every fsync)."""

    def space(field: str) -> float:
        try:
            stat = os.statvfs(data_dir)
        except OSError:
            return float("nan")
        return float(getattr(stat, field) * stat.f_frsize)

    VOLUME_FREE.set_function(lambda: space("f_bavail"))
    VOLUME_SIZE.set_function(lambda: space("f_blocks"))


def _watch_gc() -> None:
    """Time every collection (a gc callback: it runs in whichever thread collects)."""
    started = [0.0]
    pauses = [GC_PAUSE.labels(str(generation)) for generation in range(3)]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(callback)


async def _watch_loop(period: float = 0.02) -> None:
    """Measure how late the loop runs a timer: the floor under every reply's latency."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + period
        await asyncio.sleep(period)
        LOOP_LAG.observe(max(0.0, loop.time() - expected))


async def _published(settings: MatcherSettings) -> int:
    """The highest seq of the market in the events topic; retried until Kafka answers (a
    matcher that cannot tell whether its log is complete does not serve)."""
    if not settings.kafka_bootstrap:
        return 0
    delay = 0.5
    while True:
        try:
            return await published_seq(
                settings.kafka_bootstrap, settings.events_topic, settings.spec.symbol, within=10
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning(
                "cannot read the market's published seq yet; not serving until it is known",
                extra={"why": repr(exc), "retry_s": delay},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class Startup:
    """What `/readyz` says while the matcher is not serving yet (or refuses to)."""

    def __init__(self) -> None:
        self.why = "recovering"
        self.check: Callable[[], tuple[bool, str]] | None = None
        self.background: asyncio.Task[None] | None = None
        """The pod's role label, kept for the process's lifetime."""

    def ready(self) -> tuple[bool, str]:
        return self.check() if self.check is not None else (False, self.why)


def _pod_role(settings: MatcherSettings) -> PodRole | None:
    if not settings.label_pod:
        return None
    from workloads.matcher.lease_api import PodRole, api_client

    return PodRole(
        api_client(os.environ.get("KUBECONFIG") or None), settings.lease_namespace,
        settings.instance,
    )  # fmt: skip


def _fencing(settings: MatcherSettings) -> FileEpoch | LeaseEpoch:
    if settings.epoch_provider == "lease":
        from workloads.matcher.lease_api import lease_epoch

        return lease_epoch(settings)
    return FileEpoch(settings.data_dir / "epoch", settings.instance)


async def serve(settings: MatcherSettings) -> None:
    """The ops endpoints first (liveness while recovering and waiting for the lease), then
    the matcher."""
    startup = Startup()
    runner = await ops_http.serve(
        ops_http.ops_app(startup.ready), settings.host, settings.http_port
    )
    try:
        await _serve(settings, startup)
    finally:
        await runner.cleanup()


async def _published_or_none(settings: MatcherSettings) -> int | None:
    """The market's published seq, or None when Kafka cannot be asked right now."""
    if not settings.kafka_bootstrap:
        return 0
    try:
        return await published_seq(
            settings.kafka_bootstrap, settings.events_topic, settings.spec.symbol, within=3
        )
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("cannot read the market's published seq", extra={"why": repr(exc)})
        return None


async def _settle(
    settings: MatcherSettings, startup: Startup, recovered: Recovered, fencing: LeaseEpoch
) -> tuple[Engine, int, int, int]:
    """Cluster mode: follow as the standby, or wait, until this process may lead; then
    (engine, epoch, previous epoch, snapshot seq). GetStatus answers meanwhile."""
    role = roles.Role()
    labeler = _pod_role(settings)

    def status() -> matcher_pb2.MatcherStatus:
        standby = role.standby
        engine = standby.engine if standby is not None else recovered.engine
        return engine_status(
            engine,
            standby.leader_epoch if standby is not None else recovered.last_epoch,
            last_durable_seq=standby.durable_seq if standby is not None else engine.seq,
            role=role.name,
            refusal=role.why if role.name != "standby" else "",
            standby=fencing.identity,
            standby_in_sync=standby is not None and standby.caught_up,
            replication_lag=(
                max(standby.leader_commit - standby.durable_seq, 0) if standby is not None else 0
            ),
        )

    def refused() -> str:
        return "NOT_LEADER" if role.name in ("standby", "starting") else f"REFUSING: {role.why}"

    def ready() -> tuple[bool, str]:
        """A standby in sync is ready (it could lead at once); the client Service routes
        by the role label, not by readiness."""
        standby = role.standby
        if role.name == "standby" and standby is not None and standby.caught_up:
            return True, f"standby in sync at seq {standby.durable_seq}"
        return False, f"{role.name}: {role.why}" if role.why else role.name

    server = StatusServer(settings, StatusOnlyService(status, refused))
    await server.start()
    startup.check = ready
    labeling = (
        asyncio.create_task(labeler.follow(lambda: role.name), name="role-label")
        if labeler is not None
        else None
    )
    settled = False
    try:
        engine, epoch, last_epoch = await roles.settle(
            fencing,
            recovered.engine,
            recovered.last_epoch,
            lambda: _published_or_none(settings),
            lambda engine: Standby(
                settings.spec,
                settings.data_dir,
                engine,
                fencing.identity,
                settings.sequencer.segment_bytes,
            ),
            settings.peer_address,
            role,
        )
        settled = True
    finally:
        startup.check = None
        await server.stop()
        if labeling is not None and not settled:
            labeling.cancel()
    role.name = "leader"  # the label follows: the client Service routes here from then on
    startup.background = labeling
    latest = snapshot.latest_path(settings.data_dir / "snapshots")
    snapshot_seq = snapshot.header(latest)[0] if latest is not None else 0
    return engine, epoch, last_epoch, snapshot_seq


def _empty_volume(settings: MatcherSettings) -> bool:
    """No snapshot and no WAL record here: a new market, or a volume lost."""
    data_dir = settings.data_dir
    return snapshot.latest_path(data_dir / "snapshots") is None and not any(
        path.stat().st_size for path in wal.segments(data_dir / "wal")
    )


async def _restore_if_empty(settings: MatcherSettings, startup: Startup) -> None:
    """An empty volume with an archive: take the market's state from the archive before
    recovering (nothing archived: a new market, it starts empty)."""
    if settings.archive is None:
        return
    if not _empty_volume(settings):
        why = await check_store(open_store(settings.archive), settings.spec.symbol)
        if why:
            log.warning("the archive's store does not answer: archiving will lag",
                        extra={"why": why})  # fmt: skip
        return
    startup.why = "restoring from the archive"
    store = open_store(settings.archive, timeout=30)
    restored = await asyncio.to_thread(restore, store, settings.spec, settings.data_dir)
    if restored is not None:
        seconds = round(restored.seconds, 3)
        log.info("the empty volume was restored from the archive",
                 extra={"seq": restored.engine.seq, "seconds": seconds})  # fmt: skip


async def _serve(settings: MatcherSettings, startup: Startup) -> None:
    spec = settings.spec
    fencing = _fencing(settings)
    LEADER.set_function(lambda: float(fencing.is_leader()))  # read when scraped
    _watch_volume(settings.data_dir)
    await _restore_if_empty(settings, startup)
    if isinstance(fencing, LeaseEpoch):
        startup.why = "recovering"
        recovered = await asyncio.to_thread(recover, spec, settings.data_dir)
        engine, epoch, last_epoch, snapshot_seq = await _settle(
            settings, startup, recovered, fencing
        )
    else:
        startup.why = "recovering, and reading the market's published seq from Kafka"
        recovered, in_topic = await asyncio.gather(
            asyncio.to_thread(recover, spec, settings.data_dir), _published(settings)
        )
        if recovered.engine.seq < in_topic:
            ahead = PublishedAhead(recovered.engine.seq, in_topic, settings.events_topic)
            startup.why = f"refusing to serve: {ahead}"
            await refuse(settings, recovered.engine, recovered.last_epoch, in_topic, str(ahead))
            return
        startup.why = f"waiting for the leadership ({fencing.identity})"
        epoch = await fencing.acquire(floor=recovered.last_epoch + 1)
        engine, last_epoch, snapshot_seq = (
            recovered.engine, recovered.last_epoch, recovered.snapshot_seq
        )  # fmt: skip
    EPOCH.set(epoch)
    tune_runtime()
    _watch_gc()
    watcher = asyncio.create_task(_watch_loop(), name="loop-lag")
    sequencer = Sequencer(
        engine, settings.data_dir, epoch, fencing, settings.sequencer, snapshot_seq=snapshot_seq
    )
    sequencer.start()
    replication: Replication | None = None
    if isinstance(fencing, LeaseEpoch):
        replication = Replication(
            sequencer,
            settings.data_dir,
            epoch,
            sync_timeout=settings.replication_sync_timeout,
            on_sync_change=fencing.designate,
        )
        replication.start()
    await sequencer.submit([((e.C_EPOCH, epoch, last_epoch, settings.instance), "")])
    log.info(
        "serving",
        extra={
            "symbol": spec.symbol,
            "epoch": epoch,
            "seq": sequencer.engine.seq,
            "recovery_seconds": round(recovered.seconds, 3),
        },
    )

    spans = _tracing(settings)
    outbox: Outbox | None = None
    outbox_task: asyncio.Task[None] | None = None
    encoded: EncodedEvents | None = None
    if settings.kafka_bootstrap:
        encoded = EncodedEvents()  # replies serialize the events once, the outbox reuses them
        outbox = Outbox(
            spec,
            settings.data_dir / "wal",
            settings.kafka_bootstrap,
            settings.events_topic,
            durable_seq=lambda: sequencer.committed_seq,  # replicated, when a standby is in sync
            durable_changed=sequencer.durable_changed,
            may_connect=fencing.is_leader,  # a deposed leader must not fence the new one
            encoded=encoded,
            max_batch_commands=settings.outbox_max_commands,
            linger=settings.outbox_linger,
            tracing=spans,
        )
        outbox_task = asyncio.create_task(outbox.run(), name="outbox")

    def published() -> int:
        return outbox.published_seq if outbox is not None else 0

    archiver: Archiver | None = None
    archive_task: asyncio.Task[None] | None = None
    if settings.archive is not None:
        archiver = Archiver(
            open_store(settings.archive),
            spec.symbol,
            settings.data_dir,
            sequencer.seal,
            keep_snapshots=settings.archive_keep_snapshots,
            seal_after=settings.archive_seal_after,
        )
        archive_task = asyncio.create_task(archiver.run(), name="archive")

    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", 8 << 20), *SERVER_OPTIONS]
    )
    service = MatcherService(spec, sequencer, published, encoded)
    service.archiver = archiver
    service.tracing = spans
    add_to_server(service, server)
    if replication is not None:
        service.replication = replication
        replication_pb2_grpc.add_ReplicationServicer_to_server(replication, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    def ready() -> tuple[bool, str]:
        if sequencer.failed is not None:
            return False, f"WAL failed: {sequencer.failed}"
        if not fencing.is_leader():
            return False, "not the leader"
        return True, f"epoch {epoch}, seq {sequencer.engine.seq}"

    startup.check = ready
    print(
        f"matcher {spec.symbol} serving gRPC on {settings.host}:{settings.grpc_port}, "
        f"HTTP on {settings.host}:{settings.http_port}, epoch {epoch}",
        file=sys.stderr,
        flush=True,
    )

    async def compact_periodically() -> None:
        while True:
            await asyncio.sleep(30)
            keep = published() if outbox is not None else sequencer.durable_seq
            if replication is not None and replication.needed_from is not None:
                keep = min(keep, replication.needed_from - 1)  # a standby catching up
            if archiver is not None and (unarchived := archiver.unarchived_from()) is not None:
                keep = min(keep, unarchived - 1)  # never prune what is not archived
            removed = await sequencer.compact(keep)
            if removed:
                log.info("WAL segments removed", extra={"count": removed})

    compactor = asyncio.create_task(compact_periodically(), name="wal-compactor")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failures: list[BaseException] = []

    def ended(what: str) -> Callable[[asyncio.Task[None]], None]:
        def callback(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and (failure := task.exception()) is not None:
                log.critical(f"{what} failed: stopping", extra={"why": str(failure)})
                failures.append(failure)
                stop.set()

        return callback

    if outbox_task is not None:
        outbox_task.add_done_callback(ended("outbox"))
    keeper: asyncio.Task[None] | None = None
    if isinstance(fencing, LeaseEpoch):
        keeper = asyncio.create_task(fencing.keep(), name="lease")
        keeper.add_done_callback(ended("leadership"))
    await stop.wait()

    log.info("stopping: no new commands, flushing, snapshotting")
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    stopping = asyncio.create_task(server.stop(grace=5))  # no new RPCs from here on
    if replication is not None:
        # The commands in flight commit (on the standby too, while it is in sync); then its
        # stream ends, and the standby has everything this leader acknowledged.
        await asyncio.sleep(0.05)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sequencer.durable(sequencer.engine.seq), timeout=3)
        await replication.stop()
    await stopping
    compactor.cancel()
    watcher.cancel()
    await sequencer.durable(sequencer.engine.seq)
    if outbox is not None and outbox_task is not None and not failures:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_drained(outbox), timeout=5)
        await outbox.stop()
        outbox_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await outbox_task
    if archiver is not None and archive_task is not None:
        archive_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await archive_task
        with contextlib.suppress(TimeoutError):  # the open segment too: a restore finds all
            await asyncio.wait_for(archiver.drain(), timeout=5)
    if keeper is not None and isinstance(fencing, LeaseEpoch):
        keeper.cancel()
        await fencing.release()  # after the last publish: the standby may lead at once
    await sequencer.snapshot()  # this pod's own restart recovers faster
    await sequencer.close()
    if spans is not None:
        await asyncio.to_thread(spans.shutdown)  # exports what is queued
    log.info("stopped", extra={"seq": sequencer.engine.seq})
    if failures:
        raise failures[0]


def _tracing(settings: MatcherSettings) -> MatcherTracing | None:
    """Spans for sampled orders' commands, when MATCHER_OTEL_ENDPOINT names a collector."""
    if not settings.otel.endpoint:
        return None
    symbol = settings.spec.symbol
    provider = tracing.provider(
        settings.otel,
        attributes={"exchange.market": symbol, "service.instance.id": settings.instance},
    )
    return MatcherTracing(provider, symbol)


async def _drained(outbox: Outbox) -> None:
    # The outbox has no progress event; this bounded poll runs once, at shutdown.
    while outbox.lag > 0 and not outbox.fenced:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def restore_command(settings: MatcherSettings, argv: list[str]) -> None:
    """`restore --to-seq N [--data-dir DIR]`: the market from its archive, for inspection."""
    parser = argparse.ArgumentParser(prog="python -m workloads.matcher restore")
    parser.add_argument("--to-seq", type=int, default=None, help="the last seq to restore")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the snapshot goes here (default: <data dir>-restored)")  # fmt: skip
    args = parser.parse_args(argv)
    if settings.archive is None:
        sys.exit("matcher restore: MATCHER_ARCHIVE_ENDPOINT is not set")
    target = args.data_dir or settings.data_dir.with_name(settings.data_dir.name + "-restored")
    try:
        restored = restore(open_store(settings.archive, timeout=30), settings.spec, target,
                           args.to_seq)  # fmt: skip
    except RestoreError as exc:
        sys.exit(f"matcher restore: {exc}")
    if restored is None:
        sys.exit(f"matcher restore: nothing is archived for {settings.spec.symbol}")
    engine = restored.engine
    print(json.dumps({
        "symbol": settings.spec.symbol, "seq": engine.seq,
        "state_hash": f"{engine.state_hash & ((1 << 64) - 1):016x}",
        "snapshot_seq": restored.snapshot_seq, "segments": restored.segments,
        "seconds": round(restored.seconds, 3), "data_dir": str(target),
    }))  # fmt: skip


def main() -> None:
    logs.configure("matcher")
    try:
        settings = MatcherSettings.from_env()
    except SettingsError as exc:
        sys.exit(f"matcher: invalid setting: {exc}")
    if sys.argv[1:2] == ["restore"]:
        restore_command(settings, sys.argv[2:])
        return
    try:
        import uvloop

        uvloop.run(serve(settings))
    except (RecoveryError, WalCorruption, RestoreError, ArchiveRefused) as exc:
        log.critical("refusing to start", extra={"why": str(exc)})
        sys.exit(f"matcher: refusing to start: {exc}")
    except (PublishedAhead, WalGap, LeaseLost, Diverged) as exc:
        sys.exit(f"matcher: stopped: {exc}")


if __name__ == "__main__":
    main()
