"""`python -m workloads.matcher.instance`: the matcher container's first process, which runs
the matcher and starts it again when it ends (CloudNativePG's instance manager does the same
for PostgreSQL).

Why not leave restarts to the kubelet: a container that exits is restarted with the kubelet's
crash back-off, 10 s after the second crash within ten minutes, then 20, 40, ... up to five
minutes: a market would be down that long. Here a matcher that crashes, or exits because it
lost its lease, is started again at once; it recovers from its volume and takes the lease at
once (same pod), under the next epoch. Only quick repeated failures back off, doubling up to
`MATCHER_RESTART_BACKOFF_MAX_S` (default 5 s), and a run of a minute resets that.

In cluster mode, when the matcher ended while it led with a standby in sync, the instance
manager hands the Lease over to that standby before it starts the matcher again: the standby
leads without waiting for this pod's Python to start.

SIGTERM and SIGINT go to the matcher, which stops gracefully; the instance manager then exits
with its code. As the container's PID 1 it also reaps orphans (a snapshot writer whose parent
died). Liveness stays the matcher's own `/healthz`: a frozen matcher is restarted by the
kubelet, which kills the whole container.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from workloads.common import logs

log = logging.getLogger("workloads.matcher.instance")

MATCHER = (sys.executable, "-m", "workloads.matcher")
STEADY_S = 60.0
"""A run this long counts as healthy: the next failure restarts at once again."""


class InstanceManager:
    def __init__(
        self, argv: Sequence[str], backoff_max: float, on_end: Callable[[], None] | None = None
    ) -> None:
        self.argv = list(argv)
        self.backoff_max = backoff_max
        self.on_end = on_end
        """Called when the matcher ended, before it is started again."""
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None

    def _forward(self, signum: int, _: FrameType | None) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._forward)
        quick_failures = 0
        while True:
            started = time.monotonic()
            self.child = subprocess.Popen(self.argv)
            code = self._wait(self.child.pid)
            if self.stopping:
                return code
            if self.on_end is not None:
                self.on_end()
            if time.monotonic() - started >= STEADY_S:
                quick_failures = 0
            delay = min(0.5 * 2 ** (quick_failures - 1), self.backoff_max) if quick_failures else 0
            quick_failures += 1
            log.error(
                "matcher ended; starting it again",
                extra={"code": code, "restart_in_s": delay, "quick_failures": quick_failures},
            )
            deadline = time.monotonic() + delay
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.stopping:
                return code

    @staticmethod
    def _wait(pid: int) -> int:
        """Wait for `pid`, reaping any other child that ends meanwhile (orphans)."""
        while True:
            ended, status = os.wait()
            if ended == pid:
                code = os.waitstatus_to_exitcode(status)
                return code if code >= 0 else 128 - code  # killed by a signal: 128 + signo


def hand_over() -> Callable[[], None] | None:
    """With a Lease (cluster mode): when the matcher ended while it led with a standby in
    sync, free the Lease for that standby at once; its next start would do the same, a second
    or more later (Python's start, the recovery). Best effort: that next start is the
    fallback. Whatever it needs is imported now, not while the market waits."""
    if os.environ.get("MATCHER_EPOCH_PROVIDER") != "lease":
        return None
    from workloads.matcher.lease import LeaseUnavailable
    from workloads.matcher.lease_api import lease_epoch
    from workloads.matcher.settings import MatcherSettings, SettingsError

    def run() -> None:
        try:
            fencing = lease_epoch(MatcherSettings.from_env())
            handed = asyncio.run(asyncio.wait_for(fencing.hand_over_if_due(), 3))
        except (LeaseUnavailable, SettingsError, TimeoutError, OSError) as exc:
            log.warning("could not hand the Lease over", extra={"why": repr(exc)})
            return
        if handed:
            log.warning("the matcher ended: the Lease is handed over to its standby")

    return run


def main() -> None:
    logs.configure("matcher-instance")
    raw = os.environ.get("MATCHER_RESTART_BACKOFF_MAX_S", "5")
    try:
        backoff_max = float(raw)
    except ValueError:
        sys.exit(f"matcher instance: MATCHER_RESTART_BACKOFF_MAX_S={raw!r} is not a number")
    sys.exit(InstanceManager(MATCHER, backoff_max, hand_over()).run())


if __name__ == "__main__":
    main()
