"""A drill's JSON line: targets judged, problems make it fail, the report file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e.drills.report import Plan, Result, finish, missed_targets, write

pytestmark = pytest.mark.unit

GOOD = {
    "cycles": 3, "orders_acked": 10, "acked_lost": 0, "duplicates_settled": 0,
    "invariants_ok": True, "hash_continuous": True, "lag_zero": True, "breaches": 0,
}  # fmt: skip


def test_figures_on_target_pass() -> None:
    line = finish(Plan("chaos-core", False, 4), Result(figures=dict(GOOD)), 12.34)
    assert line["ok"] and line["problems"] == [] and line["seconds"] == 12.3
    assert list(line)[:5] == ["drill", "form", "seed", "ok", "cycles"]
    assert (line["drill"], line["form"], line["seed"]) == ("chaos-core", "short", 4)


def test_a_missed_target_or_a_problem_fails_the_drill() -> None:
    assert missed_targets({**GOOD, "acked_lost": 2, "hash_continuous": False}) == [
        "acked_lost is 2, target 0",
        "hash_continuous is False, target true",
    ]
    assert not finish(Plan("fuzz", True, 1), Result(figures={"server_errors": 1}), 1)["ok"]
    assert not finish(Plan("dr", True, 1), Result(dict(GOOD), {}, ["restored differs"]), 1)["ok"]


def test_the_report_holds_the_line_the_machine_and_the_details(tmp_path: Path) -> None:
    line = finish(Plan("load", True, 9), Result(figures=dict(GOOD)), 1)
    first = write(line, {"rates": {"500": {}}}, tmp_path)
    second = write(line, {}, tmp_path)
    assert first != second and first.name.startswith("load-")
    report = json.loads(first.read_text())
    assert report["ok"] and report["details"] == {"rates": {"500": {}}}
    assert "vCPU" in report["machine"]
