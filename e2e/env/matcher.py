"""Run the project's matcher as a real process (tests, benchmarks and `make up`)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from e2e.env.process import ManagedProcess, free_port
from e2e.env.service import ServiceProcess
from workloads.common.objectstore import ObjectStoreSettings


def restore(
    archive: ObjectStoreSettings, symbol: str, data_dir: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`python -m workloads.matcher restore --data-dir data_dir *args` for `symbol`, from
    `archive` (for example `--to-seq N`); its stdout is the restore's JSON."""
    return subprocess.run(
        [sys.executable, "-m", "workloads.matcher", "restore", "--data-dir", str(data_dir), *args],
        env={**os.environ, "MATCHER_MARKET_SYMBOL": symbol, **archive.env("MATCHER_ARCHIVE")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@dataclass
class MatcherProcess(ServiceProcess):
    """`python -m workloads.matcher` for one market, its data under `run_dir/matcher-<symbol>`."""

    run_dir: Path
    symbol: str = "BTC-USDT"
    kafka_bootstrap: str = ""
    events_topic: str = "core.events.v1"
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = ""
    process: ManagedProcess | None = None
    module: ClassVar[str] = "workloads.matcher"

    def __post_init__(self) -> None:
        self.name = self.name or f"matcher-{self.symbol}"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / f"matcher-{self.symbol}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MATCHER_MARKET_SYMBOL": self.symbol,
            "MATCHER_DATA_DIR": str(self.data_dir),
            "MATCHER_HOST": "127.0.0.1",
            "MATCHER_GRPC_PORT": str(self.grpc_port),
            "MATCHER_HTTP_PORT": str(self.http_port),
            "MATCHER_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "MATCHER_EVENTS_TOPIC": self.events_topic,
            "MATCHER_INSTANCE": f"local-{self.symbol}",
            **self.extra_env,
        }
