"""The pod network of a single node: one Linux bridge and the CNI bridge plugin.

The bridge is created before anything starts, because its address is the node's IP: the API
server, CoreDNS, PostgreSQL and Kafka bind it, and pods reach them there. The `dummy` link
type is missing from this kernel and a loopback node IP is refused by the kubelet, so the
bridge's own address serves. Pods talk only to each other and to the host, so there is no
masquerading (`ipMasq: false`) and no route out.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path


class NetworkConflict(RuntimeError):
    """The bridge's address or name is in use by something that is not this cluster."""


@dataclass(frozen=True)
class PodNetwork:
    """A bridge `name` whose address `cidr` (for example 10.244.0.1/24) is the node IP and
    the pods' gateway; pods get addresses from `pod_range` (first, last) inside it."""

    name: str
    cidr: str
    pod_range: tuple[str, str]

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.cidr)

    @property
    def address(self) -> str:
        """The bridge address: node IP, gateway, and where host services listen."""
        return str(self.interface.ip)

    @property
    def subnet(self) -> str:
        return str(self.interface.network)

    def exists(self) -> bool:
        return Path(f"/sys/class/net/{self.name}").exists()

    def ensure(self) -> None:
        """Create the bridge, give it its address and bring it up (each step idempotent)."""
        holder = _interface_with(self.address)
        if holder not in (None, self.name):
            raise NetworkConflict(f"{self.address} is already on interface {holder}")
        if not self.exists():
            _ip("link", "add", self.name, "type", "bridge")
        if holder is None:
            _ip("addr", "add", self.cidr, "dev", self.name)
        _ip("link", "set", self.name, "up")

    def delete(self) -> None:
        if self.exists():
            _ip("link", "delete", self.name)

    def write_conflist(self, conf_dir: Path, network: str, ipam_dir: Path) -> Path:
        """The CNI configuration containerd reads: bridge + portmap (+ loopback, built in)."""
        conf_dir.mkdir(parents=True, exist_ok=True)
        first, last = self.pod_range
        conflist = {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.name,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(ipam_dir),
                        "ranges": [
                            [
                                {
                                    "subnet": self.subnet,
                                    "rangeStart": first,
                                    "rangeEnd": last,
                                    "gateway": self.address,
                                }
                            ]
                        ],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        path = conf_dir / "10-exchange.conflist"
        path.write_text(json.dumps(conflist, indent=2))
        return path


def prepare_host() -> None:
    """The kernel settings a bridged pod network with kube-proxy needs (as kubeadm asks):
    bridged traffic goes through iptables, so that a Service's reply from a pod on the same
    bridge is un-NATed, and the host forwards between the bridge's ports and itself."""
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if not bridge_nf.exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    for knob in (bridge_nf, Path("/proc/sys/net/ipv4/ip_forward")):
        if knob.exists() and knob.read_text().strip() != "1":
            knob.write_text("1")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _interface_with(address: str) -> str | None:
    out = subprocess.run(
        ["ip", "-json", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    for link in json.loads(out or "[]"):
        for info in link.get("addr_info", []):
            if info.get("local") == address:
                return str(link["ifname"])
    return None
