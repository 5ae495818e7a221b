"""The kind tier, for hosts with a Docker engine (`make e2e-kind`): a kind cluster from
`e2e/kind.yaml`, the project's image built with Docker and loaded into it, PostgreSQL and
Kafka on the host at the kind network's gateway (pods reach it, as they reach the local
cluster's bridge address), the operator installed with Helm from `charts/`, the example
Markets applied, and the venue checked Ready.

It cannot run on the machines this project is developed on (no Docker engine; kind's node
image comes from a container registry). So that it does not rot, `make test` renders every
object it would apply (`objects`, the chart with `HELM_VALUES`) and has the real API server
accept them in a server-side dry run (`e2e/tests/test_kind_tier.py`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from typing import Any

import yaml

from e2e.env import images, kafka, paths, postgres
from e2e.env.helm import CHART, helm
from e2e.env.hostservices import config_map
from e2e.env.process import wait_until

NAME = "exchange"
CONFIG = paths.REPO_ROOT / "e2e" / "kind.yaml"
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


def _run(*argv: str, input: str | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, input=input, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _kind_gateway() -> tuple[str, str]:
    """(gateway address, subnet) of the `kind` Docker network: the host as pods see it."""
    found = json.loads(_run("docker", "network", "inspect", "kind"))
    config = next(c for c in found[0]["IPAM"]["Config"] if ":" not in c.get("Subnet", ":"))
    return config["Gateway"], config["Subnet"]


def run() -> int:
    """The whole tier on a Docker host; what it did and how to go on, on stdout."""
    missing = [tool for tool in ("docker", "kind") if shutil.which(tool) is None]
    if missing:
        print(f"make e2e-kind needs {' and '.join(missing)} on PATH (a Docker host); "
              "on this machine use `make test`, whose e2e runs on the local cluster")  # fmt: skip
        return 2
    run_dir = paths.REPO_ROOT / ".run" / "kind"
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
    pg.start()
    broker.start()
    endpoints = {
        "EXCHANGE_PG_HOST": pg.host,
        "EXCHANGE_PG_PORT": str(pg.port),
        "EXCHANGE_PG_DSN": pg.dsn,
        "EXCHANGE_KAFKA_BOOTSTRAP": broker.bootstrap,
    }

    def kubectl(*args: str, input: str | None = None) -> str:
        return _run("kubectl", f"--kubeconfig={kubeconfig}", *args, input=input)

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
    print(f"KUBECONFIG={kubeconfig}; delete with: kind delete cluster --name {NAME}; "
          f"PostgreSQL and Kafka run from {run_dir} (pid files there)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run())
