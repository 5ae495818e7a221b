"""Helm (built by `make setup`, pinned in versions.py) and the operator's chart."""

from __future__ import annotations

import subprocess
from pathlib import Path

from e2e.env import gobuild, paths

CHART = paths.REPO_ROOT / "charts" / "exchange-operator"


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, input: str | None = None
) -> str:
    """Run helm (`input` on its stdin); its stdout. A failure raises with helm's stderr."""
    command = [str(gobuild.binary("helm")), *args]
    if kubeconfig is not None:
        command.append(f"--kubeconfig={kubeconfig}")
    result = subprocess.run(command, capture_output=True, text=True, check=False, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout
