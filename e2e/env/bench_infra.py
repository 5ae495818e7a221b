"""Start-up times of the real parts from a fresh data directory, as each test session sees
them (caches warm: the one-off install and build time is what `make setup` prints)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from e2e.env import kafka, kube, paths, postgres
from e2e.env.process import Part, free_port


def _timed_start(make: Callable[[Path], Part]) -> dict[str, object]:
    run_dir = paths.new_run_dir("exchange-bench-")
    part = make(run_dir)
    start = time.monotonic()
    try:
        part.start()
        seconds = time.monotonic() - start
    finally:
        part.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"seconds": round(seconds, 2)}


BENCHMARKS = {
    "infra.postgres_start": lambda: _timed_start(lambda d: postgres.PostgresServer(d, free_port())),
    "infra.kafka_start": lambda: _timed_start(
        lambda d: kafka.KafkaBroker(d, free_port(), free_port())
    ),
    "infra.kube_start": lambda: _timed_start(lambda d: kube.ControlPlane(d, free_port())),
}
