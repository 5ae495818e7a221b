"""The node agents: the kubelet and kube-proxy, as host processes with their own identities.

Both take everything from a configuration file written here. The kubelet settings that this
machine class needs (INFRA-NOTES): cgroupfs and `failCgroupV1: false` (the kernel mounts
cgroup v1), `failSwapOn: false`, eviction thresholds low enough and image GC off so that
locally imported images, which cannot be pulled again, are never collected. Everything
the kubelet writes lives under the cluster's state directory and cgroup root, so a second
cluster on the same host does not collide with the first.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from e2e.env import certs, gobuild
from e2e.env.kube import ControlPlane
from e2e.env.process import ManagedProcess, free_port


@dataclass
class Kubelet:
    """The kubelet of node `node_name`, registered as `system:node:<name>` (`system:nodes`)."""

    home: Path
    plane: ControlPlane
    node_name: str
    node_ip: str
    runtime_endpoint: str
    cgroup_root: str
    cluster_dns: str
    die_with_parent: bool = True
    port: int = field(default_factory=free_port)
    healthz_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def root_dir(self) -> Path:
        """The kubelet's `--root-dir`: pod volumes (mounted), plugins, checkpoints."""
        return self.home / "root"

    @property
    def pod_logs_dir(self) -> Path:
        return self.home / "pod-logs"

    def _kubeconfig(self) -> Path:
        user = f"system:node:{self.node_name}"
        pair = certs.issue(
            self.plane.ca_pair(),
            self.plane.pki / "kubelet",
            user,
            orgs=("system:nodes",),
            client=True,
        )
        return self.plane.component_kubeconfig("kubelet", user, pair)

    def _config(self) -> Path:
        resolv = self.home / "resolv.conf"
        resolv.write_text("")  # pods see only the cluster DNS, never the host's resolvers
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.node_ip,
            "port": self.port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.ca)},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": self.runtime_endpoint,
            "clusterDNS": [self.cluster_dns],
            "clusterDomain": "cluster.local",
            "resolvConf": str(resolv),
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
                "imagefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "makeIPTablesUtilChains": False,
            "podLogsDir": str(self.pod_logs_dir),
            "volumePluginDir": str(self.home / "volume-plugins"),
            "serializeImagePulls": False,
            "rotateCertificates": False,
        }
        path = self.home / "kubelet-config.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def spawn(self) -> ManagedProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "kubelet",
            [
                str(gobuild.binary("kubelet")),
                f"--config={self._config()}",
                f"--kubeconfig={self._kubeconfig()}",
                f"--root-dir={self.root_dir}",
                f"--cert-dir={self.home / 'pki'}",  # its self-signed serving certificate
                f"--hostname-override={self.node_name}",
                f"--node-ip={self.node_ip}",
                "--v=1",
            ],
            self.home,
            die_with_parent=self.die_with_parent,
        )
        self.process.start()
        return self.process

    def healthy(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.healthz_port}/healthz")


@dataclass
class KubeProxy:
    """kube-proxy in iptables mode as `system:kube-proxy` (bound to `system:node-proxier`)."""

    home: Path
    plane: ControlPlane
    node_name: str
    node_ip: str
    cluster_cidr: str
    die_with_parent: bool = True
    healthz_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = field(default=None, init=False)

    def _config(self) -> Path:
        pair = certs.issue(
            self.plane.ca_pair(), self.plane.pki / "kube-proxy", "system:kube-proxy", client=True
        )
        kubeconfig = self.plane.component_kubeconfig("kube-proxy", "system:kube-proxy", pair)
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": self.cluster_cidr,
            "hostnameOverride": self.node_name,
            "healthzBindAddress": f"127.0.0.1:{self.healthz_port}",
            "metricsBindAddress": f"127.0.0.1:{self.metrics_port}",
            "nodePortAddresses": [f"{self.node_ip}/32"],
            # syncPeriod also paces the check of kube-proxy's canary chains: when another
            # cluster's teardown flushes the shared KUBE-* chains, this one restores them.
            "iptables": {"syncPeriod": "10s", "minSyncPeriod": "1s", "localhostNodePorts": False},
            # Leave the host's conntrack table size and timeouts as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.home / "kube-proxy-config.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def spawn(self) -> ManagedProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "kube-proxy",
            [str(gobuild.binary("kube-proxy")), f"--config={self._config()}", "--v=1"],
            self.home,
            die_with_parent=self.die_with_parent,
        )
        self.process.start()
        return self.process

    def healthy(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.healthz_port}/healthz")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
