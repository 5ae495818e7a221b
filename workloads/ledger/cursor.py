"""Per-market settlement cursor: which events to apply, and in what order. Pure.

The matcher numbers commands (seq); each command yields one or more events sharing its seq,
told apart by the index in `event_id` and published together in one Kafka transaction. So
the next event of a market is either the next index of the last applied seq, or index 0 of
seq + 1. Anything further is a gap: the market stalls (its later events are parked, never
skipped) and reconciliation reports a mismatch until the missing events arrive.

The contract carries no per-command event count, so the last events of a command are taken
as complete when the next command's first event arrives. That holds for the matcher's
outbox, which publishes a command's events together, in order, in one Kafka transaction;
an injector must likewise send whole commands.

Order of the checks: a position already passed is a duplicate (redelivery, replays, the same
event injected again), whatever its epoch; then an epoch lower than the highest applied is a
stale leader's event (rejected and counted, never applied); then contiguity.

A NamedTuple rather than a frozen dataclass: it is built once per applied event, and a tuple
is several times cheaper to build.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class Verdict(Enum):
    APPLY = "applied"
    DUPLICATE = "duplicate"
    STALE_EPOCH = "stale_epoch"
    GAP = "parked"  # behind a seq gap: kept in parked_events until the gap is filled


def classify(
    applied_seq: int, applied_index: int, max_epoch: int, seq: int, index: int, epoch: int
) -> Verdict:
    """The verdict for event (seq, index, epoch) after (applied_seq, applied_index)."""
    if seq < applied_seq or (seq == applied_seq and index <= applied_index):
        return Verdict.DUPLICATE
    if epoch < max_epoch:
        return Verdict.STALE_EPOCH
    if (seq == applied_seq and index == applied_index + 1) or (
        seq == applied_seq + 1 and index == 0
    ):
        return Verdict.APPLY
    return Verdict.GAP


class Cursor(NamedTuple):
    market: str
    seq: int = 0
    idx: int = -1
    max_epoch: int = 0
    stalled: bool = False
    stall_reason: str | None = None
    stale_rejected: int = 0

    def classify(self, seq: int, index: int, epoch: int) -> Verdict:
        return classify(self.seq, self.idx, self.max_epoch, seq, index, epoch)

    def advance(self, seq: int, index: int, epoch: int) -> Cursor:
        max_epoch = self.max_epoch
        return Cursor(
            self.market,
            seq,
            index,
            epoch if epoch > max_epoch else max_epoch,
            self.stalled,
            self.stall_reason,
            self.stale_rejected,
        )

    def stall(self, seq: int, index: int) -> Cursor:
        if self.stalled:
            return self
        expected = f"{self.seq}:{self.idx + 1} or {self.seq + 1}:0"
        return self._replace(
            stalled=True, stall_reason=f"seq gap: expected {expected}, got {seq}:{index}"
        )

    def unstall(self) -> Cursor:
        return self._replace(stalled=False, stall_reason=None)

    def rejected_stale(self) -> Cursor:
        return self._replace(stale_rejected=self.stale_rejected + 1)
