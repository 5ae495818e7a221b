"""PostgreSQL's WAL archive and base backups in a real S3 store (SeaweedFS) with
barman-cloud, and a point-in-time restore into a fresh data directory: the restored server
holds what was committed before the target and nothing after it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from e2e.env import postgres
from e2e.env.pgbackup import PgArchive, archive_current_wal, promoted
from e2e.env.process import free_port
from e2e.env.s3 import S3Server

pytestmark = pytest.mark.integration


async def rows(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["note"] for r in await conn.fetch("SELECT note FROM drill ORDER BY id")]
    finally:
        await conn.close()


async def execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_a_point_in_time_restore_holds_what_was_committed_before_the_target_only(
    run_dir: Path, s3_server: S3Server
) -> None:
    archive = PgArchive(s3_server.settings(prefix="pg-pitr-test"))
    server = postgres.PostgresServer(run_dir / "pg-archived", free_port(), archive=archive)
    server.start()
    try:
        await execute(server.dsn, "CREATE TABLE drill (id serial PRIMARY KEY, note text)",
                      "INSERT INTO drill (note) VALUES ('before the backup')")  # fmt: skip
        backup = await asyncio.to_thread(archive.base_backup, server.host, server.port,
                                         postgres.SUPERUSER)  # fmt: skip
        await execute(server.dsn, "INSERT INTO drill (note) VALUES ('after the backup')")
        await asyncio.sleep(1.1)
        target = datetime.now(UTC).isoformat(sep=" ", timespec="seconds")
        await asyncio.sleep(1.1)
        await execute(server.dsn, "INSERT INTO drill (note) VALUES ('after the target')")
        await archive_current_wal(server.dsn)
        assert await rows(server.dsn) == ["before the backup", "after the backup",
                                          "after the target"]  # fmt: skip
    finally:
        server.stop()

    # A fresh directory from the store alone, replayed to the target.
    restored = postgres.PostgresServer(run_dir / "pg-restored", free_port(), archive=archive)
    begin = time.monotonic()
    used = archive.restore(restored.data_dir, target, owner=postgres.server_user())
    assert used == backup
    restored.start(timeout=120)
    try:
        await promoted(restored.dsn, within=30)
        print(f"\npoint-in-time restore: {time.monotonic() - begin:.1f}s")
        assert await rows(restored.dsn) == ["before the backup", "after the backup"]
    finally:
        restored.stop()


def test_a_restore_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "PG_VERSION").write_text("15")
    archive = PgArchive(S3Server(tmp_path).settings())
    with pytest.raises(RuntimeError, match="not empty"):
        archive.restore(tmp_path)
