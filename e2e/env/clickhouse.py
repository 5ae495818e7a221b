"""A throwaway ClickHouse server from Debian's `clickhouse-server` (18.16, the only ClickHouse
server these registries offer), run as a plain process with a small configuration of its
own (Debian's stock one sizes caches for a server with many GiB to spare).

The market history (`workloads/history`) speaks to it over the native TCP protocol; `/ping`
on its HTTP port says it is up.
"""

from __future__ import annotations

import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from e2e.env import apt
from e2e.env.process import ManagedProcess, free_port

DEBIAN_PACKAGES = ("clickhouse-server", "clickhouse-client")
SERVER = Path("/usr/sbin/clickhouse-server")

CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><console>0</console></logger>
    <listen_host>{host}</listen_host>
    <timezone>UTC</timezone>
    <max_connections>256</max_connections>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>64</max_concurrent_queries>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
</yandex>
"""

USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>::/0</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default></default></quotas>
</yandex>
"""


def ensure_installed() -> None:
    apt.ensure(DEBIAN_PACKAGES)


def version() -> str:
    done = subprocess.run(["clickhouse-client", "--version"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return (done.stdout or done.stderr or "ClickHouse ?").strip().splitlines()[0]


@dataclass
class ClickHouseServer:
    """ClickHouse on `host`: native protocol at `tcp_port`, HTTP at `http_port`; data, logs
    and configuration in `run_dir/clickhouse`, pid file in `run_dir`."""

    run_dir: Path
    tcp_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    die_with_parent: bool = True

    def __post_init__(self) -> None:
        self.home = self.run_dir / "clickhouse"
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """The workloads' `*_CLICKHOUSE_URL`: the native protocol, database `default`."""
        return self.database_url("default")

    @property
    def server_url(self) -> str:
        """The server, no database: a venue ConfigMap's `EXCHANGE_CLICKHOUSE_URL` (the operator
        names each venue's own database under it)."""
        return f"clickhouse://default:@{self.host}:{self.tcp_port}"

    def database_url(self, database: str) -> str:
        return f"{self.server_url}/{database}"

    def create_database(self, name: str) -> str:
        """A database of its own (a test's, a venue's); its URL."""
        request = urllib.request.Request(
            f"http://{self.host}:{self.http_port}/",
            data=f"CREATE DATABASE IF NOT EXISTS {name}".encode(),
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
        return self.database_url(name)

    def start(self, timeout: float = 60.0) -> float:
        home = self.home
        for sub in ("data", "tmp", "user_files", "format_schemas", "logs"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "config.xml").write_text(CONFIG.format(host=self.host))
        (home / "users.xml").write_text(USERS)
        argv = [
            str(SERVER), f"--config-file={home / 'config.xml'}", "--",
            f"--http_port={self.http_port}", f"--tcp_port={self.tcp_port}",
            f"--path={home / 'data'}/", f"--tmp_path={home / 'tmp'}/",
            f"--user_files_path={home / 'user_files'}/",
            f"--format_schema_path={home / 'format_schemas'}/",
            f"--logger.log={home / 'logs' / 'server.log'}",
            f"--logger.errorlog={home / 'logs' / 'error.log'}",
        ]  # fmt: skip
        self.process = ManagedProcess(
            "clickhouse", argv, self.run_dir, die_with_parent=self.die_with_parent
        )
        self.process.start()
        return self.process.wait_ready(self._pings, timeout)

    def _pings(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{self.host}:{self.http_port}/ping", timeout=1
            ) as answer:
                return bool(answer.read().strip() == b"Ok.")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
