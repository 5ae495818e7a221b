"""The chaos schedules: the same seed gives the same schedule, counts per form, bounds."""

from __future__ import annotations

from collections import Counter

import pytest

from e2e.drills.schedule import COUNTS, FREEZE_SECONDS, Fault, schedule

pytestmark = pytest.mark.unit


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    assert schedule("chaos-full", True, 7) == schedule("chaos-full", True, 7)
    assert schedule("chaos-full", True, 7) != schedule("chaos-full", True, 8)


@pytest.mark.parametrize("drill", sorted(COUNTS))
@pytest.mark.parametrize("full", [False, True])
def test_each_form_has_its_counts(drill: str, full: bool) -> None:
    steps = schedule(drill, full, 1)
    wanted = {f: n[1 if full else 0] for f, n in COUNTS[drill].items() if n[1 if full else 0]}
    assert Counter(s.fault for s in steps) == wanted
    assert [s.n for s in steps] == list(range(1, len(steps) + 1))
    assert all(1.5 <= s.gap <= 3.5 and s.replica in (0, 1) for s in steps)


def test_the_full_chaos_drills_have_the_issues_counts() -> None:
    full = Counter(s.fault for s in schedule("chaos-full", True, 3))
    assert full == {Fault.MATCHER_KILL: 20, Fault.LEDGER_KILL: 20, Fault.GATEWAY_KILL: 20,
                    Fault.BROKER_BOUNCE: 10, Fault.BROKER_FREEZE: 1}  # fmt: skip


def test_every_third_matcher_kill_stays_down_and_a_freeze_outlasts_the_producers() -> None:
    kills = [s for s in schedule("chaos-core", True, 5) if s.fault is Fault.MATCHER_KILL]
    assert [s.down > 0 for s in kills[:6]] == [False, True, False, False, True, False]
    (freeze,) = [s for s in schedule("chaos-broker", True, 5) if s.fault is Fault.BROKER_FREEZE]
    assert freeze.down == FREEZE_SECONDS > 30  # the matcher outbox's transaction timeout
