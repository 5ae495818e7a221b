"""The cluster API the operator brings, on a real API server: the CRDs' validation, defaults
and printer columns, and the Helm chart (lint, and every object it renders accepted by the
server in a dry run)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace

import pytest
import yaml

from e2e.env import paths
from e2e.env.helm import CHART, helm
from e2e.env.kube import ControlPlane, wait_established
from e2e.env.process import wait_until
from exchange_operator.failover import judge
from exchange_operator.status import compute
from exchange_operator.tests.test_decisions import FAILOVER

pytestmark = pytest.mark.integration

CRDS = paths.REPO_ROOT / "crds"
EXAMPLES = sorted((CRDS / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def crds(kube_control_plane: ControlPlane) -> ControlPlane:
    plane = kube_control_plane
    plane.kubectl("apply", "--server-side", "-f", str(CRDS / "market.yaml"),
                  "-f", str(CRDS / "safetymode.yaml"))  # fmt: skip
    wait_established(plane.kubectl, "markets.exchange.io", "safetymodes.exchange.io", timeout=30)
    return plane


def refused(plane: ControlPlane, namespace: str, manifest: Mapping[str, object]) -> str:
    """Apply `manifest`; the server's refusal (the test fails if it is accepted)."""
    with pytest.raises(RuntimeError) as error:
        plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    return str(error.value)


def market(name: str, **spec: object) -> dict[str, object]:
    return {"apiVersion": "exchange.io/v1alpha1", "kind": "Market",
            "metadata": {"name": name}, "spec": {"symbol": "BTC-USDT", **spec}}  # fmt: skip


def test_the_examples_are_accepted_with_the_defaults_filled_in(
    crds: ControlPlane, k8s_namespace: str
) -> None:
    for example in EXAMPLES:
        crds.kubectl("apply", "-n", k8s_namespace, "-f", str(example))
    spec = json.loads(crds.kubectl("get", "market", "btc-usdt", "-n", k8s_namespace, "-o",
                                   "jsonpath={.spec}"))  # fmt: skip
    assert spec["failover"] == {"timeoutSeconds": 5, "leaseDurationSeconds": 10,
                                "renewDeadlineSeconds": 7, "retryPeriodSeconds": 2}  # fmt: skip
    assert spec["matcher"] == {"replicas": 2, "storage": {"size": "1Gi"}}
    assert spec["connections"]["configMapName"] == "exchange-host-services"
    table = crds.kubectl("get", "markets", "-n", k8s_namespace)
    assert table.split("\n")[0].split() == [
        "NAME", "SYMBOL", "PHASE", "MODE", "EPOCH", "LEADER", "STANDBY", "INSYNC", "SEQ", "LAG",
        "AGE",
    ]  # fmt: skip
    assert crds.kubectl("get", "mkt", "-n", k8s_namespace, "-o", "name").count("market") == 2
    modes = crds.kubectl("get", "sm", "-n", k8s_namespace)
    assert modes.split("\n")[0].split() == [
        "NAME", "MARKET", "MODE", "SOURCE", "APPLIED", "RELEASABLE", "AGE",
    ]  # fmt: skip


def test_invalid_markets_and_safety_modes_are_refused_by_the_server(
    crds: ControlPlane, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    assert "should match" in refused(crds, ns, market("bad", symbol="btc_usdt"))
    assert "must differ" in refused(crds, ns, market("bad", baseAsset="BTC", quoteAsset="BTC"))
    late = {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 10, "retryPeriodSeconds": 2,
            "timeoutSeconds": 5}  # fmt: skip
    assert "renewDeadlineSeconds must be below" in refused(crds, ns, market("bad", failover=late))
    assert "only EDGE_" in refused(crds, ns, market("bad", gateway={"env": {"PATH": "/x"}}))
    assert "should be greater than or equal to 1" in refused(crds, ns, market("bad", lotSize=0))
    crds.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(market("good")))
    assert "symbol is immutable" in refused(crds, ns, market("good", symbol="ETH-USDT"))
    halt = {"apiVersion": "exchange.io/v1alpha1", "kind": "SafetyMode", "metadata": {"name": "h"},
            "spec": {"market": "good", "mode": "STOP"}}  # fmt: skip
    assert "Unsupported value" in refused(crds, ns, halt)


def test_the_chart_lints_clean_and_every_object_it_renders_is_accepted(
    crds: ControlPlane, kube_control_plane: ControlPlane
) -> None:
    lint = helm("lint", str(CHART), "--strict")
    assert "0 chart(s) failed" in lint
    crds.kubectl("create", "namespace", "exchange-system", check=False)
    crds.kubectl("apply", "--server-side", "-f", str(CHART / "crds" / "kopf-peering.yaml"))
    for values in ([], ["--set", "watchNamespaces={venue-a,venue-b}", "--set", "replicas=1"]):
        rendered = helm("template", "exchange-operator", str(CHART), "--namespace",
                        "exchange-system", *values)  # fmt: skip
        kinds = [d["kind"] for d in yaml.safe_load_all(rendered) if d]
        assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= set(kinds)
        wait_until(
            lambda: "kopfpeerings" in crds.kubectl("api-resources", "--api-group=kopf.dev"),
            timeout=30, what="kopf's peering resources",
        )  # fmt: skip
        applied = crds.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
        assert "deployment.apps/exchange-operator created (server dry run)" in applied
    role = yaml.safe_load(helm("template", "x", str(CHART), "--show-only",
                               "templates/clusterrole.yaml"))  # fmt: skip
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert "*" not in verbs and all("*" not in rule["resources"] for rule in role["rules"])


def test_the_chart_installs_the_crds_of_this_repository() -> None:
    for name in ("market.yaml", "safetymode.yaml"):
        assert (CHART / "crds" / name).read_text() == (CRDS / name).read_text()


def test_every_status_the_operator_computes_is_accepted_by_the_schema(
    crds: ControlPlane, k8s_namespace: str
) -> None:
    """A status the schema refuses fails the whole patch, silently for `kubectl get`."""
    from exchange_operator.rollout import Step
    from exchange_operator.tests.test_decisions import LEDGER, MATCHER, observation, view

    crds.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=json.dumps(market("status")))
    cases = [
        observation(),
        observation(leader="", leader_since="", epoch=0, matcher=None, ledger=None),
        observation(judgement=judge(view(lease_unchanged_s=16), FAILOVER), matcher=None),
        observation(
            ledger={**LEDGER, "breach": True, "latched": True, "reason_codes": ["lag"]},
            desired_mode="CANCEL_ONLY",
            desired_source="reconciliation",
        ),
        observation(matcher=replace(MATCHER, refusal="its log ends below", leader=False)),
        observation(paused=True),
        observation(
            replicas=2,
            matcher=replace(MATCHER, standby="matcher-status-1/uid-2/boot", replication_lag=7),
            rollout=Step(None, 1, "waiting for the standby to be in sync"),
        ),
        observation(replicas=2),  # the rollout is done: its block goes
    ]
    previous: dict[str, object] = {}
    for case in cases:
        status = compute(case, previous)
        status["lastFailover"] = {"fromEpoch": 1, "toEpoch": 2, "reason": "LeaderRestarted"}
        crds.kubectl("patch", "market", "status", "-n", k8s_namespace, "--subresource=status",
                     "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip
        stored = json.loads(crds.kubectl("get", "market", "status", "-n", k8s_namespace, "-o",
                                         "jsonpath={.status}"))  # fmt: skip
        assert stored["phase"] == status["phase"]
        assert stored.get("replication") == status.get("replication")
        assert stored.get("rollout") == status.get("rollout")
        previous = status
