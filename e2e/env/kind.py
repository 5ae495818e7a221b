"""The kind tier, for hosts with a Docker engine (`make e2e-kind`): a kind cluster from
`e2e/kind.yaml`, the project's image built with Docker and loaded into it, PostgreSQL and
Kafka on the host at the kind network's gateway (pods reach it, as they reach the local
cluster's bridge address), the operator installed with Helm from `charts/`, the example
Markets applied and checked Ready; then the operator's e2e scenarios
(`e2e/tests/test_operator.py`) run against that cluster.

The scenarios reach the cluster as they reach the local one: Services and pods by their
addresses (this host routes the kind pod and Service ranges to the node container, which is
why the tier runs as root, like `make cluster-up`), and the node's processes (kill -9,
SIGSTOP, a network cut in a pod's namespace, an image tag) through `docker exec` on the node
(`KindCluster`, a `target.Node`).

It cannot run on the machines this project is developed on (no Docker engine; kind's node
image comes from a container registry). So that it does not rot, `make test` renders every
object it would apply (`objects`, the chart with `HELM_VALUES`) and has the real API server
accept them in a server-side dry run (`e2e/tests/test_kind_tier.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from e2e.env import gobuild, images, kafka, kube, paths, podtargets, postgres
from e2e.env.clickhouse import ClickHouseServer
from e2e.env.helm import CHART, helm
from e2e.env.hostservices import config_map
from e2e.env.process import wait_until
from e2e.env.prometheus import PrometheusServer, file_sd_job, write_target_groups
from e2e.env.s3 import S3Server
from e2e.env.target import TARGET_ENV
from workloads.common.objectstore import ObjectStoreSettings

NAME = "exchange"
NODE = f"{NAME}-control-plane"
"""The node's container (kind names it after the cluster)."""
CONFIG = paths.REPO_ROOT / "e2e" / "kind.yaml"
RUN_DIR = paths.REPO_ROOT / ".run" / "kind"
SCENARIOS = "e2e/tests/test_operator.py"
NAMESPACE = "venue-kind"
OPERATOR_NAMESPACE = "exchange-system"
EXAMPLES = ("btc-usdt.yaml", "eth-usdt.yaml")
HELM_VALUES = ("image.pullPolicy=Never",)
"""The image is loaded into the node (`kind load`), never pulled."""


def objects(endpoints: dict[str, str], tokens: str) -> list[dict[str, Any]]:
    """What `run` applies after the chart: the venue's namespace, its connections and admin
    tokens, and the example Markets."""
    markets = [
        yaml.safe_load((paths.REPO_ROOT / "crds" / "examples" / name).read_text())
        for name in EXAMPLES
    ]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        config_map(NAMESPACE, endpoints),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "exchange-admin-tokens", "namespace": NAMESPACE},
            "stringData": {"tokens": tokens},
        },
        *({**m, "metadata": {**m["metadata"], "namespace": NAMESPACE}} for m in markets),
    ]


def _run(*argv: str, input: str | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, input=input, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class KindCluster:
    """kind's cluster as a `target.Node`: kubectl with its kubeconfig, and the node's
    processes through `docker exec` on the node container (whose pid namespace holds every
    container's processes, as the host's does for the local cluster)."""

    kubeconfig: Path
    node: str = NODE

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        kubectl = str(gobuild.binary("kubectl"))
        return _run(kubectl, f"--kubeconfig={self.kubeconfig}", *args, input=input, check=check)

    def apply(self, *objects: dict[str, Any]) -> None:
        kube.apply(self.kubectl, *objects)

    def on_node(self, *argv: str, check: bool = True) -> str:
        return _run("docker", "exec", self.node, *argv, check=check)

    def container_pid(self, container_id: str) -> int:
        return int(json.loads(self.on_node("crictl", "inspect", container_id))["info"]["pid"])

    def tag_image(self, source: str, target: str) -> None:
        self.on_node("ctr", "--namespace", "k8s.io", "images", "tag", "--force", source, target)


@dataclass
class KindServices:
    """PostgreSQL, Kafka and S3 at the kind network's gateway, as a `target.Services`."""

    cluster: KindCluster
    endpoints_: dict[str, str]
    s3_endpoint: str
    prometheus_url: str = ""
    """The host's Prometheus scraping the kind pods (through the routes `run` adds)."""

    def endpoints(self) -> dict[str, str]:
        return dict(self.endpoints_)

    def archive(self, prefix: str) -> ObjectStoreSettings:
        return replace(S3Server(RUN_DIR).settings(prefix=prefix), endpoint=self.s3_endpoint)

    def publish(self, namespace: str) -> None:
        self.cluster.apply(config_map(namespace, self.endpoints_))


def write_target(
    path: Path, kubeconfig: Path, endpoints: dict[str, str], s3: str, prometheus_url: str
) -> None:
    path.write_text(json.dumps({"kubeconfig": str(kubeconfig), "node": NODE,
                                "endpoints": endpoints, "s3": s3,
                                "prometheus": prometheus_url}, indent=1))  # fmt: skip


def load_target(path: Path) -> tuple[KindCluster, KindServices]:
    """What `TARGET_ENV` names: the pytest fixture `kube_target` runs the scenarios on it."""
    found = json.loads(path.read_text())
    cluster = KindCluster(Path(found["kubeconfig"]), found["node"])
    return cluster, KindServices(
        cluster, found["endpoints"], found["s3"], found.get("prometheus", "")
    )


def routes(node_ip: str) -> list[list[str]]:
    """`ip route` commands that send the kind pod and Service ranges to the node container,
    so that this host reaches ClusterIPs (kube-proxy's rules in the node DNAT them) and pods
    as it does on the local cluster."""
    config = yaml.safe_load(CONFIG.read_text())["networking"]
    return [["ip", "route", "replace", config[key], "via", node_ip]
            for key in ("podSubnet", "serviceSubnet")]  # fmt: skip


def _kind_gateway() -> tuple[str, str]:
    """(gateway address, subnet) of the `kind` Docker network: the host as pods see it."""
    found = json.loads(_run("docker", "network", "inspect", "kind"))
    config = next(c for c in found[0]["IPAM"]["Config"] if ":" not in c.get("Subnet", ":"))
    return config["Gateway"], config["Subnet"]


def _node_ip() -> str:
    found = _run("docker", "inspect", "-f",
                 "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", NODE)  # fmt: skip
    return found.split()[0]


def run() -> int:
    """The whole tier on a Docker host; what it did and how to go on, on stdout."""
    missing = [tool for tool in ("docker", "kind") if shutil.which(tool) is None]
    if missing:
        print(f"make e2e-kind needs {' and '.join(missing)} on PATH (a Docker host); "
              "on this machine use `make test`, whose e2e runs on the local cluster")  # fmt: skip
        return 2
    if os.geteuid() != 0:
        print("make e2e-kind routes the kind pod and Service ranges to its node: run it as root")
        return 2
    run_dir = RUN_DIR
    run_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig = run_dir / "kubeconfig"
    if NAME not in _run("kind", "get", "clusters").split():
        _run("kind", "create", "cluster", "--name", NAME, "--config", str(CONFIG),
             "--kubeconfig", str(kubeconfig))  # fmt: skip
    images.ensure_wheels()
    _run("docker", "build", "-t", images.PROJECT_IMAGE, str(paths.REPO_ROOT))
    _run("kind", "load", "docker-image", images.PROJECT_IMAGE, "--name", NAME)

    gateway, subnet = _kind_gateway()
    pg = postgres.PostgresServer(
        run_dir, 25433, host=gateway, trusted_networks=(subnet,), die_with_parent=False
    )
    broker = kafka.KafkaBroker(run_dir, 29094, 29095, host=gateway, die_with_parent=False)
    store = S3Server(run_dir, 29012, host=gateway, die_with_parent=False)
    history = ClickHouseServer(run_dir, 29010, 28133, host=gateway, die_with_parent=False)
    pg.start()
    broker.start()
    store.start()
    history.start()
    endpoints = {
        "EXCHANGE_PG_HOST": pg.host,
        "EXCHANGE_PG_PORT": str(pg.port),
        "EXCHANGE_PG_DSN": pg.dsn,
        "EXCHANGE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "EXCHANGE_S3_ENDPOINT": store.endpoint,
        "EXCHANGE_CLICKHOUSE_URL": history.server_url,
    }

    kubectl = KindCluster(kubeconfig).kubectl
    for route in routes(_node_ip()):
        _run(*route)
    scraper = pod_scraper(run_dir, kubeconfig)

    begin = time.monotonic()
    helm("upgrade", "--install", "exchange-operator", str(CHART), "--namespace",
         OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "180s",
         *(f"--set={v}" for v in HELM_VALUES), kubeconfig=kubeconfig)  # fmt: skip
    manifest = {"apiVersion": "v1", "kind": "List", "items": objects(endpoints, "operator:tok")}
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))

    def ready() -> bool:
        found = json.loads(kubectl("get", "markets", "-n", NAMESPACE, "-o", "json"))["items"]
        return len(found) == len(EXAMPLES) and all(
            any(c["type"] == "Ready" and c["status"] == "True"
                for c in (m.get("status") or {}).get("conditions") or [])
            for m in found
        )  # fmt: skip

    wait_until(ready, timeout=300, what="the example Markets Ready", interval=2)
    print(kubectl("get", "markets", "-n", NAMESPACE))
    print(f"kind: the venue is Ready {time.monotonic() - begin:.0f}s after helm install")
    kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=180s")

    target = run_dir / "target.json"
    write_target(target, kubeconfig, endpoints, store.endpoint, scraper.url)
    print(f"kind: the operator's scenarios ({SCENARIOS}) on the kind cluster", flush=True)
    scenarios = subprocess.run(
        [sys.executable, "-m", "pytest", SCENARIOS, "-p", "no:cacheprovider", "-v"],
        cwd=paths.REPO_ROOT, env={**os.environ, TARGET_ENV: str(target)}, check=False,
    )  # fmt: skip
    print(f"KUBECONFIG={kubeconfig}; delete with: kind delete cluster --name {NAME}; "
          f"PostgreSQL and Kafka run from {run_dir} (pid files there)")  # fmt: skip
    return scenarios.returncode


def pod_scraper(run_dir: Path, kubeconfig: Path) -> PrometheusServer:
    """A Prometheus on this host (port 29191) scraping the kind pods, listed every 5 s."""
    pods = run_dir / "prometheus-pods.json"
    write_target_groups(pods, [])
    podtargets.process(run_dir, kubeconfig, pods, die_with_parent=False).start()
    scraper = PrometheusServer(
        run_dir, 29191, jobs=(), extra_scrape_configs=[file_sd_job("exchange-pods", pods)],
        die_with_parent=False,
    )  # fmt: skip
    scraper.start()
    return scraper


if __name__ == "__main__":
    sys.exit(run())
