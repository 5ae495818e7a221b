"""Start, watch and stop the long-running processes of the real parts.

Each process gets its own session (so a stop reaches its children), a log file in its
run directory, and optionally `PR_SET_PDEATHSIG`, so that it dies with the launcher even
when the launcher itself is killed with SIGKILL. A pid file lets `make down` stop what an
earlier, vanished launcher left running.

The death signal is set by util-linux's `setpriv --pdeathsig KILL` in front of the command,
not by Python code between fork and exec (`preexec_fn`): the launcher runs gRPC and asyncio
threads, and a child that runs Python (ctypes, gRPC's fork handlers) before its exec can
crash or hang there (a SIGSEGV seen in a fault test). Without `preexec_fn` subprocess spawns
with vfork, and nothing of Python runs in the child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process.
# Children are therefore always spawned from this one long-lived thread, so a part started
# from `asyncio.to_thread` (a short-lived worker) does not die with that worker.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")

# Every child started here, until it is stopped and reaped: a Popen collected while its
# child runs, or before it was reaped, warns (ResourceWarning) at whatever moment the
# garbage collector runs, and tests turn warnings into errors. A daemon (die_with_parent
# off: `make cluster-up`'s host services) outlives its launcher by design and stays here.
# What is left at the end of a test session is reported (`leftovers`).
_CHILDREN: dict[int, tuple[str, subprocess.Popen[bytes], bool]] = {}  # pid -> name, popen, daemon

# Ports this process has handed out: the kernel picks a free port at random and may pick
# the same one twice in a row, and two parts given one port answer each other's readiness
# checks (a ledger that could not bind looked ready through its matcher's ops server).
_PORTS_GIVEN: set[tuple[str, int]] = set()
_PORTS_LOCK = threading.Lock()


class Part(Protocol):
    """A real part of the infrastructure: started (returning seconds to ready) and stopped."""

    def start(self) -> float | dict[str, float]: ...

    def stop(self) -> None: ...


class StartError(RuntimeError):
    """A process exited or did not become ready; the message carries its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the kernel picks it) and that this
    process has not handed out before."""
    with _PORTS_LOCK:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if (host, port) not in _PORTS_GIVEN:
                _PORTS_GIVEN.add((host, port))
                return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> float:
    """Poll `check` until it holds; return the seconds it took or raise `TimeoutError`."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(interval)


@dataclass
class ManagedProcess:
    """One child process with its log and pid files in `run_dir`."""

    name: str
    argv: Sequence[str]
    run_dir: Path
    env: Mapping[str, str] | None = None
    user: str | None = None
    die_with_parent: bool = True
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.popen = _SPAWNER.submit(self._spawn).result()
        _CHILDREN[self.popen.pid] = (self.name, self.popen, not self.die_with_parent)
        self.pid_path.write_text(str(self.popen.pid))

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ if self.env is None else self.env)
        with open(self.log_path, "ab") as log:
            argv = list(self.argv)
            if self.die_with_parent:
                argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                user=self.user,
                start_new_session=True,
                cwd=self.run_dir,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, check: Callable[[], bool], timeout: float) -> float:
        """Wait for `check`; fail fast with the log tail if the process exits first."""

        def ready() -> bool:
            if not self.alive():
                code = self.popen.returncode if self.popen else None
                raise StartError(
                    f"{self.name} exited with {code} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            return check()

        try:
            return wait_until(ready, timeout=timeout, what=self.name)
        except TimeoutError as exc:
            raise StartError(f"{exc}; log {self.log_path}:\n{self.log_tail()}") from exc

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `timeout`."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        _signal_group(self.popen.pid, signal.SIGKILL)  # stray children of the group
        _CHILDREN.pop(self.popen.pid, None)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()

    def kill(self) -> None:
        """SIGKILL at once: for crash drills."""
        if self.popen is not None and self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
            _CHILDREN.pop(self.popen.pid, None)

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the whole process group (SIGSTOP/SIGCONT: freeze drills)."""
        if self.popen is not None and self.popen.poll() is None:
            _signal_group(self.popen.pid, sig)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_from_pid_files(run_dir: Path) -> list[str]:
    """Stop every process a launcher recorded in `run_dir` (used by `make down`). A pid
    file may vanish meanwhile: its launcher is stopping it too (`make up` on its way out)."""
    stopped = []
    for pid_file in sorted(run_dir.glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
        except FileNotFoundError:
            continue
        except ValueError:
            pid_file.unlink(missing_ok=True)
            continue
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _exists(pid):
            time.sleep(0.1)
        _signal_group(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
        stopped.append(pid_file.stem)
    _reap()
    return stopped


def _reap() -> None:
    """Forget the children that have exited (polling reaps them)."""
    for pid, (_, popen, _) in list(_CHILDREN.items()):
        if popen.poll() is not None:
            del _CHILDREN[pid]


def leftovers() -> list[str]:
    """Children (not daemons) still running: started and never stopped."""
    _reap()
    return [f"{name} (pid {pid})" for pid, (name, _, daemon) in _CHILDREN.items() if not daemon]


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
