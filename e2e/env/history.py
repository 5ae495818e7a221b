"""Run the project's history writer as a real process (tests, benchmarks and `make up`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from e2e.env.process import ManagedProcess, free_port
from e2e.env.service import ServiceProcess


@dataclass
class HistoryProcess(ServiceProcess):
    """`python -m workloads.history`: `events_topic` into the ClickHouse at `clickhouse_url`."""

    run_dir: Path
    clickhouse_url: str
    kafka_bootstrap: str
    events_topic: str = "core.events.v1"
    http_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = "history"
    process: ManagedProcess | None = None
    module: ClassVar[str] = "workloads.history"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HISTORY_CLICKHOUSE_URL": self.clickhouse_url,
            "HISTORY_KAFKA_BROKERS": self.kafka_bootstrap,
            "HISTORY_KAFKA_TOPIC": self.events_topic,
            "HISTORY_HTTP_HOST": "127.0.0.1",
            "HISTORY_HTTP_PORT": str(self.http_port),
            **self.extra_env,
        }
