"""A throwaway PostgreSQL server from Debian's binaries.

Why Debian's `postgresql` package rather than a PyPI wheel of server binaries: it is the
build Debian patches and supports, the same major version operators run on bookworm, and
one `apt-get install` away on every machine this project targets; the PyPI wheels are
unofficial repackagings. The server refuses to run as root, so as root it runs as the
system user `exchange-pg`, created on first use.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from e2e.env import versions
from e2e.env.pgbackup import PgArchive
from e2e.env.process import ManagedProcess, port_open

PG_USER = "exchange-pg"
"""The unprivileged OS user that owns the data directory when the launcher runs as root."""

SUPERUSER = "exchange"
"""The database superuser the tests and services connect as (trust auth on 127.0.0.1)."""


def bin_dir() -> Path:
    return Path(f"/usr/lib/postgresql/{versions.POSTGRES_MAJOR}/bin")


def version() -> str:
    out = subprocess.run(
        [str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
        )
    return PG_USER


@dataclass
class PostgresServer:
    """PostgreSQL listening on `host:port`, data in `run_dir/postgres`."""

    run_dir: Path
    port: int
    host: str = "127.0.0.1"
    extra_listen: tuple[str, ...] = ()
    durable: bool = False
    """Tests run with fsync off (speed, the data is thrown away); `make up` keeps fsync on."""
    trusted_networks: tuple[str, ...] = ()
    """Client networks besides loopback allowed in (trust auth), e.g. the cluster's pods."""
    die_with_parent: bool = True
    """Off when the server outlives its launcher (`make cluster-up`)."""
    archive: PgArchive | None = None
    """Archive every WAL segment to this store (and take base backups there)."""

    def __post_init__(self) -> None:
        self.data_dir = self.run_dir / "postgres"
        self.process: ManagedProcess | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/postgres"

    def start(self, timeout: float = 60.0) -> float:
        user = server_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user)
        self._allow_networks()
        listen = ",".join((self.host, *self.extra_listen))
        argv = [
            str(bin_dir() / "postgres"),
            "-D", str(self.data_dir),
            "-c", f"listen_addresses={listen}",
            "-c", f"port={self.port}",
            "-c", f"unix_socket_directories={self.data_dir}",
            "-c", "max_connections=200",
            "-c", "shared_buffers=128MB",
            "-c", f"fsync={'on' if self.durable else 'off'}",
            "-c", f"full_page_writes={'on' if self.durable or self.archive else 'off'}",
            *(self.archive.archive_settings() if self.archive else ()),
        ]  # fmt: skip
        env = {**os.environ, **(self.archive.env() if self.archive else {})}
        self.process = ManagedProcess(
            "postgres", argv, self.run_dir, env=env, user=user,
            die_with_parent=self.die_with_parent,
        )  # fmt: skip
        self.process.start()
        return self.process.wait_ready(self._accepts_connections, timeout)

    def _initdb(self, user: str | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            shutil.chown(self.data_dir, user, user)
        self.data_dir.chmod(0o700)
        subprocess.run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
            user=user,
        )

    def _allow_networks(self) -> None:
        """Append one trust line per network to pg_hba.conf (idempotent)."""
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        for network in self.trusted_networks:
            line = f"host all all {network} trust"
            if line not in lines:
                lines.append(line)
        hba.write_text("\n".join(lines) + "\n")

    def _accepts_connections(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        probe = subprocess.run(
            [str(bin_dir() / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", SUPERUSER],
            capture_output=True,
            check=False,
        )
        return probe.returncode == 0

    def stop(self) -> None:
        # SIGTERM is PostgreSQL's "smart" shutdown; SIGINT ("fast") does not wait for clients.
        if self.process is not None and self.process.popen is not None:
            if self.process.alive():
                os.kill(self.process.popen.pid, 2)
            self.process.stop()
