"""A real Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager and,
for a cluster with a node, kube-scheduler.

Started the way controller-runtime's envtest starts one (self-signed serving certificate,
an admin client certificate in `system:masters`, service-account signing keys, RBAC), plus
the controller-manager so that owner-reference garbage collection, Deployments and
StatefulSets behave as in a cluster. The local cluster (`cluster.py`) starts the same
control plane bound to its bridge address, with the ServiceAccount admission plugin and the
scheduler on, and adds the node (kubelet, containerd, kube-proxy, CoreDNS).
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.env import certs, gobuild
from e2e.env.process import ManagedProcess, free_port, port_open, wait_until

SERVICE_CIDR = "10.0.0.0/24"
FIRST_SERVICE_IP = "10.0.0.1"


def version() -> str:
    out = subprocess.run(
        [str(gobuild.binary("kube-apiserver")), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    etcd = subprocess.run(
        [str(gobuild.binary("etcd")), "--version"], capture_output=True, text=True, check=True
    )
    return f"{out.stdout.strip()}, etcd {etcd.stdout.split()[2]}"


def apply(kubectl: Callable[..., str], *objects: dict[str, Any]) -> None:
    """Server-side apply of manifests given as dicts, as one List."""
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=body)


def wait_established(kubectl: Callable[..., str], *crds: str, timeout: float = 60) -> None:
    """Until every CRD (`name.group`) is Established: right after its creation the API server
    answers 429 "storage is (re)initializing" for objects of it."""
    established = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    wait_until(
        lambda: all(
            kubectl("get", "crd", crd, "-o", established, check=False) == "True" for crd in crds
        ),
        timeout=timeout,
        what=f"CRDs {', '.join(crds)} Established",
    )


def write_kubeconfig(path: Path, server: str, ca: Path, client: certs.KeyPair, user: str) -> Path:
    """A kubeconfig with the certificates embedded by path (one cluster, user and context)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(client.cert), "client-key": str(client.key)},
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager under `run_dir/kube`."""

    run_dir: Path
    api_port: int
    host: str = "127.0.0.1"
    extra_server_names: tuple[str, ...] = ()
    service_account_admission: bool = False
    """Off for an API-only control plane (envtest's choice); a node with pods needs it on."""
    scheduler: bool = False
    """Only useful with a node to schedule pods on."""
    service_cidr: str = SERVICE_CIDR
    die_with_parent: bool = True
    """Off for a cluster that outlives its launcher (`make cluster-up`)."""
    processes: list[ManagedProcess] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.home = self.run_dir / "kube"
        self.pki = self.home / "pki"
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.kcm_port = free_port()
        self.scheduler_port = free_port()

    @property
    def first_service_ip(self) -> str:
        """The `kubernetes` Service's ClusterIP: the first address of the service range."""
        return str(ipaddress.IPv4Network(self.service_cidr)[1])

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "admin.kubeconfig"

    def _pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        if (self.pki / "ca.crt").exists():
            return
        ca = certs.make_ca(self.pki)
        names = (
            "127.0.0.1",
            self.host,
            self.first_service_ip,
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            *self.extra_server_names,
        )
        certs.issue(
            ca, self.pki / "apiserver", "kube-apiserver", server_names=tuple(dict.fromkeys(names))
        )
        certs.issue(ca, self.pki / "admin", "exchange-admin", orgs=("system:masters",), client=True)
        certs.issue(
            ca,
            self.pki / "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            orgs=("system:masters",),
            client=True,
        )
        certs.issue(
            ca, self.pki / "controller-manager", "system:kube-controller-manager", client=True
        )
        certs.issue(ca, self.pki / "scheduler", "system:kube-scheduler", client=True)
        certs.make_signing_key(self.pki / "sa")

    def _pair(self, name: str) -> certs.KeyPair:
        return certs.KeyPair(self.pki / f"{name}.crt", self.pki / f"{name}.key")

    def ca_pair(self) -> certs.KeyPair:
        """The cluster CA, for components that get their own client certificate."""
        return self._pair("ca")

    def component_kubeconfig(self, name: str, user: str, pair: certs.KeyPair) -> Path:
        """A kubeconfig for a component with its own identity (`user` is its CN)."""
        return write_kubeconfig(self.home / f"{name}.kubeconfig", self.server, self.ca, pair, user)

    def start(self, timeout: float = 60.0) -> dict[str, float]:
        """Start the processes in order, each after the previous one is ready."""
        self._pki()
        ca = self.pki / "ca.crt"
        write_kubeconfig(self.kubeconfig, self.server, ca, self._pair("admin"), "admin")
        kcm_config = write_kubeconfig(
            self.home / "controller-manager.kubeconfig",
            self.server,
            ca,
            self._pair("controller-manager"),
            "system:kube-controller-manager",
        )
        timings = {}
        etcd = self._spawn(
            "etcd",
            [
                str(gobuild.binary("etcd")),
                "--name", "default",
                "--data-dir", str(self.home / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster", f"default=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
        )  # fmt: skip
        timings["etcd"] = etcd.wait_ready(lambda: port_open("127.0.0.1", self.etcd_port), timeout)
        admission = (
            [] if self.service_account_admission else ["--disable-admission-plugins=ServiceAccount"]
        )
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(gobuild.binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={self.pki / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki / 'apiserver.key'}",
                f"--client-ca-file={ca}",
                f"--service-account-key-file={self.pki / 'sa.pub'}",
                f"--service-account-signing-key-file={self.pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--kubelet-client-certificate={self.pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={self.pki / 'apiserver-kubelet-client.key'}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                *admission,
                "--v=1",
            ],
        )
        timings["kube-apiserver"] = apiserver.wait_ready(self._apiserver_ready, timeout)
        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(gobuild.binary("kube-controller-manager")),
                f"--kubeconfig={kcm_config}",
                f"--authentication-kubeconfig={kcm_config}",
                f"--authorization-kubeconfig={kcm_config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.kcm_port}",
                "--leader-elect=false",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={ca}",
                f"--cluster-signing-cert-file={ca}",
                f"--cluster-signing-key-file={self.pki / 'ca.key'}",
                "--use-service-account-credentials=true",
                "--controllers=*",
                "--enable-hostpath-provisioner=true",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--v=1",
            ],
        )
        timings["kube-controller-manager"] = kcm.wait_ready(
            lambda: _https_ok(f"https://127.0.0.1:{self.kcm_port}/healthz"), timeout
        )
        if self.scheduler:
            timings["kube-scheduler"] = self._start_scheduler(timeout)
        return timings

    def _start_scheduler(self, timeout: float) -> float:
        config = self.component_kubeconfig(
            "scheduler", "system:kube-scheduler", self._pair("scheduler")
        )
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(gobuild.binary("kube-scheduler")),
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.scheduler_port}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        return scheduler.wait_ready(
            lambda: _https_ok(f"https://127.0.0.1:{self.scheduler_port}/healthz"), timeout
        )

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.home, die_with_parent=self.die_with_parent)
        process.start()
        self.processes.append(process)
        return process

    def _apiserver_ready(self) -> bool:
        return _https_ok(
            f"{self.server}/readyz",
            ca=self.pki / "ca.crt",
            client=self._pair("admin"),
        )

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run the built kubectl against this control plane and return its stdout."""
        result = subprocess.run(
            [str(gobuild.binary("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def _https_ok(url: str, ca: Path | None = None, client: certs.KeyPair | None = None) -> bool:
    if ca is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
