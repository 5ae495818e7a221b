"""Finding and removing what a node leaves on the host once its processes are gone.

Killing containerd, the kubelet and the shims is not enough (INFRA-NOTES, "Teardown"):
projected volumes and sandbox `shm` stay mounted, network namespaces stay pinned, kube-proxy's
`KUBE-*` chains stay in iptables, and the kubelet's cgroups stay in every hierarchy. Each
function here deals with one kind of leftover and is scoped to one cluster: its state
directory, its cgroup root, its bridge. Only the iptables chains are global, because
kube-proxy's chain names are fixed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

CHAIN_PREFIXES = ("KUBE-", "CNI-")
"""kube-proxy's (and the kubelet's) chains, and the CNI plugins' (portmap, bridge ipMasq)."""

_TABLES = ("filter", "nat", "mangle", "raw")


def processes_using(marker: str) -> dict[int, str]:
    """Processes whose command line mentions `marker` (a cluster's state directory or
    containerd socket): pid -> command line. Reading /proc is how ownership is proven
    before anything is signalled, so a recycled pid of another program is never killed."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found[int(entry.name)] = cmdline.strip()
    return found


def kill_processes(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
        if not any(alive(p) for p in pids):
            return


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def descendants(roots: list[int]) -> list[int]:
    """Every process below `roots` in the process tree (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], list(roots)
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def remove_log_links(pod_logs_dir: Path) -> None:
    """The kubelet links each container's log into /var/log/containers (a fixed path)."""
    links = Path("/var/log/containers")
    if links.is_dir():
        for link in links.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and str(pod_logs_dir) in os.readlink(link):
                    link.unlink()


def remove_kubelet_socket(kubelet_home: Path = Path("/var/lib/kubelet")) -> None:
    """The kubelet serves device plugins at a fixed path, whatever its `--root-dir`: remove
    that socket, and the directories if nothing else is in them. Only call this when no
    other kubelet of this project runs; a foreign kubelet's files are never touched."""
    plugins = kubelet_home / "device-plugins"
    with contextlib.suppress(OSError):
        if set(kubelet_home.iterdir()) != {plugins}:
            return  # more than our kubelets ever put there: not ours to clean
        (plugins / "kubelet.sock").unlink(missing_ok=True)
        plugins.rmdir()
        kubelet_home.rmdir()


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below `directory`, deepest first (the order to unmount them)."""
    prefix = str(directory.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def unmount_under(directory: Path) -> list[str]:
    """Unmount everything below `directory`; lazily when a mount is still busy."""
    points = mounts_under(directory)
    for point in points:
        result = subprocess.run(["umount", point], capture_output=True, check=False)
        if result.returncode != 0:
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    return points


def cgroup_dirs(cgroup_root: str) -> list[Path]:
    """The cluster's cgroup (for example `/exchange-local`) in every mounted hierarchy."""
    base = Path("/sys/fs/cgroup")
    name = cgroup_root.strip("/")
    if (base / "cgroup.controllers").exists():  # cgroup v2: one unified hierarchy
        return [base / name]
    return [d / name for d in sorted(base.iterdir()) if d.is_dir() and not d.is_symlink()]


def ensure_cgroups(cgroup_root: str) -> None:
    """Create the kubelet's cgroup root in each hierarchy: it refuses to start without it.

    A new cpuset cgroup starts with no CPUs and memory nodes; copy its parent's."""
    for path in cgroup_dirs(cgroup_root):
        path.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (path / knob).exists() and not (path / knob).read_text().strip():
                (path / knob).write_text((path.parent / knob).read_text())


def remove_cgroups(cgroup_root: str) -> list[Path]:
    """Remove the cluster's cgroup trees, leaves first; returns what could not be removed."""
    stuck = []
    for top in cgroup_dirs(cgroup_root):
        if not top.exists():
            continue
        for current, _dirs, _files in sorted(
            os.walk(top), key=lambda item: item[0].count("/"), reverse=True
        ):
            try:
                Path(current).rmdir()
            except OSError:
                stuck.append(Path(current))
    return stuck


def iptables_rules(prefixes: tuple[str, ...] = CHAIN_PREFIXES) -> list[str]:
    """Lines of `iptables-save` and `ip6tables-save` that mention one of the prefixes."""
    lines = []
    for save in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([save], capture_output=True, text=True, check=False).stdout
        lines += [
            f"{save}: {line}"
            for line in out.splitlines()
            if not line.startswith("#") and any(p in line for p in prefixes)
        ]
    return lines


def remove_chains(prefixes: tuple[str, ...] = CHAIN_PREFIXES) -> None:
    """Delete every rule that jumps to or lives in a chain with one of the prefixes, then the
    chains themselves, in all tables, for IPv4 and IPv6."""
    for binary in ("iptables", "ip6tables"):
        for table in _TABLES:
            out = subprocess.run(
                [f"{binary}-save", "-t", table], capture_output=True, text=True, check=False
            ).stdout
            chains = [
                line[1:].split()[0]
                for line in out.splitlines()
                if line.startswith(":") and line[1:].startswith(prefixes)
            ]
            for line in out.splitlines():
                if not line.startswith("-A "):
                    continue
                chain = line.split()[1]
                target = re.search(r" -[jg] (\S+)", line)
                if chain not in chains and target and target.group(1).startswith(prefixes):
                    rule = shlex.split(line)[2:]  # iptables-save quotes comments
                    subprocess.run(
                        [binary, "-w", "-t", table, "-D", chain, *rule],
                        capture_output=True,
                        check=False,
                    )
            for flag in ("-F", "-X"):
                for chain in chains:
                    subprocess.run(
                        [binary, "-w", "-t", table, flag, chain], capture_output=True, check=False
                    )
