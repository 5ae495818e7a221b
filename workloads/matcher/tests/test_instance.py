"""The instance manager: a matcher that dies is started again at once, SIGTERM reaches it and
ends the manager with its code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e.env.process import wait_until

pytestmark = pytest.mark.integration

# Stands in for the matcher: records its pid at every start, exits 0 on SIGTERM.
CHILD = """
import os, signal, sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\\n")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""

MANAGER = """
import sys
from workloads.matcher.instance import InstanceManager
sys.exit(InstanceManager([sys.executable, "-c", sys.argv[1], sys.argv[2]], 5.0).run())
"""


def test_a_killed_matcher_is_started_again_at_once_and_sigterm_stops_both(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    starts.touch()

    def pids() -> list[int]:
        return [int(line) for line in starts.read_text().split()]

    with subprocess.Popen([sys.executable, "-c", MANAGER, CHILD, str(starts)]) as manager:
        try:
            wait_until(lambda: len(pids()) == 1, timeout=10, what="the first start")
            killed = time.monotonic()
            os.kill(pids()[0], signal.SIGKILL)
            wait_until(lambda: len(pids()) == 2, timeout=10, what="the restart")
            assert time.monotonic() - killed < 2  # at once: no crash back-off the first time
            os.kill(pids()[1], signal.SIGKILL)
            wait_until(lambda: len(pids()) == 3, timeout=10, what="the second restart")
            manager.send_signal(signal.SIGTERM)
            assert manager.wait(10) == 0  # the child's code: it stopped gracefully
            assert len(pids()) == 3
        finally:
            manager.kill()
