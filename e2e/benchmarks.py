"""`make bench [BENCH=<prefix>]`: run benchmarks, one JSON object per line on stdout.

A benchmark module is any `bench_*.py` under e2e/ (the workloads' in e2e/bench, the
cluster's in e2e/drills and e2e/env) that defines
`BENCHMARKS: dict[str, Callable[[], dict[str, object]]]`. Names are dotted
(`matcher.engine`, `infra.kafka_start`); BENCH selects those that start with it.
A module may also name some of them in `ON_DEMAND` (a set): those are too slow for every
run and only run when BENCH is exactly their name (`BENCH=cluster.cold_setup`).
Each result line is `{"bench": <name>, ...the benchmark's own keys..., "machine": ...}`.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

from e2e.env.paths import REPO_ROOT

Benchmark = Callable[[], dict[str, object]]


def discover() -> tuple[dict[str, Benchmark], set[str]]:
    """Every benchmark by name, and the names that run only on demand."""
    found: dict[str, Benchmark] = {}
    on_demand: set[str] = set()
    for path in sorted((REPO_ROOT / "e2e").rglob("bench_*.py")):
        module_name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        module = importlib.import_module(module_name)
        found.update(getattr(module, "BENCHMARKS", {}))
        on_demand.update(getattr(module, "ON_DEMAND", set()))
    return found, on_demand


def select(found: dict[str, Benchmark], on_demand: set[str], prefix: str) -> dict[str, Benchmark]:
    """The benchmarks whose name starts with `prefix`; on-demand ones only by full name."""
    return {
        name: run
        for name, run in found.items()
        if name.startswith(prefix) and (name not in on_demand or name == prefix)
    }


def machine() -> str:
    cpu = "unknown cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} vCPU {cpu}, Python {platform.python_version()}"


def main(argv: list[str]) -> int:
    prefix = argv[0] if argv else ""
    found, on_demand = discover()
    selected = select(found, on_demand, prefix)
    if not selected:
        print(f"no benchmark matches {prefix!r}", file=sys.stderr)
        return 2
    host = machine()
    for name, run in selected.items():
        result = run()
        print(json.dumps({"bench": name, **result, "machine": host}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
