"""Run the project's ledger as a real process (tests, benchmarks and `make up`)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from e2e.env.process import ManagedProcess, free_port


@dataclass
class LedgerProcess:
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

    def start(self, timeout: float = 60.0) -> float:
        self.process = ManagedProcess(
            self.name, [sys.executable, "-m", "workloads.ledger"], self.run_dir, env=self.env()
        )
        self.process.start()
        return self.process.wait_ready(self.ready, timeout)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                return bool(json.loads(r.read())["ready"])
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)

    def kill(self) -> None:
        """kill -9: the crash drill."""
        if self.process is not None:
            self.process.kill()
