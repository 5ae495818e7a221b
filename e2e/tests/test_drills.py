"""The chaos drills' short forms (`make drill NAME=chaos-...`) on one venue of `make up`'s
processes: matcher, ledger and gateway kills, Kafka bounced and frozen past the producers'
timeouts, and all of them interleaved, each under a crossing order flow through two gateway
replicas. Every drill must end with nothing acknowledged lost, nothing settled twice, the
invariants and the balance rebuild holding, the state hash continuous, the reconciliation
back at lag 0 without a breach, and trading going on after its faults.

chaos-broker and chaos-full are not here yet: on a CI run the broker freeze kept the ledger
from settling past its lag grace, reconciliation latched the market (CANCEL_ONLY, as
designed) and the drill's target of no breach failed; whether a freeze past the producers'
timeouts should latch is open (issue 19). They run with `make drill`.

The venue is shared by the module (starting `make up`'s processes takes a while on two
cores); each drill audits everything it sees on it. The full counts run on demand
(`make drill NAME=... FULL=1`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.drills.report import Plan
from e2e.drills.run import run_one
from e2e.drills.stackvenue import DrillVenue
from e2e.env.pytest_plugin import unique_name

pytestmark = pytest.mark.e2e

SEED = 19


@pytest.fixture(scope="module")
def venue(run_dir: Path) -> Iterator[DrillVenue]:
    drills = DrillVenue(run_dir / unique_name("drills"))
    drills.start()
    try:
        yield drills
    finally:
        drills.stop()


async def drill(venue: DrillVenue, name: str, run_dir: Path) -> dict[str, Any]:
    line = await run_one(venue, Plan(name, False, SEED), report_dir=run_dir / "drill-reports")
    print(json.dumps(line))
    assert line["problems"] == [], line["problems"]
    assert line["ok"]
    assert line["acked_lost"] == 0 and line["duplicates_settled"] == 0
    assert line["duplicate_orders"] == 0 and line["trades_unbooked"] == 0
    assert line["invariants_ok"] and line["hash_continuous"] and line["lag_zero"]
    assert line["breaches"] == 0 and line["refused_by_mode"] == 0 and line["unanswered"] == 0
    assert line["orders_acked"] > 300 and line["trades"] > 100
    assert line["acked_after_faults"] > 50  # trading went on after the last fault
    return line


async def test_chaos_core_matcher_kills(venue: DrillVenue, run_dir: Path) -> None:
    line = await drill(venue, "chaos-core", run_dir)
    assert line["cycles"] == 3 and line["faults"] == {"matcher-kill": 3}
    assert line["hash_checked"] >= 5  # the start, before and after kills, the end


async def test_chaos_ledger_kills_in_the_middle_of_settlement(
    venue: DrillVenue, run_dir: Path
) -> None:
    line = await drill(venue, "chaos-ledger", run_dir)
    assert line["cycles"] == 3 and line["ledger_kills_mid_batch"] >= 2


async def test_chaos_gateway_kills_of_one_of_two_replicas(venue: DrillVenue, run_dir: Path) -> None:
    line = await drill(venue, "chaos-gateway", run_dir)
    assert line["cycles"] == 3 and line["failed_over"] > 0
    assert line["gateway_unknown"] == 0
