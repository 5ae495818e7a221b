"""`make drill NAME=<name> [FULL=1]`: `python -m e2e.drills.run NAME... [--full] [--seed N]`.

Starts `make up`'s venue on free 127.0.0.1 ports in a fresh run directory, runs the named
drills on it one after the other (`all`: every drill; the short forms by default, the full
counts with `--full`), prints one JSON line per drill and writes each one's report under
`.run/drills/`, then stops every process it started, also on failure or Ctrl-C (SIGTERM
too). Each drill is bounded in time (`LIMITS`); one that overruns fails with what it had.
The run directory (logs, data) is removed afterwards unless a drill failed or `--keep`.
Exits 1 when a drill failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from e2e.drills import chaos, dr, exactly_once, fuzz, loadrates
from e2e.drills.report import REPORT_DIR, Plan, Result, finish, write
from e2e.drills.stackvenue import DrillVenue
from e2e.env import paths

Drill = Callable[[DrillVenue, Plan], Awaitable[Result]]

DRILLS: dict[str, Drill] = {
    "chaos-core": chaos.run,
    "chaos-ledger": chaos.run,
    "chaos-gateway": chaos.run,
    "chaos-broker": chaos.run,
    "chaos-full": chaos.run,
    "exactly-once": exactly_once.run,
    "fuzz": fuzz.run,
    "load": loadrates.run,
    "dr": dr.run,
}
"""Every drill, in the order `all` runs them (dr last: it replaces the venue's data)."""

LIMITS: dict[str, tuple[float, float]] = {
    "chaos-core": (240, 900),
    "chaos-ledger": (240, 1200),
    "chaos-gateway": (300, 1200),
    "chaos-broker": (360, 1200),
    "chaos-full": (300, 2400),
    "exactly-once": (240, 3600),
    "fuzz": (300, 1800),
    "load": (300, 1200),
    "dr": (300, 900),
}
"""Seconds a drill may take, short form and full form, before it is stopped and failed."""


async def run_one(venue: DrillVenue, plan: Plan, report_dir: Path = REPORT_DIR) -> dict[str, Any]:
    """One drill on `venue`: its JSON line (with the report's path), printed and returned."""
    started = time.monotonic()
    limit = LIMITS[plan.drill][1 if plan.full else 0]
    try:
        async with asyncio.timeout(limit):
            result = await DRILLS[plan.drill](venue, plan)
    except TimeoutError:
        result = Result(problems=[f"the drill did not finish within {limit:.0f}s"])
    except Exception as exc:
        result = Result(problems=[f"the drill failed: {exc!r}"],
                        details={"error": traceback.format_exc()})  # fmt: skip
    line = finish(plan, result, time.monotonic() - started)
    path = write(line, result.details, report_dir)
    line["report"] = str(path.relative_to(paths.REPO_ROOT)) if path.is_relative_to(
        paths.REPO_ROOT) else str(path)  # fmt: skip
    print(json.dumps(line), flush=True)
    return line


async def run_all(venue: DrillVenue, plans: list[Plan]) -> list[dict[str, Any]]:
    return [await run_one(venue, plan) for plan in plans]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.drills.run", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"{', '.join(DRILLS)} or all")
    parser.add_argument("--full", action="store_true", help="the full counts")
    parser.add_argument("--seed", type=int, help="the chaos schedules' seed (default: random)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    names = list(DRILLS) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in DRILLS]
    if not names or unknown:
        parser.error(f"name one or more drills: {', '.join(DRILLS)} (or all); unknown {unknown}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    print(f"drills {names}, {'full' if args.full else 'short'} form, seed {seed}", file=sys.stderr)
    # SIGTERM stops like Ctrl-C: the drill's cleanup runs, then the venue is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    run_dir = paths.new_run_dir("drill-")
    venue = DrillVenue(run_dir)
    lines: list[dict[str, Any]] = []
    try:
        venue.start()
        lines = asyncio.run(run_all(venue, [Plan(n, args.full, seed) for n in names]))
    finally:
        venue.stop()
        failed = len(lines) < len(names) or not all(line["ok"] for line in lines)
        if failed or args.keep:
            print(f"run directory kept: {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
