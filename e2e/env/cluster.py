"""A real single-node Kubernetes cluster on this host, without Docker: the local cluster.

`Cluster.start` brings the parts up in order, each after a readiness check, and prints how
long each took:

    bridge (the node IP) -> etcd -> kube-apiserver -> kube-controller-manager ->
    kube-scheduler -> containerd (+ image import, in parallel with the control plane) ->
    kubelet -> kube-proxy -> CoreDNS -> node Ready, DNS answering

Everything of one cluster lives in its state directory (certificates, kubeconfigs, etcd
data, containerd's images and containers, the kubelet's pods, logs, pid files) and under its
cgroup root; its settings are saved there so that `Cluster.load` can stop it from another
process. `teardown` removes it from the host again, and `leftovers` says what, if
anything, is still there.

A second cluster can run beside the first (tests do this): it takes the upper half of the
pod range (`ClusterSettings.secondary`), another bridge, other ports and another cgroup root.
The two share only kube-proxy's iptables chains, whose names are fixed; see `teardown`.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.env import cleanup, cni, gobuild, images, kube, registry
from e2e.env.clustersettings import ClusterSettings
from e2e.env.containerd import Containerd
from e2e.env.coredns import CLUSTER_ROLE, CLUSTER_ROLE_BINDING, CoreDNS
from e2e.env.kube import ControlPlane
from e2e.env.node import Kubelet, KubeProxy
from e2e.env.process import ManagedProcess, StartError, port_open, wait_until

BINARIES = ("etcd", *gobuild.CONTROL_PLANE, *gobuild.NODE, "coredns", "crictl")

DEFAULT_STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": "standard",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": "kubernetes.io/host-path",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}
"""PVCs without a class bind to a host directory (kube-controller-manager's host-path
provisioner, enabled by `--enable-hostpath-provisioner`): data outlives its pod."""

STOP_ORDER = (
    "coredns",
    "kube-proxy",
    "kubelet",
    "containerd",
    "kafka",
    "postgres",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)


@dataclass
class Cluster:
    """One local cluster: start it, use it through `kubectl`, tear it down."""

    settings: ClusterSettings
    log: Callable[[str], None] = field(
        default=lambda line: print(line, file=sys.stderr, flush=True)
    )

    def __post_init__(self) -> None:
        s = self.settings
        self.plane = ControlPlane(
            s.state_dir,
            s.api_port,
            host=s.address,
            extra_server_names=(s.node_name,),
            service_account_admission=True,
            scheduler=True,
            service_cidr=s.service_cidr,
            die_with_parent=not s.daemon,
        )
        self.containerd = Containerd(
            s.state_dir / "containerd", s.state_dir / "cni" / "net.d", not s.daemon
        )
        self.kubelet = Kubelet(
            s.state_dir / "kubelet",
            self.plane,
            s.node_name,
            s.address,
            self.containerd.endpoint,
            s.cgroup_root,
            s.address,
            die_with_parent=not s.daemon,
        )
        self.kube_proxy = KubeProxy(
            s.state_dir / "kube-proxy",
            self.plane,
            s.node_name,
            s.address,
            s.network.subnet,
            die_with_parent=not s.daemon,
        )
        self.coredns = CoreDNS(s.state_dir / "coredns", self.plane, s.address, not s.daemon)

    @classmethod
    def load(cls, state_dir: Path) -> Cluster:
        return cls(ClusterSettings.load(state_dir))

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    @property
    def address(self) -> str:
        return self.settings.address

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.plane.kubectl(*args, input=input, check=check)

    def apply(self, *objects: dict[str, Any]) -> None:
        """Server-side apply of manifests given as dicts."""
        kube.apply(self.kubectl, *objects)

    # -- the node's processes, for drills (kind's are reached through `docker exec`) ---

    def container_pid(self, container_id: str) -> int:
        """The pid of a container's first process, as the node sees it (here: the host)."""
        return self.containerd.container_pid(container_id)

    def on_node(self, *argv: str, check: bool = True) -> str:
        """Run a command in the node's namespaces (here: on the host); its stdout."""
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def tag_image(self, source: str, target: str) -> None:
        """Give an image the node's runtime holds a second name (an "upgrade" to a tag)."""
        self.on_node(*self.containerd.ctr("images", "tag", "--force", source, target))

    # -- start ------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> dict[str, float]:
        """Bring the cluster up; a cluster that is already up is left alone (returns {})."""
        with self._lock():
            if self.running():
                self.log(f"cluster {self.settings.name}: already up")
                return {}
            sweep_stale()
            self._preflight()
            if owned_pids(self.settings.state_dir):
                self.log(f"cluster {self.settings.name}: partly running, restarting it")
                self.teardown()
            try:
                return self._start(timeout)
            except BaseException:
                self.log(f"cluster {self.settings.name}: start failed, tearing down")
                self.teardown(check=False)
                raise

    def _preflight(self) -> None:
        """Fail before touching the host when something is missing or taken."""
        missing = [n for n in BINARIES if not gobuild.binary(n).exists()]
        if images.pause_archive() is None:
            missing.append("pause image")
        if missing:
            raise StartError(f"not built yet: {', '.join(missing)}; run `make setup`")
        if len(str(self.containerd.socket)) > 100:  # sun_path holds 108 bytes
            raise StartError(
                f"state directory {self.settings.state_dir} is too deep for containerd's "
                "unix socket; choose a shorter one (EXCHANGE_CLUSTER_DIR)"
            )
        _check_no_conflict(self.settings)

    def _start(self, timeout: float) -> dict[str, float]:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        s.state_dir.chmod(0o755)
        s.save()
        timings: dict[str, float] = {}
        begin = time.monotonic()

        step = time.monotonic()
        cni.prepare_host()
        s.network.ensure()
        s.network.write_conflist(
            s.state_dir / "cni" / "net.d", f"exchange-{s.name}", s.state_dir / "cni" / "ipam"
        )
        cleanup.ensure_cgroups(s.cgroup_root)
        registry.register(s.registry_entry())
        timings["bridge"] = self._done("bridge", f"{s.bridge} {s.bridge_cidr}", step)

        # containerd and the image import overlap with the control plane's start; the
        # worker thread only waits and imports, it spawns nothing.
        containerd = self.containerd.spawn()
        loaded: dict[str, float] = {}
        failure: list[BaseException] = []
        loader = threading.Thread(
            target=self._load_images, args=(containerd, timeout, loaded, failure), daemon=True
        )
        loader.start()

        for part, took in self.plane.start(timeout).items():
            timings[part] = self._report(part, "ready", took)
        loader.join(timeout)
        if failure:
            raise failure[0]
        for part, took in loaded.items():
            timings[part] = self._report(part, "ready", took)

        step = time.monotonic()
        self.apply(DEFAULT_STORAGE_CLASS, CLUSTER_ROLE, CLUSTER_ROLE_BINDING)
        timings["bootstrap objects"] = self._done("bootstrap", "StorageClass, RBAC", step)

        step = time.monotonic()
        kubelet = self.kubelet.spawn()
        kubelet.wait_ready(self.kubelet.healthy, timeout)
        kubelet.wait_ready(self.node_ready, timeout)
        timings["kubelet"] = self._done("kubelet", f"node {s.node_name} Ready", step)

        step = time.monotonic()
        proxy = self.kube_proxy.spawn()
        dns = self.coredns.spawn()
        proxy.wait_ready(self.kube_proxy.healthy, timeout)
        timings["kube-proxy"] = self._done("kube-proxy", "rules synced", step)
        dns.wait_ready(self.coredns.ready, timeout)
        timings["coredns"] = self._done("coredns", f"answering on {s.address}:53", step)
        timings["node ready and dns answering"] = time.monotonic() - begin

        step = time.monotonic()
        wait_until(
            lambda: "default" in self.kubectl("get", "serviceaccounts", "-o", "name", check=False),
            timeout=timeout,
            what="ServiceAccount default/default",
        )
        timings["default service account"] = self._done("service account", "default", step)
        timings["total"] = time.monotonic() - begin
        self.log(f"cluster {s.name}: up in {timings['total']:.1f}s")
        return timings

    def _load_images(
        self,
        containerd: ManagedProcess,
        timeout: float,
        loaded: dict[str, float],
        failure: list[BaseException],
    ) -> None:
        try:
            start = time.monotonic()
            containerd.wait_ready(self.containerd.ready, timeout)
            loaded["containerd"] = time.monotonic() - start
            for archive in (images.pause_archive(), images.project_archive()):
                if archive is not None:
                    step = time.monotonic()
                    self.containerd.load(archive)
                    loaded[f"image {archive.name}"] = time.monotonic() - step
        except BaseException as exc:
            failure.append(exc)

    def _done(self, part: str, what: str, since: float) -> float:
        return self._report(part, what, time.monotonic() - since)

    def _report(self, part: str, what: str, took: float) -> float:
        self.log(f"cluster {self.settings.name}: {part} {what} in {took:.1f}s")
        return took

    def node_ready(self) -> bool:
        out = self.kubectl(
            "get", "node", self.settings.node_name,
            "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )  # fmt: skip
        return out.strip() == "True"

    def running(self) -> bool:
        """Every process of the cluster is alive, the API answers and the node is Ready."""
        alive = {name for name, _pid in owned_pids(self.settings.state_dir).values()}
        wanted = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
        wanted |= {"containerd", "kubelet", "kube-proxy", "coredns"}
        if not wanted <= alive or not (self.settings.state_dir / "cluster.json").exists():
            return False
        return port_open(self.address, self.settings.api_port) and self.node_ready()

    def status(self) -> dict[str, str]:
        """Each process of the cluster with its pid, and the node's readiness."""
        processes = sorted(
            owned_pids(self.settings.state_dir).values(),
            key=lambda item: -STOP_ORDER.index(item[0]) if item[0] in STOP_ORDER else 0,
        )
        report = {name: f"running (pid {pid})" for name, pid in processes}
        api_up = port_open(self.address, self.settings.api_port)
        report["node"] = "Ready" if api_up and self.node_ready() else "not ready"
        return report

    # -- teardown -----------------------------------------------------------------------

    def teardown(self, check: bool = True, timeout: float = 60.0) -> list[str]:
        """Remove the cluster from the host and return what is left (raise if `check`).

        Pods go first, through the API while the kubelet still runs, and then any sandbox
        through the CRI: that unmounts their volumes, deletes their network namespaces and
        releases their IPs. Then every process stops, mounts left under the state directory
        are unmounted, the bridge, the cgroups and the iptables chains are removed.
        """
        s = self.settings
        present = bool(
            owned_pids(s.state_dir) or s.network.exists() or cleanup.mounts_under(s.state_dir)
        )
        step = time.monotonic()
        pv_paths = self._drain(timeout)
        self._remove_sandboxes()
        self._done("teardown", "pods and sandboxes removed", step)
        step = time.monotonic()
        processes = owned_pids(s.state_dir)
        for name in STOP_ORDER:
            for pid_file, (proc_name, pid) in processes.items():
                if proc_name == name:
                    cleanup.kill_processes([pid])
                    pid_file.unlink(missing_ok=True)
                    self._done("teardown", f"{name} stopped", step)
                    step = time.monotonic()
        ours = [*self.plane.processes, self.containerd.process, self.kubelet.process]
        ours += [self.kube_proxy.process, self.coredns.process]
        for process in ours:
            if process is not None and process.popen is not None:
                process.popen.poll()  # reap our own children
        self.plane.processes.clear()
        self._kill_strays()
        cleanup.unmount_under(s.state_dir)
        for path in pv_paths:
            subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)
        cleanup.remove_log_links(self.kubelet.pod_logs_dir)
        s.network.delete()
        others = [e for e in registry.entries() if e.state_dir != s.state_dir]
        if present or not others:  # a cluster already gone must not flush a live one's rules
            self._flush_iptables()
        if not others:
            cleanup.remove_kubelet_socket()
        with contextlib.suppress(OSError):
            Path("/tmp/hostpath_pv").rmdir()  # the provisioner's fixed parent, if now empty
        cleanup.remove_cgroups(s.cgroup_root)
        registry.unregister(s.name)
        left = self.leftovers(global_rules=not others)
        if check and left:
            raise RuntimeError(f"cluster {s.name} left behind:\n  " + "\n  ".join(left))
        self.log(f"cluster {s.name}: down" + (f", left: {left}" if left else ", nothing left"))
        return left

    def _drain(self, timeout: float) -> list[str]:
        """Delete all pods through the API (the kubelet tears them down properly) and
        return the host paths of the cluster's hostPath PersistentVolumes."""
        if not port_open(self.address, self.settings.api_port):
            return []
        for name, pid in owned_pids(self.settings.state_dir).values():
            if name in ("kube-controller-manager", "kube-scheduler"):
                cleanup.kill_processes([pid])  # nothing may recreate or place pods now
        volumes = self.kubectl(
            "get", "pv", "-o", "jsonpath={range .items[*]}{.spec.hostPath.path}{'\\n'}{end}",
            check=False,
        )  # fmt: skip
        pv_paths = [p for p in volumes.split() if p.startswith("/tmp/hostpath_pv/")]
        self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=1",
                     "--wait=false", check=False)  # fmt: skip
        kubelet_alive = any(n == "kubelet" for n, _ in owned_pids(self.settings.state_dir).values())
        if kubelet_alive:
            with contextlib.suppress(TimeoutError):
                wait_until(
                    lambda: (
                        not self.kubectl("get", "pods", "-A", "-o", "name", check=False).strip()
                    ),
                    timeout=timeout,
                    what="pods deleted",
                    interval=0.5,
                )
        return pv_paths

    def _remove_sandboxes(self) -> None:
        """Whatever the kubelet left: stop and remove every sandbox through the CRI."""
        if not self.containerd.socket.exists():
            return
        crictl = [str(gobuild.binary("crictl")), "--runtime-endpoint", self.containerd.endpoint,
                  "--timeout", "20s"]  # fmt: skip
        subprocess.run([*crictl, "rmp", "--all", "--force"], capture_output=True, check=False)

    def _kill_strays(self) -> None:
        """containerd's shims are not in its process group; their containers are their
        children. Kill the containers first (a killed shim orphans them), then the shims,
        then anything else that still names the state directory."""
        marker = str(self.settings.state_dir)
        for _ in range(3):
            owned = cleanup.processes_using(marker)
            if not owned:
                return
            shims = [pid for pid, cmd in owned.items() if "containerd-shim" in cmd]
            cleanup.kill_processes(cleanup.descendants(shims), timeout=5)
            cleanup.kill_processes(list(owned), timeout=5)

    def _flush_iptables(self) -> None:
        """kube-proxy's chains have fixed names shared by every cluster on the host. They are
        flushed whole; a surviving cluster's kube-proxy notices its canary chain is gone and
        rewrites its own rules within its sync period (10 s)."""
        proxy = gobuild.binary("kube-proxy")
        if proxy.exists():
            subprocess.run([str(proxy), "--cleanup"], capture_output=True, check=False)
        cleanup.remove_chains()

    def leftovers(self, global_rules: bool = True) -> list[str]:
        """What of this cluster is still on the host: processes, mounts (volumes, sandbox
        shm, network namespaces), the bridge, cgroups and, if `global_rules`, any
        KUBE-*/CNI-* iptables rule (only meaningful when no other cluster runs)."""
        s = self.settings
        left = [
            f"process {pid}: {cmd}"
            for pid, cmd in cleanup.processes_using(str(s.state_dir)).items()
        ]
        left += [f"mount {point}" for point in cleanup.mounts_under(s.state_dir)]
        if s.network.exists():
            left.append(f"bridge {s.bridge}")
        left += [f"cgroup {path}" for path in cleanup.cgroup_dirs(s.cgroup_root) if path.exists()]
        if global_rules:
            left += cleanup.iptables_rules()
        return left

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.settings.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def owned_pids(state_dir: Path) -> dict[Path, tuple[str, int]]:
    """pid file -> (process name, pid) for the recorded processes that are alive and still
    the process that was recorded (their command line names the state directory)."""
    found: dict[Path, tuple[str, int]] = {}
    if not state_dir.exists():
        return found
    for pid_file in state_dir.glob("*/*.pid"):  # one level: not the shims' own pid files
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if str(state_dir) in cmdline and cleanup.alive(pid):
            found[pid_file] = (pid_file.stem, pid)
    return found


def sweep_stale() -> list[str]:
    """Tear down clusters whose launcher died without stopping them (a killed test run).
    Daemon clusters are left alone."""
    swept = []
    for entry in registry.entries():
        if entry.stale:
            if (entry.state_dir / "cluster.json").exists():
                Cluster.load(entry.state_dir).teardown(check=False)
            registry.unregister(entry.name)
            swept.append(entry.name)
    return swept


def _check_no_conflict(settings: ClusterSettings) -> None:
    """Refuse to start over another live cluster's name, bridge or address."""
    mine = settings.registry_entry()
    for other in registry.entries():
        if mine.clashes_with(other):
            raise StartError(
                f"cluster {other.name} ({other.state_dir}) uses bridge {other.bridge} with "
                f"{other.address}: stop it first (`make cluster-down`, or `python -m e2e.env "
                f"cluster-down --state-dir {other.state_dir}`)"
            )
