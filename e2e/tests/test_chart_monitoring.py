"""The chart's monitoring objects for users of the Prometheus operator: a PodMonitor and a
PrometheusRule, rendered only with `monitoring.enabled`, accepted by a real API server that
holds the Prometheus operator's own CRDs (its Go module, pinned in versions.py), the rules
unchanged by the CRD's schema, a malformed rule refused; and the PodMonitor's selector and
ports match the pods the operator creates and the operator's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from exchange_operator import children
from exchange_operator.model import GROUP, MarketRef
from exchange_operator.settings import OperatorSettings
from exchange_operator.venue import Venue

from e2e.env import prometheus
from e2e.env.helm import CHART, helm
from e2e.env.kube import ControlPlane, wait_established
from e2e.env.process import wait_until
from e2e.env.prometheus import PrometheusServer, file_sd_job, pod_target_groups
from e2e.env.pytest_plugin import unique_name

MONITORING = ("--set", "monitoring.enabled=true")
TEMPLATES = ("--show-only", "templates/podmonitor.yaml", "--show-only",
             "templates/prometheusrule.yaml")  # fmt: skip
CRDS = tuple(f"{kind}.monitoring.coreos.com" for kind in prometheus.OPERATOR_CRDS)
JOBS = {"matcher", "ledger", "gateway", "history", "exchange-operator"}


def render(namespace: str, *values: str) -> list[dict[str, Any]]:
    text = helm("template", "exchange-operator", str(CHART), "--namespace", namespace, *values)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(d for d in documents if d["kind"] == kind)


@pytest.fixture(scope="module")
def monitoring_crds(kube_control_plane: ControlPlane) -> ControlPlane:
    plane = kube_control_plane
    crds = prometheus.operator_crds()
    for kind in prometheus.OPERATOR_CRDS:
        plane.kubectl("apply", "--server-side", "-f",
                      str(crds / f"monitoring.coreos.com_{kind}.yaml"))  # fmt: skip
    wait_established(plane.kubectl, *CRDS, timeout=30)
    return plane


@pytest.mark.integration
def test_monitoring_is_off_by_default_and_the_chart_lints_with_it_on() -> None:
    kinds = {d["kind"] for d in render("exchange-system")}
    assert not kinds & {"PodMonitor", "PrometheusRule", "ServiceMonitor"}
    assert "0 chart(s) failed" in helm("lint", str(CHART), "--strict", *MONITORING)
    only_scrape = render("exchange-system", *MONITORING, "--set", "monitoring.rules.enabled=false")
    assert {d["kind"] for d in only_scrape} >= {"PodMonitor"}
    assert "PrometheusRule" not in {d["kind"] for d in only_scrape}


@pytest.mark.integration
def test_the_podmonitor_and_the_rules_are_accepted_by_the_operator_crds_unchanged(
    monitoring_crds: ControlPlane, k8s_namespace: str
) -> None:
    plane = monitoring_crds
    values = (*MONITORING, "--set", f"monitoring.namespaces={{{k8s_namespace},venue-a}}",
              "--set", "monitoring.labels.release=kube-prometheus-stack")  # fmt: skip
    documents = render(k8s_namespace, *values, *TEMPLATES)
    assert {d["kind"] for d in documents} == {"PodMonitor", "PrometheusRule"}
    rendered = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    dry = plane.kubectl("apply", "--dry-run=server", "-n", k8s_namespace, "-f", "-",
                        input=rendered)  # fmt: skip
    assert "podmonitor.monitoring.coreos.com/exchange-operator created (server dry run)" in dry
    assert "prometheusrule.monitoring.coreos.com/exchange-operator-alerts created" in dry
    plane.kubectl("apply", "--server-side", "-n", k8s_namespace, "-f", "-", input=rendered)
    stored = json.loads(
        plane.kubectl(
            "get", "prometheusrule", "exchange-operator-alerts", "-n", k8s_namespace, "-o", "json"
        )
    )
    # A structural schema drops fields it does not know without a word: compare it all.
    assert stored["spec"] == yaml.safe_load(prometheus.RULES.read_text())
    assert stored["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    monitor = json.loads(
        plane.kubectl("get", "podmonitor", "exchange-operator", "-n", k8s_namespace, "-o", "json")
    )
    assert monitor["spec"] == by_kind(documents, "PodMonitor")["spec"]


@pytest.mark.integration
def test_a_malformed_rule_or_endpoint_is_refused_by_the_server(
    monitoring_crds: ControlPlane, k8s_namespace: str
) -> None:
    plane = monitoring_crds
    documents = render(k8s_namespace, *MONITORING, *TEMPLATES)
    rule = by_kind(documents, "PrometheusRule")
    first = rule["spec"]["groups"][0]["rules"][0]
    first["expression"] = first.pop("expr")
    with pytest.raises(RuntimeError, match="expr"):
        plane.kubectl("apply", "--dry-run=server", "-n", k8s_namespace, "-f", "-",
                      input=json.dumps(rule))  # fmt: skip
    monitor = by_kind(documents, "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "fifteen seconds"
    with pytest.raises(RuntimeError, match="interval"):
        plane.kubectl("apply", "--dry-run=server", "-n", k8s_namespace, "-f", "-",
                      input=json.dumps(monitor))  # fmt: skip


def operator_pods() -> list[dict[str, Any]]:
    """The pod templates of everything the operator runs for a venue with one market, and of
    the operator itself (the chart's Deployment)."""
    settings = OperatorSettings(
        image="localhost/exchange-platform:dev", namespace="exchange-system"
    )
    created = "2026-12-07T10:00:00Z"
    ref = MarketRef.of({"metadata": {"name": "btc-usdt", "uid": "u", "creationTimestamp": created},
                        "spec": {"symbol": "BTC-USDT"}})  # fmt: skip
    config = {"EXCHANGE_KAFKA_BOOTSTRAP": "10.244.0.1:29092",
              "EXCHANGE_PG_DSN": "postgresql://exchange@10.244.0.1:25432/postgres",
              "EXCHANGE_CLICKHOUSE_URL": "clickhouse://default:@10.244.0.1:29000"}  # fmt: skip
    venue = Venue("venue-a", [ref], settings, config).manifests()
    manifests = [*venue, *children.market_children(ref, "venue-a", settings, [])]
    manifests += render("exchange-system")
    return [m["spec"]["template"] for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]


@pytest.mark.integration
def test_the_podmonitor_selects_every_exchange_pod_on_a_port_it_scrapes() -> None:
    """The operator's pods (port `metrics`) and the venue's (port `http`): each carries the
    selector's label, a `job` name the rules know and, for a matcher, its market."""
    spec = by_kind(render("exchange-system", *MONITORING), "PodMonitor")["spec"]
    selector = spec["selector"]["matchLabels"]
    scraped = {e["port"] for e in spec["podMetricsEndpoints"]}
    assert scraped == set(prometheus.SCRAPED_PORTS)
    jobs = set()
    for pod in operator_pods():
        labels = pod["metadata"]["labels"]
        assert selector.items() <= labels.items(), labels
        ports = {p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert ports & scraped, (labels, ports)
        jobs.add(labels[spec["jobLabel"]])
        if labels[spec["jobLabel"]] == "matcher":
            assert labels[f"{GROUP}/market"] == "btc-usdt"
    assert jobs == JOBS


@pytest.mark.integration
def test_a_prometheus_outside_the_cluster_finds_the_pods_with_the_podmonitors_labels(
    run_dir: Path,
) -> None:
    """Debian's Prometheus has no Kubernetes discovery: the pods, listed as `kubectl get pods`
    gives them, become file-discovery groups that a real Prometheus reads and labels as the
    PodMonitor would (the targets need not answer for that)."""
    pods = []
    for number, template in enumerate(operator_pods()):
        name = f"{template['metadata']['labels']['app.kubernetes.io/name']}-{number}"
        meta = {**template["metadata"], "name": name, "namespace": "venue-a"}
        pods.append({"metadata": meta, "spec": template["spec"],
                     "status": {"phase": "Running", "podIP": "127.0.0.1"}})  # fmt: skip
    pods.append({**pods[0], "status": {"phase": "Pending"}})  # not yet scheduled: left out
    groups = pod_target_groups(pods)
    assert len(groups) == len(pods) - 1
    home = run_dir / unique_name("prometheus-file-sd")
    home.mkdir()
    targets_file = home / "pods.json"
    prometheus.write_target_groups(targets_file, groups)
    job = file_sd_job("exchange-pods", targets_file)
    server = PrometheusServer(home, rule_files=(), interval=1.0, extra_scrape_configs=[job])
    try:
        server.start()
        wait_until(lambda: len(server.targets()) == len(groups), timeout=30,
                   what="the pods' targets discovered")  # fmt: skip
        found = [t["labels"] for t in server.targets()]
    finally:
        server.stop()
    assert {labels["job"] for labels in found} == JOBS
    assert {labels["namespace"] for labels in found} == {"venue-a"}
    assert {labels.get("market") for labels in found} == {"btc-usdt", None}
    assert all(labels["pod"] for labels in found)
