"""What a drill needs of the cluster a venue runs on, whichever it is: the local cluster
(`cluster.Cluster`, whose node is this host) or kind's (`kind.KindCluster`, whose node is a
Docker container, reached with `docker exec`). The operator's e2e runs on either: on the
local cluster in `make test`, on kind in `make e2e-kind` (which sets `TARGET_ENV`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from workloads.common.objectstore import ObjectStoreSettings

TARGET_ENV = "EXCHANGE_E2E_KIND_TARGET"
"""A kind target's description (`kind.write_target`); unset: the local cluster."""


class Node(Protocol):
    """A cluster's API and its one node's processes."""

    @property
    def kubeconfig(self) -> Path: ...

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str: ...

    def apply(self, *objects: dict[str, Any]) -> None: ...

    def container_pid(self, container_id: str) -> int:
        """The pid, in the node's pid namespace, of a container's first process."""
        ...

    def on_node(self, *argv: str, check: bool = True) -> str:
        """Run a command in the node's namespaces (as root); its stdout."""
        ...

    def tag_image(self, source: str, target: str) -> None: ...


class Services(Protocol):
    """PostgreSQL, Kafka and an S3 store where the venue's pods reach them."""

    def endpoints(self) -> dict[str, str]: ...

    def publish(self, namespace: str) -> None: ...

    def archive(self, prefix: str) -> ObjectStoreSettings:
        """The S3 store (its first bucket), for a Market's spec.archive and for checks."""
        ...

    @property
    def prometheus_url(self) -> str:
        """A Prometheus that scrapes the venues' pods (the chart's alert rules loaded)."""
        ...
