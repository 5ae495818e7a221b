"""CoreDNS on the host as the cluster DNS, bound to the bridge address.

It runs beside the kubelet instead of as a pod: it then needs no image from a registry, and
it is up before the first pod starts. It answers only for `cluster.local` and the reverse
zones; there is no `forward`, so nothing a pod asks ever leaves the host.
"""

from __future__ import annotations

import socket
import struct
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from e2e.env import certs, gobuild
from e2e.env.kube import ControlPlane
from e2e.env.process import ManagedProcess, free_port

CLUSTER_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "system:coredns"},
    "rules": [
        {
            "apiGroups": [""],
            "resources": ["endpoints", "services", "pods", "namespaces"],
            "verbs": ["list", "watch"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        },
    ],
}
"""What the `kubernetes` plugin reads (kubeadm grants CoreDNS the same)."""

CLUSTER_ROLE_BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRoleBinding",
    "metadata": {"name": "system:coredns"},
    "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:coredns",
    },
    "subjects": [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}
    ],
}


@dataclass
class CoreDNS:
    """CoreDNS serving `cluster.local` on `address`:53 with the identity `system:coredns`."""

    home: Path
    plane: ControlPlane
    address: str
    die_with_parent: bool = True
    ready_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = field(default=None, init=False)

    def _corefile(self) -> Path:
        pair = certs.issue(
            self.plane.ca_pair(), self.plane.pki / "coredns", "system:coredns", client=True
        )
        kubeconfig = self.plane.component_kubeconfig("coredns", "system:coredns", pair)
        corefile = self.home / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {self.address}
    errors
    ready 127.0.0.1:{self.ready_port}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} local
        pods insecure
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""
        )
        return corefile

    def spawn(self) -> ManagedProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "coredns",
            [str(gobuild.binary("coredns")), "-conf", str(self._corefile())],
            self.home,
            die_with_parent=self.die_with_parent,
        )
        self.process.start()
        return self.process

    def ready(self, probe: str = "kubernetes.default.svc.cluster.local") -> bool:
        """Its kubernetes plugin has synced and a query for `probe` gets an A record."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ready_port}/ready", timeout=2
            ) as response:
                if response.status != 200:
                    return False
        except OSError:
            return False
        return bool(resolve(self.address, probe))


def resolve(server: str, name: str, timeout: float = 1.0) -> list[str]:
    """The A records for `name` from the DNS server at `server`:53 (one UDP query)."""
    query = build_query(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(query, (server, 53))
            reply = sock.recv(4096)
        except OSError:
            return []
    return parse_answer(query, reply)


_QUERY_ID = 0x4558


def build_query(name: str) -> bytes:
    """A recursive query for the A record of `name`."""
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    header = struct.pack(">HHHHHH", _QUERY_ID, 0x0100, 1, 0, 0, 0)
    return header + question + b"\0" + struct.pack(">HH", 1, 1)


def parse_answer(query: bytes, reply: bytes) -> list[str]:
    """The IPv4 addresses in the answer section of `reply`; [] for an error or another id."""
    if len(reply) < 12:
        return []
    answer_id, flags, _questions, answers = struct.unpack(">HHHH", reply[:8])
    if answer_id != _QUERY_ID or flags & 0x000F:  # another reply, or an error rcode
        return []
    offset = len(query)  # the question is echoed back as sent
    found = []
    for _ in range(answers):
        offset = _skip_name(reply, offset)
        kind, _cls, _ttl, length = struct.unpack(">HHIH", reply[offset : offset + 10])
        offset += 10
        if kind == 1 and length == 4:
            found.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += length
    return found


def _skip_name(packet: bytes, offset: int) -> int:
    while True:
        length = packet[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return offset + 2
        offset += length + 1
