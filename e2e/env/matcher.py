"""Run the project's matcher as a real process (tests, benchmarks and `make up`)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from e2e.env.process import ManagedProcess, free_port


@dataclass
class MatcherProcess:
    """`python -m workloads.matcher` for one market, its data under `run_dir/matcher-<symbol>`."""

    run_dir: Path
    symbol: str = "BTC-USDT"
    kafka_bootstrap: str = ""
    events_topic: str = "core.events.v1"
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: ManagedProcess | None = None

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

    def start(self, timeout: float = 60.0) -> float:
        self.process = ManagedProcess(
            f"matcher-{self.symbol}",
            [sys.executable, "-m", "workloads.matcher"],
            self.run_dir,
            env=self.env(),
        )
        self.process.start()
        return self.process.wait_ready(self.ready, timeout)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/readyz", timeout=1
            ) as r:
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
