"""Which local clusters run on this host: one small file each under /run.

The launcher of a cluster writes its entry when the bridge goes up and removes it on
teardown. Other launchers read the entries to refuse a clash (the same name, bridge or
address) and to clean up after a test run that was killed: its entry names an owner pid
that no longer exists. /run is a tmpfs, so a reboot clears the list with the clusters.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from e2e.env import cleanup

REGISTRY = Path("/run/exchange-platform/clusters")


@dataclass(frozen=True)
class Entry:
    """A running cluster as other launchers see it."""

    name: str
    state_dir: Path
    bridge: str
    address: str
    owner: int | None
    """The pid of the launcher the cluster dies with; None for daemons (`make cluster-up`)."""

    @property
    def stale(self) -> bool:
        """Its launcher is gone but it was meant to die with it: leftovers to clean up."""
        return self.owner is not None and not cleanup.alive(self.owner)

    def clashes_with(self, other: Entry) -> bool:
        """Two different clusters cannot share a name, a bridge or a bridge address."""
        return self.state_dir != other.state_dir and (
            self.name == other.name or self.bridge == other.bridge or self.address == other.address
        )


def register(entry: Entry) -> None:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    data = {
        "state_dir": str(entry.state_dir),
        "bridge": entry.bridge,
        "address": entry.address,
        "owner": entry.owner,
    }
    (REGISTRY / f"{entry.name}.json").write_text(json.dumps(data))


def unregister(name: str) -> None:
    (REGISTRY / f"{name}.json").unlink(missing_ok=True)


def entries() -> list[Entry]:
    found = []
    for path in sorted(REGISTRY.glob("*.json")) if REGISTRY.exists() else []:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(path.read_text())
            found.append(
                Entry(
                    path.stem,
                    Path(data["state_dir"]),
                    data["bridge"],
                    data["address"],
                    data["owner"],
                )
            )
    return found
