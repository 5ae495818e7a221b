"""Fencing epochs: under which epoch the matcher serves, and whether it still leads.

A matcher serves only under an epoch from an `EpochProvider`. Every WAL record, event and
reply carries it; downstream consumers drop anything from an epoch lower than the
highest they have seen. Two providers share the interface:
- `FileEpoch` (local mode): a counter in a file, bumped and fsynced on every start, so a
  restarted matcher always serves under a higher epoch than any earlier run.
- the Kubernetes Lease provider (cluster mode, with the operator).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol

from workloads.matcher.wal import fsync_dir


class EpochProvider(Protocol):
    async def acquire(self) -> int:
        """Become leader and return the new epoch (greater than every earlier one)."""
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

    async def acquire(self) -> int:
        self.epoch = await asyncio.to_thread(self._bump)
        return self.epoch

    def _bump(self) -> int:
        """Read, increment and durably write the counter (fsync file, rename, fsync dir)."""
        previous = int(self.path.read_text()) if self.path.exists() else 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w") as handle:
            handle.write(str(previous + 1))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        fsync_dir(self.path.parent)
        return previous + 1

    def is_leader(self) -> bool:
        return self.epoch > 0
