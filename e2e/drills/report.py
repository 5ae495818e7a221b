"""A drill's result: its figures judged against the venue's targets, one JSON line on stdout
and a report file under `.run/drills/` (the line plus the details: the schedule, each cycle,
every problem found).

The targets are the issue's: nothing acknowledged lost, nothing settled twice, invariants
and the state hash always holding, reconciliation back to lag 0 without a breach, no server
error; a figure that misses its target is a problem, and a drill with a problem fails.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.benchmarks import machine as cpu
from e2e.env.paths import REPO_ROOT

REPORT_DIR = REPO_ROOT / ".run" / "drills"

TARGETS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "acked_lost": ("0", lambda v: v == 0),
    "duplicates_settled": ("0", lambda v: v == 0),
    "duplicate_orders": ("0", lambda v: v == 0),
    "invariants_ok": ("true", lambda v: v is True),
    "hash_continuous": ("true", lambda v: v is True),
    "lag_zero": ("true", lambda v: v is True),
    "breaches": ("0", lambda v: v == 0),
    "refused_by_mode": ("0", lambda v: v == 0),
    "server_errors": ("0", lambda v: v == 0),
    "schema_violations": ("0", lambda v: v == 0),
    "placed_by_refused": ("0", lambda v: v == 0),
}
"""Figure -> (the target, as written in the report; whether a value meets it). A figure a
drill does not produce is not judged."""


@dataclass(frozen=True)
class Plan:
    drill: str
    full: bool
    seed: int

    @property
    def form(self) -> str:
        return "full" if self.full else "short"


@dataclass
class Result:
    """What a drill found: its figures (the JSON line) and details (the report file)."""

    figures: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def missed_targets(figures: dict[str, Any]) -> list[str]:
    return [
        f"{name} is {figures[name]!r}, target {target}"
        for name, (target, met) in TARGETS.items()
        if name in figures and not met(figures[name])
    ]


def finish(plan: Plan, result: Result, seconds: float) -> dict[str, Any]:
    """The JSON line: the drill, its form and seed, whether it passed, its figures."""
    problems = [*result.problems, *missed_targets(result.figures)]
    return {
        "drill": plan.drill,
        "form": plan.form,
        "seed": plan.seed,
        "ok": not problems,
        **result.figures,
        "seconds": round(seconds, 1),
        "problems": problems[:20],
    }


def write(line: dict[str, Any], details: dict[str, Any], directory: Path = REPORT_DIR) -> Path:
    """`<drill>-<UTC time>.json`: the line, the machine, and the details."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"{line['drill']}-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{line['drill']}-{stamp}-{n}.json"
    report = {**line, "machine": machine(), "details": details}
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def machine() -> str:
    release = Path("/etc/os-release")
    system = platform.system()
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                system = line.split("=", 1)[1].strip('"')
    return f"{cpu()}, {system}"
