"""The chaos drills' fault schedules: which fault comes when, how long a part stays down and
how long the market trades between two faults, all drawn from one seed, so that a run is
repeated exactly by giving its printed seed again (`--seed`).

Pure: no clock, no I/O. `random.Random` seeded with a string hashes it with SHA-512, so the
same seed gives the same schedule in every process, whatever PYTHONHASHSEED is.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Fault(StrEnum):
    MATCHER_KILL = "matcher-kill"
    LEDGER_KILL = "ledger-kill"
    GATEWAY_KILL = "gateway-kill"
    BROKER_BOUNCE = "broker-bounce"
    BROKER_FREEZE = "broker-freeze"


FREEZE_SECONDS = 35.0
"""How long Kafka stays frozen: past the matcher outbox's 30 s transaction and request
timeouts (`workloads/matcher/outbox.py`), under the ledger's 60 s lag grace."""

COUNTS: dict[str, dict[Fault, tuple[int, int]]] = {
    "chaos-core": {Fault.MATCHER_KILL: (3, 20)},
    "chaos-ledger": {Fault.LEDGER_KILL: (3, 20)},
    "chaos-gateway": {Fault.GATEWAY_KILL: (3, 20)},
    "chaos-broker": {Fault.BROKER_BOUNCE: (2, 10), Fault.BROKER_FREEZE: (1, 1)},
    # The short form leaves the freeze to chaos-broker's: 35 s is most of a short run.
    "chaos-full": {
        Fault.MATCHER_KILL: (1, 20),
        Fault.LEDGER_KILL: (1, 20),
        Fault.GATEWAY_KILL: (1, 20),
        Fault.BROKER_BOUNCE: (1, 10),
        Fault.BROKER_FREEZE: (0, 1),
    },
}
"""Per chaos drill, per fault: (short form, full form) counts."""


@dataclass(frozen=True)
class Step:
    n: int
    fault: Fault
    down: float
    """Seconds the part stays down (killed and not yet restarted, stopped, frozen)."""
    gap: float
    """Seconds of trading after the part is back, before the next fault."""
    replica: int = 0
    """Which gateway replica a gateway kill hits."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "fault": str(self.fault)}


def schedule(drill: str, full: bool, seed: int, replicas: int = 2) -> list[Step]:
    """The faults of `drill` in a shuffled order, each with its down time and the trading
    gap after it."""
    rng = random.Random(f"{drill}:{seed}")
    faults = [f for f, counts in COUNTS[drill].items() for _ in range(counts[1 if full else 0])]
    rng.shuffle(faults)
    steps = []
    seen: dict[Fault, int] = {}
    for n, fault in enumerate(faults, 1):
        seen[fault] = seen.get(fault, 0) + 1
        down = {
            # Every third kill kept down across a reconciliation evaluation (every 5 s).
            Fault.MATCHER_KILL: 6.0 if seen[fault] % 3 == 2 else 0.0,
            Fault.LEDGER_KILL: rng.uniform(0.0, 1.0),
            Fault.GATEWAY_KILL: rng.uniform(0.5, 2.0),
            Fault.BROKER_BOUNCE: rng.uniform(2.0, 5.0),
            Fault.BROKER_FREEZE: FREEZE_SECONDS,
        }[fault]
        steps.append(
            Step(n, fault, round(down, 2), round(rng.uniform(1.5, 3.5), 2), rng.randrange(replicas))
        )
    return steps
