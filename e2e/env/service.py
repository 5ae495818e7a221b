"""Start, probe and stop one of the exchange's own processes (matcher, ledger, gateway)."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import ClassVar

from e2e.env.process import ManagedProcess


def readyz(url: str) -> bool:
    """Whether the service at `url` answers `/readyz` with `{"ready": true}`."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
            return bool(json.loads(response.read())["ready"])
    except OSError:
        return False


class ServiceProcess:
    """`python -m <module>` with its own environment, ready when `/readyz` says so.

    Subclasses are dataclasses that provide `name`, `run_dir`, `process`, `env()` and the
    base URL of their ops endpoints (`ops_url`).
    """

    module: ClassVar[str]
    name: str
    run_dir: Path
    process: ManagedProcess | None

    @property
    def ops_url(self) -> str:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> float:
        """Launch and wait until ready; the seconds it took."""
        process = self.launch()
        return process.wait_ready(self.ready, timeout)

    def launch(self) -> ManagedProcess:
        """Launch without waiting (for a process expected never to become ready)."""
        self.process = ManagedProcess(
            self.name, [sys.executable, "-m", self.module], self.run_dir, env=self.env()
        )
        self.process.start()
        return self.process

    def ready(self) -> bool:
        return readyz(self.ops_url)

    def metrics(self) -> str:
        """Its `/metrics` page (Prometheus text)."""
        with urllib.request.urlopen(f"{self.ops_url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)

    def kill(self) -> None:
        """kill -9: the crash drill."""
        if self.process is not None:
            self.process.kill()
