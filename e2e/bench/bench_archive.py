"""Archive benchmarks (`make bench BENCH=archive`), each against a real S3 store (SeaweedFS).

archive.lag: a matcher process archiving 4 MiB segments while a separate load generator
drives it with batched orders (about 50k commands/s here); seconds from each segment's seal
(its last write) until its upload was verified, from the matcher's own "archived" log
lines (p50, p99, max over the run's segments). Target: p99 <= 5 s.

archive.restore: 1,000,000 commands written as a matcher would (WAL segments of 64 MiB and
a snapshot half-way), archived, then restored from the store alone onto an empty directory,
every command hash-checked: seconds for the restore. Target <= 15 s.

archive.pitr: a PostgreSQL with its WAL archived by barman-cloud, a base backup, then a
pgbench write load; seconds to restore to a point in time after the load (the base backup
downloaded into a fresh directory, the archived WAL replayed, the server promoted).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from e2e.bench import percentile
from e2e.bench.bench_matcher import bench_spec, generate, write_log
from e2e.env import postgres
from e2e.env.matcher import MatcherProcess
from e2e.env.pgbackup import PgArchive, archive_current_wal, promoted
from e2e.env.process import free_port
from e2e.env.s3 import S3Server
from workloads.common.objectstore import open_store
from workloads.matcher import restore, snapshot
from workloads.matcher.archive import Archiver

BENCHMARKS: dict[str, Callable[[], dict[str, object]]] = {}


def _tmp() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR"))


# ---------------------------------------------------------------------- archive.lag


def lag_benchmark(seconds: float = 15.0) -> dict[str, object]:
    with _tmp() as tmp:
        store = S3Server(Path(tmp))
        store.start()
        try:
            archive = store.settings(prefix="bench-lag")
            matcher = MatcherProcess(Path(tmp), kafka_bootstrap="", extra_env={
                **archive.env("MATCHER_ARCHIVE"), "MATCHER_WAL_SEGMENT_BYTES": str(4 << 20),
            })  # fmt: skip
            matcher.start()
            try:
                load = subprocess.run(
                    [sys.executable, "-m", "e2e.bench.matcher_loadgen", matcher.target,
                     "batched", str(seconds)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                figures: dict[str, Any] = json.loads(load.stdout)
                time.sleep(3)  # the last sealed segments' uploads
            finally:
                matcher.stop()
            assert matcher.process is not None
            delays = [
                float(line["sealed_for_s"])
                for line in map(_json, matcher.process.log_path.read_text().splitlines())
                if line.get("msg") == "archived" and "sealed_for_s" in line
            ]
        finally:
            store.stop()
    return {
        "commands_per_s": figures.get("batched_orders_per_s"),
        "segments": len(delays),
        "p50_seconds": round(percentile(delays, 0.5), 3),
        "p99_seconds": round(percentile(delays, 0.99), 3),
        "max_seconds": round(max(delays), 3),
        "target_p99_seconds": 5,
    }


def _json(line: str) -> dict[str, Any]:
    try:
        found = json.loads(line)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


BENCHMARKS["archive.lag"] = lag_benchmark


# ---------------------------------------------------------------------- archive.restore


def restore_benchmark(count: int = 1_000_000) -> dict[str, object]:
    """`seconds`: with the snapshot half-way in the archive (as periodic snapshots leave
    it); `wal_only_seconds`: the same archive without any snapshot (every command replayed)."""
    commands = generate(count)
    spec = bench_spec()
    figures: dict[str, object] = {"commands": count}
    with _tmp() as tmp:
        data_dir = Path(tmp) / "source"
        final_hash, half = write_log(data_dir, commands)
        store = S3Server(Path(tmp))
        store.start()
        try:
            for prefix, with_snapshot in (("wal-only", False), ("with-snapshot", True)):
                if with_snapshot:
                    snapshot.write(data_dir / "snapshots", *half)
                settings = store.settings(prefix=prefix)
                archiver = Archiver(open_store(settings), spec.symbol, data_dir,
                                    seal=lambda: asyncio.sleep(0, False))  # fmt: skip
                begin = time.monotonic()
                asyncio.run(archiver.archive_once())
                uploaded = time.monotonic() - begin
                assert archiver.last_seq == count and not archiver.last_error, archiver.status()
                target = Path(tmp) / f"restored-{prefix}"
                restored = restore.restore(open_store(settings, timeout=60), spec, target)
                assert restored is not None and restored.engine.state_hash == final_hash
                if with_snapshot:
                    figures.update(seconds=round(restored.seconds, 2),
                                   snapshot_seq=restored.snapshot_seq,
                                   segments=restored.segments,
                                   upload_seconds=round(uploaded, 2))  # fmt: skip
                else:
                    figures["wal_only_seconds"] = round(restored.seconds, 2)
        finally:
            store.stop()
    return {**figures, "target_seconds": 15}


BENCHMARKS["archive.restore"] = restore_benchmark


# ---------------------------------------------------------------------- archive.pitr


def pitr_benchmark(load_seconds: int = 20) -> dict[str, object]:
    with _tmp() as tmp:
        run_dir = Path(tmp)
        os.chmod(run_dir, 0o755)
        store = S3Server(run_dir)
        store.start()
        try:
            archive = PgArchive(store.settings(prefix="bench-pitr"))
            pg = postgres.PostgresServer(run_dir / "source", free_port(), archive=archive)
            pg.start()
            try:
                pgbench = [str(postgres.bin_dir() / "pgbench"), "-h", pg.host, "-p",
                           str(pg.port), "-U", postgres.SUPERUSER, "postgres"]  # fmt: skip
                subprocess.run([*pgbench[:-1], "-i", "-s", "10", "postgres"], check=True,
                               capture_output=True)  # fmt: skip
                archive.base_backup(pg.host, pg.port, postgres.SUPERUSER)
                subprocess.run([*pgbench[:-1], "-c", "4", "-T", str(load_seconds), "postgres"],
                               check=True, capture_output=True)  # fmt: skip
                target = datetime.now(UTC).isoformat(sep=" ", timespec="seconds")
                time.sleep(1.1)
                size_mb, wal_segments = asyncio.run(_switch_and_wait(pg.dsn))
            finally:
                pg.stop()
            restored = postgres.PostgresServer(run_dir / "restored", free_port(), archive=archive)
            begin = time.monotonic()
            archive.restore(restored.data_dir, target, owner=postgres.server_user())
            downloaded = time.monotonic() - begin
            restored.start(timeout=600)
            try:
                asyncio.run(promoted(restored.dsn, within=600))
                seconds = time.monotonic() - begin
            finally:
                restored.stop()
        finally:
            store.stop()
    return {
        "seconds": round(seconds, 2),
        "base_backup_download_seconds": round(downloaded, 2),
        "database_mb": size_mb,
        "wal_segments_archived": wal_segments,
        "load_seconds": load_seconds,
    }


async def _switch_and_wait(dsn: str) -> tuple[int, int]:
    """(database MB, WAL segments archived so far), once everything is archived."""
    await archive_current_wal(dsn, within=60)
    conn = await asyncpg.connect(dsn)
    try:
        size = await conn.fetchval("SELECT pg_database_size('postgres') / 1048576")
        archived = await conn.fetchval("SELECT archived_count FROM pg_stat_archiver")
        return int(size), int(archived)
    finally:
        await conn.close()


BENCHMARKS["archive.pitr"] = pitr_benchmark
