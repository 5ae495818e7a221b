"""Run the project's gateway as a real process (tests, benchmarks and `make up`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from e2e.env.process import ManagedProcess, free_port
from e2e.env.service import ServiceProcess


@dataclass
class GatewayProcess(ServiceProcess):
    """`python -m workloads.gateway` on `dsn` (its own `schema`), reading `events_topic`.

    `markets` is EDGE_MARKETS (JSON, see workloads/gateway/markets.py)."""

    run_dir: Path
    dsn: str
    markets: str
    kafka_bootstrap: str = ""
    events_topic: str = "core.events.v1"
    schema: str = "gateway"
    http_port: int = field(default_factory=free_port)
    api_secrets: str = ""
    name: str = "gateway"
    extra_env: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = None
    module: ClassVar[str] = "workloads.gateway"

    @property
    def ops_url(self) -> str:
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "EDGE_HTTP_HOST": "127.0.0.1",
            "EDGE_HTTP_PORT": str(self.http_port),
            "EDGE_INSTANCE": self.name,
            "EDGE_DB_DSN": self.dsn,
            "EDGE_DB_SCHEMA": self.schema,
            "EDGE_MARKETS": self.markets,
            "EDGE_KAFKA_BROKERS": self.kafka_bootstrap,
            "EDGE_KAFKA_TOPIC": self.events_topic,
            "EDGE_API_SECRETS": self.api_secrets,
            **self.extra_env,
        }

    @property
    def pid(self) -> int | None:
        if self.process is None or self.process.popen is None:
            return None
        return self.process.popen.pid

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
