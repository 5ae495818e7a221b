"""`make down`'s stop of recorded processes, also while their launcher stops them too; a
launched process dies with its launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.env.process import stop_from_pid_files, wait_until

pytestmark = pytest.mark.unit


def test_pid_files_that_vanish_or_hold_no_pid_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "a-garbage.pid").write_text("not a pid\n")
    # A pid file its launcher removed between the listing and the read (`make up` stopping
    # while `make down` runs): a dangling link is listed and then cannot be read.
    os.symlink(tmp_path / "gone", tmp_path / "b-vanished.pid")
    assert stop_from_pid_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b-vanished.pid"]


LAUNCHER = """
import sys, time
from pathlib import Path
from e2e.env.process import ManagedProcess
child = ManagedProcess("sleeper", ["sleep", "600"], Path(sys.argv[1]))
child.start()
print(child.popen.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.integration
def test_a_child_dies_with_its_launcher_even_when_the_launcher_is_killed(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as launcher:
        try:
            assert launcher.stdout is not None
            child = int(launcher.stdout.readline())
            assert _running(child)
            launcher.kill()
            launcher.wait(10)
            wait_until(lambda: not _running(child), timeout=10, what="the child's death")
        finally:
            launcher.kill()


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for its reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
