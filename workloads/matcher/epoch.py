"""Fencing epochs: under which epoch the matcher serves, and whether it still leads.

A matcher serves only under an epoch from an `EpochProvider`. Every WAL record, event and
reply carries it; downstream consumers drop anything from an epoch lower than the
highest they have seen. Two providers share the interface:
- `FileEpoch` (local mode): a counter in a file, bumped and fsynced on every start, so a
  restarted matcher always serves under a higher epoch than any earlier run.
- `lease.LeaseEpoch` (cluster mode): the market's Lease, its `leaseTransitions` the epoch.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol

from workloads.matcher.wal import fsync_dir


class EpochProvider(Protocol):
    async def acquire(self, floor: int = 0) -> int:
        """Become leader and return the new epoch: greater than every earlier one, and at
        least `floor` (one above the last epoch in the WAL)."""
        ...

    def is_leader(self) -> bool:
        """Whether this instance can still prove it leads; checked before every command."""
        ...

    @property
    def identity(self) -> str: ...


class FileEpoch:
    """Local mode: the epoch file is the only leadership there is."""

    def __init__(self, path: Path, identity: str) -> None:
        self.path = path
        self._identity = identity
        self.epoch = 0

    @property
    def identity(self) -> str:
        return self._identity

    async def acquire(self, floor: int = 0) -> int:
        self.epoch = await asyncio.to_thread(self._bump, floor)
        return self.epoch

    def _bump(self, floor: int) -> int:
        """Read, increment and durably write the counter (fsync file, rename, fsync dir)."""
        previous = int(self.path.read_text()) if self.path.exists() else 0
        epoch = max(previous + 1, floor)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w") as handle:
            handle.write(str(epoch))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        fsync_dir(self.path.parent)
        return epoch

    def is_leader(self) -> bool:
        return self.epoch > 0
