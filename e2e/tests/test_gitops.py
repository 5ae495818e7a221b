"""GitOps with a real Argo CD (application controller and repo server, built from the
module proxy) syncing the project's own `gitops/` tree from a git server on 127.0.0.1 into
the local cluster: the dev environment comes up from git alone, stays in sync after the
operator has reconciled, follows commits, reverts manual edits, shows a breach as
Degraded, and prunes a Market removed from git. The staging and prod environments are
rendered and dry-run server-side against the same API server and Argo CD's CRDs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from e2e.drills.gateway_load import GatewayLoad
from e2e.drills.gitops_scenarios import (
    apps,
    markets_dir,
    resource_health,
    sync_price_band,
)
from e2e.drills.kube_venue import ADMIN_TOKEN, KubeVenue, condition, ready
from e2e.drills.operator_scenarios import in_sync, traders
from e2e.env import argocd as argo
from e2e.env.argocd import ArgoCD
from e2e.env.cluster import Cluster
from e2e.env.gitserver import GitServer
from e2e.env.helm import helm
from e2e.env.hostservices import HostServices
from e2e.env.paths import REPO_ROOT
from e2e.env.process import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

DEV = "dev"
NAMESPACE = "exchange-dev"
BTC, ETH = "btc-usdt", "eth-usdt"
ROOT, OPERATOR, MARKETS = apps(DEV)


@pytest.fixture(scope="module")
def git(run_dir: Path) -> Iterator[GitServer]:
    server = GitServer(run_dir / "git")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def argocd(local_cluster: Cluster, run_dir: Path, show: Callable[[str], None]) -> Iterator[ArgoCD]:
    argo_cd = ArgoCD(local_cluster, run_dir / "argocd")
    try:
        timings = argo_cd.start()
        show("argo cd up: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
        yield argo_cd
    finally:
        argo_cd.stop()


@pytest.fixture(scope="module")
def dev(
    local_cluster: Cluster,
    cluster_services: HostServices,
    argocd: ArgoCD,
    git: GitServer,
    show: Callable[[str], None],
) -> Iterator[KubeVenue]:
    """The dev environment bootstrapped as the README says: its namespace's connections and
    admin tokens (kept out of git), then the AppProject and the root Application."""
    local_cluster.kubectl("create", "namespace", NAMESPACE)
    wait_until(
        lambda: bool(local_cluster.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False)),
        timeout=30, what="the namespace's default ServiceAccount",
    )  # fmt: skip
    venue = KubeVenue(local_cluster, cluster_services, NAMESPACE, show)
    venue.prepare()
    argocd.bootstrap(git.url, DEV)
    try:
        yield venue
    finally:
        _tear_down(local_cluster)


def _tear_down(cluster: Cluster) -> None:
    """The Markets first (their finalizer needs the operator), then the rest: nothing of
    the environment may be left for the next tests, which install the operator with Helm.
    A failed test may leave a SafetyMode whose release waits on a breach: it goes too."""
    kubectl = cluster.kubectl
    # The root would sync its children back (selfHeal): it stops syncing first.
    kubectl("patch", "application", ROOT, "-n", argo.NAMESPACE, "--type=merge",
            "-p", '{"spec":{"syncPolicy":null}}', check=False)  # fmt: skip
    kubectl("delete", "application", MARKETS, "-n", argo.NAMESPACE, "--timeout=120s",
            check=False)  # fmt: skip
    for kind in ("markets", "safetymodes"):
        if kubectl("delete", kind, "--all", "-n", NAMESPACE, "--timeout=60s", check=False) == "":
            for name in kubectl("get", kind, "-n", NAMESPACE, "-o", "name").split():
                kubectl("patch", name, "-n", NAMESPACE, "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
    kubectl("delete", "application", ROOT, "-n", argo.NAMESPACE, "--timeout=180s", check=False)
    wait_until(
        lambda: not kubectl("get", "applications", "-n", argo.NAMESPACE, "-o", "name",
                            check=False).strip(),
        timeout=60, what="every Application deleted",
    )  # fmt: skip
    kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _ps_names() -> set[str]:
    names = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv0 = cmdline.read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        names.add(Path(argv0).name)
    return names


def test_argo_cd_syncs_the_dev_environment_from_git_and_its_market_comes_up_healthy(
    dev: KubeVenue, argocd: ArgoCD
) -> None:
    begin = time.monotonic()
    assert set(argo.COMPONENTS) <= _ps_names()  # the real controller and repo server
    for name in (ROOT, OPERATOR, MARKETS):
        argocd.wait_application(name, argo.synced_and_healthy, "Synced and Healthy", timeout=300)
    market = dev.wait_market(BTC, ready, "Ready", timeout=120)
    dev.show(f"gitops: dev synced from git and {BTC} Ready {time.monotonic() - begin:.1f}s after "
             "the root Application was applied")  # fmt: skip
    dev.markets("dev synced by Argo CD")
    # The Market's health is the custom check's, computed by the controller.
    app = argocd.wait_application(
        MARKETS,
        lambda a: resource_health(a, "Market", BTC).get("status") == "Healthy",
        "the Market Healthy",
        timeout=60,
    )
    health = resource_health(app, "Market", BTC)
    assert "leads with epoch" in health.get("message", ""), health
    assert market["spec"]["priceBandBps"] == 1000  # from git
    operator = argocd.application(OPERATOR)
    kinds = {r["kind"] for r in operator["status"]["resources"]}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole"} <= kinds


def test_the_applications_stay_synced_once_the_operator_has_reconciled(
    dev: KubeVenue, argocd: ArgoCD
) -> None:
    dev.wait_market(BTC, in_sync, "its standby in sync", timeout=120)
    for app in (ROOT, OPERATOR, MARKETS):
        argocd.refresh(app, hard=True)
        found = argocd.wait_application(app, argo.refreshed, "compared with git again", 60)
        assert argo.sync_status(found) == "Synced", (app, found["status"].get("resources"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # and it stays so while status keeps changing
        for app in (ROOT, OPERATOR, MARKETS):
            assert argo.sync_status(argocd.application(app)) == "Synced", app
        time.sleep(1)


def test_a_commit_that_changes_a_market_is_synced_and_rolled_out(
    dev: KubeVenue, argocd: ArgoCD, git: GitServer
) -> None:
    epoch = dev.get(f"market/{BTC}")["status"]["fencing"]["epoch"]
    seconds = sync_price_band(dev, argocd, git, DEV, BTC, 500)
    dev.show(f"gitops.sync: the commit applied and {BTC} Ready again in {seconds:.1f}s")
    market = dev.wait_market(BTC, in_sync, "its standby in sync", timeout=120)
    assert market["spec"]["priceBandBps"] == 500
    assert market["status"]["fencing"]["epoch"] == epoch + 1  # one leader switch
    dev.markets("price band changed in git")


def test_a_manual_edit_of_a_market_is_reverted_by_self_heal(dev: KubeVenue, argocd: ArgoCD) -> None:
    dev.kubectl("patch", f"market/{BTC}", "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"spec": {"priceBandBps": 777}}))  # fmt: skip
    dev.wait_market(BTC, lambda m: m["spec"]["priceBandBps"] == 500, "git's value back", 60)
    argocd.wait_application(MARKETS, argo.synced_and_healthy, "Synced again", timeout=60)


async def test_a_market_in_breach_shows_degraded_in_argo_cd(dev: KubeVenue, argocd: ArgoCD) -> None:
    headers = {"X-Admin-Token": ADMIN_TOKEN}
    ledger = dev.ledger_url
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        crew = await traders(dev, http, 2)
        async with http.post(f"{ledger}/v1/admin/consumers/settlement/pause", headers=headers):
            pass
        try:
            stop = asyncio.Event()
            loading = asyncio.create_task(GatewayLoad(crew, rate=20).run(stop))
            await asyncio.sleep(3)
            stop.set()
            await loading
            app = argocd.wait_application(
                MARKETS, lambda a: argo.health_status(a) == "Degraded", "Degraded", timeout=90
            )
            health = resource_health(app, "Market", BTC)
            assert health.get("status") == "Degraded", health
            assert "reconciliation" in health.get("message", ""), health
            dev.markets("settlement paused: Argo CD shows the Market Degraded")
        finally:
            async with http.post(f"{ledger}/v1/admin/consumers/settlement/resume", headers=headers):
                pass
    # The breach latched CANCEL_ONLY; the on-call engineer releases it (the release waits
    # until the ledger has caught up).
    dev.kubectl("delete", "safetymode", f"{BTC}-reconciliation", "-n", NAMESPACE, "--timeout=120s")
    dev.wait_market(
        BTC, lambda m: condition(m, "ReconciliationHealthy")[0] == "True", "in sync again", 90
    )
    argocd.wait_application(MARKETS, argo.synced_and_healthy, "Healthy again", timeout=90)


def test_a_market_removed_from_git_is_pruned_and_its_children_collected(
    dev: KubeVenue, argocd: ArgoCD, git: GitServer
) -> None:
    eth = (REPO_ROOT / "gitops/environments/staging/markets/eth-usdt.yaml").read_text()

    def add(work: Path) -> None:
        (work / markets_dir(DEV) / "eth-usdt.yaml").write_text(eth)

    sha = git.commit("dev: ETH-USDT", add)
    argocd.refresh(MARKETS)
    argocd.wait_application(MARKETS, lambda a: argo.synced_at(a, sha), "Synced with ETH-USDT", 60)
    dev.wait_market(ETH, ready, "Ready", timeout=180)
    argocd.wait_application(MARKETS, argo.synced_and_healthy, "Healthy with ETH-USDT", 120)
    dev.markets("ETH-USDT added in git")

    sha = git.commit("dev: no ETH-USDT", lambda work: (work / markets_dir(DEV) / "eth-usdt.yaml")
                     .unlink())  # fmt: skip
    argocd.refresh(MARKETS)
    argocd.wait_application(MARKETS, lambda a: argo.synced_at(a, sha), "Synced without ETH", 60)
    wait_until(lambda: not dev.exists(f"market/{ETH}"), timeout=120, what="ETH-USDT pruned")
    children = (f"statefulset/matcher-{ETH}", f"service/matcher-{ETH}", f"lease/matcher-{ETH}")
    wait_until(lambda: not any(dev.exists(c) for c in children), timeout=120,
               what="ETH-USDT's children collected")  # fmt: skip
    # The venue's gateway and ledger roll onto the catalogue without ETH-USDT meanwhile.
    dev.wait_market(BTC, ready, "Ready with the venue's new catalogue", timeout=120)
    dev.markets("ETH-USDT removed from git")


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_the_staging_and_prod_environments_render_and_pass_a_server_side_dry_run(
    environment: str, local_cluster: Cluster, argocd: ArgoCD
) -> None:
    """What Argo CD would apply there: the root's Applications, the operator's chart with
    the environment's values, and its Markets, accepted by the API server (schemas, CEL
    rules, Argo CD's CRDs) without being created."""
    values = REPO_ROOT / f"gitops/apps/values-{environment}.yaml"
    rendered = helm("template", f"exchange-{environment}", str(REPO_ROOT / "gitops/apps"),
                    "-f", str(values), "--namespace", argo.NAMESPACE)  # fmt: skip
    applications = [d for d in yaml.safe_load_all(rendered) if d]
    assert {a["metadata"]["name"] for a in applications} == {
        f"exchange-operator-{environment}",
        f"exchange-markets-{environment}",
    }
    operator_values = yaml.safe_load(values.read_text())["operator"]
    chart = helm("template", "exchange-operator", str(REPO_ROOT / "charts/exchange-operator"),
                 "--namespace", "exchange-system", "--include-crds",
                 "--values", "-", input=yaml.safe_dump(operator_values))  # fmt: skip
    namespace = f"exchange-{environment}"
    local_cluster.kubectl("create", "namespace", namespace, check=False)
    try:
        for documents in (rendered, chart):
            local_cluster.kubectl("apply", "--dry-run=server", "--server-side",
                                  "--force-conflicts", "-f", "-", input=documents)  # fmt: skip
        markets = sorted((REPO_ROOT / markets_dir(environment)).glob("*.yaml"))
        assert markets
        for market in markets:
            local_cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(market))
    finally:
        local_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
