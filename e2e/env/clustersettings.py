"""The settings of one local cluster: its name, state directory, addresses and ports.

They are saved in the state directory (`cluster.json`), so that a later process, such as
`make cluster-down`, acts on exactly the cluster that was started.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from e2e.env import cni, paths, registry


@dataclass(frozen=True)
class ClusterSettings:
    """Where a cluster lives and which addresses and ports it takes."""

    name: str
    """Names the node (`<name>-node`), the cgroup root and the CNI network."""
    state_dir: Path
    bridge: str = "cni0"
    bridge_cidr: str = "10.244.0.1/24"
    """The bridge address is the node IP, the pods' gateway and the cluster DNS address."""
    pod_range: tuple[str, str] = ("10.244.0.2", "10.244.0.127")
    """The lower half of the /24; the upper half is left to a `secondary` cluster."""
    service_cidr: str = "10.0.0.0/24"
    api_port: int = 6443
    daemon: bool = False
    """True: the processes outlive the launcher (`make cluster-up`); False: they die with it."""

    @property
    def node_name(self) -> str:
        return f"{self.name}-node"

    @property
    def cgroup_root(self) -> str:
        return f"/exchange-{self.name}"

    @property
    def network(self) -> cni.PodNetwork:
        return cni.PodNetwork(self.bridge, self.bridge_cidr, self.pod_range)

    @property
    def address(self) -> str:
        return self.network.address

    def secondary(self, name: str, state_dir: Path, bridge: str, api_port: int) -> ClusterSettings:
        """Settings for a second cluster beside this one: the upper half of the pod and
        service ranges, so every address stays inside 10.244.0.0/24 and 10.0.0.0/24."""
        return replace(
            self,
            name=name,
            state_dir=state_dir,
            bridge=bridge,
            bridge_cidr="10.244.0.129/25",
            pod_range=("10.244.0.130", "10.244.0.254"),
            service_cidr="10.0.0.128/25",
            api_port=api_port,
        )

    def registry_entry(self) -> registry.Entry:
        owner = None if self.daemon else os.getpid()
        return registry.Entry(self.name, self.state_dir, self.bridge, self.address, owner)

    def save(self) -> None:
        data = {**asdict(self), "state_dir": str(self.state_dir)}
        (self.state_dir / "cluster.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> ClusterSettings:
        data = json.loads((state_dir / "cluster.json").read_text())
        return cls(
            **{**data, "state_dir": Path(data["state_dir"]), "pod_range": tuple(data["pod_range"])}
        )

    @classmethod
    def from_env(cls) -> ClusterSettings:
        """`make cluster-up`'s settings: EXCHANGE_CLUSTER_DIR (default <repo>/.run/cluster),
        EXCHANGE_CLUSTER_NAME (exchange), EXCHANGE_CLUSTER_BRIDGE (cni0),
        EXCHANGE_CLUSTER_API_PORT (6443)."""
        env = os.environ
        state_dir = Path(env.get("EXCHANGE_CLUSTER_DIR", paths.REPO_ROOT / ".run" / "cluster"))
        port = env.get("EXCHANGE_CLUSTER_API_PORT", "6443")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SystemExit(f"EXCHANGE_CLUSTER_API_PORT={port!r} is not a TCP port (1-65535)")
        return cls(
            name=env.get("EXCHANGE_CLUSTER_NAME", "exchange"),
            state_dir=state_dir.resolve(),
            bridge=env.get("EXCHANGE_CLUSTER_BRIDGE", "cni0"),
            api_port=int(port),
            daemon=True,
        )
