"""`make bench BENCH=gitops`: a Market's change from a git commit to the running venue.

One fresh cluster with PostgreSQL and Kafka on its bridge, Argo CD (controller and repo
server) syncing the dev environment of `gitops/` from a git server on 127.0.0.1:

- `gitops.sync`: `seconds` from a commit that changes BTC-USDT's price band (followed by a
  refresh of the Markets' Application, as a CI pipeline's webhook would) until the operator
  has rolled the matchers onto it (the standby first, one leader switch) and the Market is
  Ready again; the median of RUNS commits, and their maximum. Target 30.

Stop a `make cluster-up` cluster first: the bench takes the same bridge.
"""

from __future__ import annotations

import functools
import shutil
import statistics
from typing import Any

from e2e.drills.gitops_scenarios import apps, sync_price_band
from e2e.drills.kube_venue import KubeVenue
from e2e.drills.operator_scenarios import in_sync
from e2e.env import argocd as argo
from e2e.env import paths
from e2e.env.argocd import ArgoCD
from e2e.env.cluster import Cluster
from e2e.env.clustersettings import ClusterSettings
from e2e.env.gitserver import GitServer
from e2e.env.hostservices import HostServices
from e2e.env.process import free_port, wait_until

RUNS = 3
BANDS = (500, 750, 1000)


def sync() -> dict[str, Any]:
    run_dir = paths.new_run_dir("exchange-bench-gitops-")
    cluster = Cluster(
        ClusterSettings(name="bench", state_dir=run_dir / "cluster", api_port=free_port()),
        log=lambda _line: None,
    )
    services = HostServices(cluster, run_dir / "services")
    argocd = ArgoCD(cluster, run_dir / "argocd")
    git = GitServer(run_dir / "git")
    try:
        cluster.start()
        services.start()
        argocd.start()
        git.start()
        namespace = "exchange-dev"
        cluster.kubectl("create", "namespace", namespace)
        wait_until(
            lambda: bool(cluster.kubectl("get", "sa", "default", "-n", namespace, check=False)),
            timeout=30, what=f"ServiceAccount {namespace}/default",
        )  # fmt: skip
        venue = KubeVenue(cluster, services, namespace)
        venue.prepare()
        argocd.bootstrap(git.url, "dev")
        for app in apps("dev"):
            argocd.wait_application(app, argo.synced_and_healthy, "Synced and Healthy", 300)
        runs = []
        for bps in BANDS[:RUNS]:
            venue.wait_market("btc-usdt", in_sync, "its standby in sync", timeout=120)
            runs.append(sync_price_band(venue, argocd, git, "dev", "btc-usdt", bps))
        return {
            "seconds": round(statistics.median(runs), 2),
            "max_seconds": round(max(runs), 2),
            "runs": len(runs),
            "target": 30,
        }
    finally:
        git.stop()
        argocd.stop()
        services.stop()
        cluster.teardown()
        shutil.rmtree(run_dir, ignore_errors=True)


BENCHMARKS = {"gitops.sync": functools.cache(sync)}
