"""The venue's processes start gRPC's core with GRPC_EXPERIMENTS already set: the core
reads it once, when grpc is imported, so an entry point that imported grpc first would
silently run with the EventEngine thread pool again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from workloads import LEGACY_POLLER

pytestmark = pytest.mark.unit

# Records GRPC_EXPERIMENTS as it is when grpc is first imported, then imports `module`.
_PROBE = """
import os, sys
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc" and not seen:
            seen.append(os.environ.get("GRPC_EXPERIMENTS", "<unset>"))
        return None
sys.meta_path.insert(0, Spy())
import importlib
importlib.import_module(sys.argv[1])
print(seen[0] if seen else "<grpc not imported>")
"""


def _experiments_at_grpc_import(module: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    "module",
    [
        "workloads.matcher.__main__",
        "e2e.bench.matcher_loadgen",
        "e2e.bench.bare_server",
        "workloads.gateway.__main__",
        "workloads.ledger.__main__",
    ],
)
def test_entry_points_set_the_poller_before_grpc_is_imported(module: str) -> None:
    assert _experiments_at_grpc_import(module) == LEGACY_POLLER


def test_an_operators_own_setting_wins() -> None:
    chosen = "-event_engine_client"
    assert (
        _experiments_at_grpc_import("workloads.matcher.__main__", GRPC_EXPERIMENTS=chosen) == chosen
    )
