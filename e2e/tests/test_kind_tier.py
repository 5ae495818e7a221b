"""The kind tier cannot run here (no Docker engine), so that it does not rot: everything
`make e2e-kind` would apply, rendered by its own code, is accepted by a real API server in a
server-side dry run; and its cluster has the local cluster's address plan."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml

from e2e.env import clustersettings, kind, kube
from e2e.env.helm import CHART, helm
from e2e.env.kube import ControlPlane

pytestmark = pytest.mark.integration


def test_what_make_e2e_kind_applies_is_accepted_by_the_api_server(
    kube_control_plane: ControlPlane,
) -> None:
    plane = kube_control_plane
    chart = helm("template", "exchange-operator", str(CHART), "--namespace",
                 kind.OPERATOR_NAMESPACE, *(f"--set={v}" for v in kind.HELM_VALUES))  # fmt: skip
    assert "imagePullPolicy: Never" in chart
    # The CRDs for real (the Markets' dry run is validated against their schemas, as helm
    # installs them before the templates), then the rest as a dry run.
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    kube.wait_established(plane.kubectl, "markets.exchange.io", "safetymodes.exchange.io",
                          "clusterkopfpeerings.kopf.dev", timeout=30)  # fmt: skip
    for namespace in (kind.OPERATOR_NAMESPACE, kind.NAMESPACE):
        plane.kubectl("create", "namespace", namespace, check=False)
    try:
        accepted = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=chart)
        assert "deployment.apps/exchange-operator created (server dry run)" in accepted
        endpoints = {"EXCHANGE_PG_DSN": "postgresql://exchange@172.18.0.1:25433/postgres",
                     "EXCHANGE_KAFKA_BOOTSTRAP": "172.18.0.1:29094"}  # fmt: skip
        venue = {"apiVersion": "v1", "kind": "List", "items": kind.objects(endpoints, "op:tok")}
        accepted = plane.kubectl("apply", "--dry-run=server", "--server-side", "-f", "-",
                                 input=json.dumps(venue))  # fmt: skip
        for market in ("btc-usdt", "eth-usdt"):
            assert f"market.exchange.io/{market} serverside-applied (server dry run)" in accepted
    finally:
        plane.kubectl("delete", "namespace", kind.NAMESPACE, "--wait=false", check=False)


def test_the_kind_cluster_has_the_local_clusters_address_plan() -> None:
    config = yaml.safe_load(kind.CONFIG.read_text())
    local = clustersettings.ClusterSettings(name="plan", state_dir=Path("."))
    assert config["networking"]["serviceSubnet"] == local.service_cidr
    pods = ipaddress.IPv4Network(config["networking"]["podSubnet"])
    assert ipaddress.IPv4Network(local.network.subnet).subnet_of(pods)
    (node,) = config["nodes"]
    assert node["image"].startswith("kindest/node:v1.34")  # the local cluster's minor
