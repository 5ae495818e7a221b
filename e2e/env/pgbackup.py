"""PostgreSQL's backups in the S3 store, with barman-cloud (Debian's `barman-cli-cloud`).

Why barman-cloud: it is what CloudNativePG runs for the same job (WAL archiving from
`archive_command`, base backups over a normal connection, restore of a backup plus WAL
replay to a point in time), it speaks plain HTTP to any S3-compatible store and creates its
bucket prefix itself; pgBackRest needs TLS with a matching certificate name for a
non-AWS endpoint. On any PostgreSQL, the same commands work; this module is how `make up`,
the local cluster's host services and the tests use them.

- `archive_settings`: the server settings that archive every WAL segment
  (`barman-cloud-wal-archive`), with `archive_timeout` bounding how old the newest
  unarchived change can be (the recovery point).
- `base_backup`: a base backup (`barman-cloud-backup`) of the running server.
- `restore`: a fresh data directory from the newest base backup before `target_time` (or
  the newest one), set up to replay the archived WAL up to `target_time` (or all of it)
  and then promote; `PostgresServer.start` on that directory runs the recovery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from e2e.env import apt
from workloads.common.objectstore import ObjectStoreSettings

DEBIAN_PACKAGES = ("barman-cli-cloud",)
SERVER_NAME = "exchange"
"""The name barman files the server's backups and WAL under, inside the prefix."""


def ensure_installed() -> None:
    apt.ensure(DEBIAN_PACKAGES)


@dataclass(frozen=True)
class PgArchive:
    """Where one PostgreSQL server's WAL and base backups go."""

    store: ObjectStoreSettings
    server: str = SERVER_NAME

    @property
    def url(self) -> str:
        prefix = f"/{self.store.prefix}" if self.store.prefix else ""
        return f"s3://{self.store.bucket}{prefix}"

    def env(self) -> dict[str, str]:
        """The credentials barman's S3 client (boto3) reads from the environment."""
        return {
            "AWS_ACCESS_KEY_ID": self.store.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.store.secret_access_key,
            "AWS_DEFAULT_REGION": self.store.region,
        }

    def _argv(self, command: str, *args: str) -> list[str]:
        return [command, "--endpoint-url", self.store.endpoint, self.url, self.server, *args]

    def archive_settings(self, archive_timeout: int = 60) -> list[str]:
        """`postgres -c` settings that ship each completed WAL segment to the store."""
        command = " ".join(self._argv("barman-cloud-wal-archive", "%p"))
        return [
            "-c", "wal_level=replica",
            "-c", "archive_mode=on",
            "-c", f"archive_command={command}",
            "-c", f"archive_timeout={archive_timeout}",
        ]  # fmt: skip

    def run(self, command: str, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            self._argv(command, *args),
            env={**os.environ, **self.env()},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def base_backup(self, host: str, port: int, user: str) -> str:
        """A base backup of the server at host:port; its backup id. The backup's checkpoint
        is immediate: a spread one waits out most of `checkpoint_timeout` on a busy server."""
        before = set(self.backup_ids())
        self.run("barman-cloud-backup", "--immediate-checkpoint", "--host", host, "--port",
                 str(port), "--user", user, "--dbname", "postgres")  # fmt: skip
        (new,) = set(self.backup_ids()) - before
        return new

    def backups(self) -> list[dict[str, str]]:
        """The base backups in the store, oldest first (barman's JSON: backup_id,
        begin_time, end_time, ...)."""
        out = self.run("barman-cloud-backup-list", "--format", "json")
        found: list[dict[str, str]] = json.loads(out)["backups_list"]
        return found

    def backup_ids(self) -> list[str]:
        return [b["backup_id"] for b in self.backups()]

    def restore(
        self, data_dir: Path, target_time: str | None = None, owner: str | None = None
    ) -> str:
        """A data directory at `target_time` (a timestamp PostgreSQL parses, with its time
        zone), or at the end of the archive: the newest base backup before it, and the
        recovery settings that replay the archived WAL and promote. Start the server on it
        to run the recovery (`PostgresServer.start` waits for it to accept connections;
        poll `pg_is_in_recovery()` for its end). `owner`: the OS user the server runs as
        (`postgres.server_user()`). Returns the backup id used."""
        if data_dir.exists() and any(data_dir.iterdir()):
            raise RuntimeError(f"{data_dir} is not empty: a restore needs a fresh directory")
        data_dir.mkdir(parents=True, exist_ok=True)
        backups = self.backups()
        if target_time:
            target = datetime.fromisoformat(target_time)
            backups = [b for b in backups if _when(b["end_time"]) < target]
        if not backups:
            raise RuntimeError(
                f"no base backup in {self.url}/{self.server}"
                + (f" that ends before {target_time}" if target_time else "")
            )
        chosen = backups[-1]["backup_id"]
        self.run("barman-cloud-restore", chosen, str(data_dir))
        restore_command = " ".join(self._argv("barman-cloud-wal-restore", "%f", "%p"))
        recovery = [f"restore_command = '{restore_command}'", "recovery_target_action = 'promote'"]
        if target_time:
            recovery.append(f"recovery_target_time = '{target_time}'")
        with open(data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write("\n".join(recovery) + "\n")
        (data_dir / "recovery.signal").touch()
        if owner is not None:
            for path in (data_dir, *data_dir.rglob("*")):
                shutil.chown(path, owner, owner)
        data_dir.chmod(0o700)
        return chosen


def _when(barman_time: str) -> datetime:
    """barman's JSON times, e.g. "Mon Dec  7 18:57:03 2026" (the server's local time, UTC
    here) or ISO 8601 in newer versions."""
    try:
        found = datetime.fromisoformat(barman_time)
    except ValueError:
        found = datetime.strptime(" ".join(barman_time.split()), "%a %b %d %H:%M:%S %Y")
    return found if found.tzinfo else found.astimezone()


async def archive_current_wal(dsn: str, within: float = 30.0) -> str:
    """Close the server's current WAL segment (`pg_switch_wal`) and wait until its archiver
    has shipped it: everything committed so far is then in the store. Its file name."""
    conn = await asyncpg.connect(dsn)
    try:
        segment: str = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            last = await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
            if last is not None and last >= segment:
                return segment
            await asyncio.sleep(0.1)
        failed = await conn.fetchrow("SELECT * FROM pg_stat_archiver")
        raise RuntimeError(f"WAL {segment} not archived within {within:.0f}s: {dict(failed or {})}")
    finally:
        await conn.close()


async def promoted(dsn: str, within: float = 60.0, every: float = 0.05) -> None:
    """Wait until a restored server has replayed its WAL and promoted itself
    (`pg_is_in_recovery()` false): `PostgresServer.start` returns once it accepts
    connections, which is earlier."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within
        while await conn.fetchval("SELECT pg_is_in_recovery()"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"still in recovery after {within:.0f}s")
            await asyncio.sleep(every)
    finally:
        await conn.close()


class BackupSchedule:
    """A base backup now and then every `every` seconds, in a thread (`make up`): with the
    WAL archive, a restore needs the newest backup plus the WAL since."""

    def __init__(self, archive: PgArchive, host: str, port: int, user: str, every: float) -> None:
        self.archive, self.every = archive, every
        self._where = (host, port, user)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-base-backups", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                backup = self.archive.base_backup(*self._where)
                logging.getLogger(__name__).info("base backup %s in %s", backup, self.archive.url)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                logging.getLogger(__name__).warning("base backup failed: %s", exc)
            self._stop.wait(self.every)
