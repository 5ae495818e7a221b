"""Run the project's ledger as a real process (tests, benchmarks and `make up`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from e2e.env.process import ManagedProcess, free_port
from e2e.env.service import ServiceProcess


@dataclass
class LedgerProcess(ServiceProcess):
    """`python -m workloads.ledger` on `dsn`, consuming `events_topic` (when Kafka is given).

    `markets` is LEDGER_MARKETS: `SYMBOL[=matcher host:port],...`."""

    run_dir: Path
    dsn: str
    kafka_bootstrap: str = ""
    events_topic: str = "core.events.v1"
    markets: str = "BTC-USDT"
    group_id: str = "ledger-settlement-v1"
    http_port: int = field(default_factory=free_port)
    admin_tokens: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = "ledger"
    process: ManagedProcess | None = None
    module: ClassVar[str] = "workloads.ledger"

    @property
    def ops_url(self) -> str:
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LEDGER_DB_DSN": self.dsn,
            "LEDGER_HTTP_HOST": "127.0.0.1",
            "LEDGER_HTTP_PORT": str(self.http_port),
            "LEDGER_KAFKA_ENABLED": "true" if self.kafka_bootstrap else "false",
            "LEDGER_KAFKA_BROKERS": self.kafka_bootstrap,
            "LEDGER_KAFKA_TOPIC": self.events_topic,
            "LEDGER_KAFKA_GROUP_ID": self.group_id,
            "LEDGER_MARKETS": self.markets,
            "LEDGER_ADMIN_TOKENS": self.admin_tokens,
            **self.extra_env,
        }
