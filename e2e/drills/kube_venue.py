"""A venue on a cluster, as a platform engineer runs one: the operator installed with Helm
from `charts/`, a namespace with the host services' ConfigMap and the admin tokens' Secret,
Markets applied with kubectl; and the ways a test reaches the parts (the gateway's
ClusterIP, the ledger's pod, a matcher's process).

The cluster is the local one or kind's, a `Node` either way (`e2e.env.target`)."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e2e.env import rollout
from e2e.env.helm import CHART, helm
from e2e.env.process import wait_until
from e2e.env.target import Node, Services

OPERATOR_NAMESPACE = "exchange-system"
ADMIN_TOKEN = "tok-operator"
GATEWAY_TOKEN = "tok-gateway"
TOKENS = f"operator:{ADMIN_TOKEN},alice:tok-alice,gateway:{GATEWAY_TOKEN}"


def install_operator(cluster: Node, *values: str) -> float:
    """`helm upgrade --install` of the chart; seconds until the operator is Available."""
    begin = time.monotonic()
    helm(
        "upgrade", "--install", "exchange-operator", str(CHART),
        "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
        "--set", "image.pullPolicy=Never", *values,
        kubeconfig=cluster.kubeconfig,
    )  # fmt: skip
    rollout.wait_available(cluster.kubectl, OPERATOR_NAMESPACE, "exchange-operator", timeout=120)
    return time.monotonic() - begin


def to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class KubeVenue:
    cluster: Node
    services: Services
    namespace: str
    show: Callable[[str], None] = to_stderr
    """Where `markets` prints its tables (the e2e tests write them past pytest's capture)."""

    def prepare(self) -> None:
        """The namespace's connections and admin tokens, as the operator expects them."""
        self.services.publish(self.namespace)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "exchange-admin-tokens", "namespace": self.namespace},
            "stringData": {"tokens": TOKENS, "gateway": GATEWAY_TOKEN},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(secret))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl(*args, input=input, check=check)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(manifest))

    def apply_market(self, name: str, symbol: str, **spec: Any) -> None:
        self.apply(
            {
                "apiVersion": "exchange.io/v1alpha1",
                "kind": "Market",
                "metadata": {"name": name},
                "spec": {"symbol": symbol, **spec},
            }
        )

    def get(self, resource: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            self.kubectl("get", resource, "-n", self.namespace, "-o", "json")
        )
        return found

    def exists(self, resource: str) -> bool:
        return bool(self.kubectl("get", resource, "-n", self.namespace, "-o", "name", check=False))

    def markets(self, step: str) -> str:
        """`kubectl get markets` with its real printer columns, printed into the test's
        output under `step`."""
        table = self.kubectl("get", "markets", "-n", self.namespace)
        self.show(f"\n$ kubectl get markets   # {step}\n{table}")
        return table

    def wait_market(
        self,
        name: str,
        until: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = 120,
    ) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def check() -> bool:
            seen.update(self.get(f"market/{name}"))
            return until(seen)

        self.wait(check, f"market {name}: {what}", timeout)
        return seen

    def wait(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        """`wait_until`, and on a timeout what someone on call would look at first."""
        try:
            wait_until(check, timeout=timeout, what=what, interval=0.5)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.diagnostics()}") from None

    def diagnostics(self) -> str:
        ns = self.namespace
        parts = [
            self.kubectl("get", "markets,safetymodes,pods,statefulsets,deployments,pvc", "-n",
                         ns, "-o", "wide", check=False),
            self.kubectl("get", "events", "-n", ns, "--sort-by=.lastTimestamp",
                         check=False)[-4000:],
            "operator:\n" + self.operator_log(),
            self.kubectl("get", "pods,endpointslices,leases", "-n", ns, "--show-labels",
                         "-o", "wide", check=False),
        ]  # fmt: skip
        for pod in self.get("pods")["items"]:
            name = pod["metadata"]["name"]
            if pod["status"].get("phase") == "Pending":
                conditions = json.dumps(pod["status"].get("conditions"), indent=1)
                parts.append(f"{name} (pending): {conditions}")
            elif name.startswith("matcher-") or not all(
                c.get("ready") for c in pod["status"].get("containerStatuses", [])
            ):
                tail = self.kubectl("logs", "-n", ns, name, "--all-containers", "--tail=40",
                                    check=False)  # fmt: skip
                parts.append(f"{name}:\n{tail[-6000:]}")
        return "\n".join(parts)

    def operator_metric(self, name: str) -> float:
        """A counter summed over the operator's replicas (only the active one counts)."""
        total = 0.0
        pods = json.loads(
            self.kubectl(
                "get",
                "pods",
                "-n",
                OPERATOR_NAMESPACE,
                "-l",
                "app.kubernetes.io/name=exchange-operator",
                "-o",
                "json",
            )
        )
        for pod in pods["items"]:
            url = f"http://{pod['status']['podIP']}:9090/metrics"
            with urllib.request.urlopen(url, timeout=5) as answer:
                for line in answer.read().decode().splitlines():
                    if line.startswith(name) and not line.startswith("#"):
                        total += float(line.split()[-1])
        return total

    def operator_log(self, lines: int = 40) -> str:
        """The operator replicas' last log lines, but the probes."""
        text = self.kubectl(
            "logs", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=exchange-operator",
            f"--tail={lines}", "--prefix", check=False,
        )  # fmt: skip
        return "\n".join(line[:400] for line in text.splitlines() if "healthz" not in line)

    @property
    def gateway_url(self) -> str:
        """The gateway's Service: the node reaches ClusterIPs through kube-proxy's rules."""
        ip = self.get("service/gateway")["spec"]["clusterIP"]
        return f"http://{ip}:8081"

    @property
    def ledger_url(self) -> str:
        ip = self.get("pod/ledger-0")["status"]["podIP"]
        return f"http://{ip}:8082"

    def leader_pod(self, market: str) -> str:
        """The matcher pod that holds `market`'s Lease now ("" when nobody does)."""
        holder = str(self.get(f"lease/matcher-{market}")["spec"].get("holderIdentity") or "")
        return holder.split("/")[0]

    def standby_pod(self, market: str) -> str:
        """The other matcher pod of a market with two (the standby, or becoming it)."""
        leader = self.leader_pod(market)
        pods = json.loads(self.kubectl(
            "get", "pods", "-n", self.namespace, "-o", "json",
            "-l", f"app.kubernetes.io/name=matcher,app.kubernetes.io/instance={market}",
        ))  # fmt: skip
        names = [str(p["metadata"]["name"]) for p in pods["items"]]
        return next(name for name in names if name != leader)

    def pod_ip(self, pod: str) -> str:
        return str(self.get(f"pod/{pod}")["status"]["podIP"])

    def matcher_pid(self, market: str, pod: str = "") -> int:
        """The node's pid of the matcher process in `pod` (default: the leader's), a child of
        the instance manager, the container's first process."""
        found = self.get(f"pod/{pod or self.leader_pod(market)}")
        status = next(c for c in found["status"]["containerStatuses"] if c["name"] == "matcher")
        init = self.cluster.container_pid(status["containerID"].split("://")[-1])
        children = self.cluster.on_node("cat", f"/proc/{init}/task/{init}/children").split()
        return int(children[0])

    def signal_matcher(self, market: str, pod: str, sig: signal.Signals) -> int:
        """Send `sig` to the matcher process in `pod`; its pid, for a later signal."""
        pid = self.matcher_pid(market, pod)
        self.signal(pid, sig)
        return pid

    def signal(self, pid: int, sig: signal.Signals) -> None:
        self.cluster.on_node("kill", f"-{sig.name.removeprefix('SIG')}", str(pid))


def condition(market: dict[str, Any], kind: str) -> tuple[str, str]:
    """(status, reason) of a Market's condition, ("", "") when it has none yet."""
    for found in (market.get("status") or {}).get("conditions") or []:
        if found["type"] == kind:
            return found["status"], found["reason"]
    return "", ""


def ready(market: dict[str, Any]) -> bool:
    return condition(market, "Ready")[0] == "True"
