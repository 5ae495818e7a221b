"""The GitOps flow as a platform engineer runs it: bootstrap an environment's root
Application from `gitops/bootstrap/`, commit a change to git, refresh, and watch the
Market roll out. Shared by the e2e tests and `make bench BENCH=gitops`."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from e2e.drills.kube_venue import KubeVenue, ready
from e2e.env import argocd as argo
from e2e.env.gitserver import GitServer


def markets_dir(environment: str) -> str:
    return f"gitops/environments/{environment}/markets"


def apps(environment: str) -> tuple[str, str, str]:
    """The environment's Applications: the root, the operator's and the Markets'."""
    return (
        f"exchange-{environment}",
        f"exchange-operator-{environment}",
        f"exchange-markets-{environment}",
    )


def set_price_band(git: GitServer, environment: str, market: str, bps: int) -> str:
    """Commit a Market's new price band (the line edited in place, comments kept)."""

    def edit(work: Path) -> None:
        path = work / markets_dir(environment) / f"{market}.yaml"
        text, found = re.subn(r"priceBandBps: \d+", f"priceBandBps: {bps}", path.read_text())
        assert found == 1, path
        path.write_text(text)

    return git.commit(f"{market}: price band {bps} bps", edit)


def matcher_env(venue: KubeVenue, market: str, name: str) -> str | None:
    sts = venue.get(f"statefulset/matcher-{market}")
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    return next((e.get("value") for e in env if e["name"] == name), None)


def rolled_out(venue: KubeVenue, market: str, name: str, value: str) -> bool:
    """The matcher's StatefulSet has `name=value` and every replica runs that template;
    the Market is Ready with no rollout left."""
    if matcher_env(venue, market, name) != value:
        return False
    status = venue.get(f"statefulset/matcher-{market}")["status"]
    if not status.get("replicas") or status.get("updatedReplicas") != status.get("replicas"):
        return False
    found = venue.get(f"market/{market}")
    return ready(found) and not found["status"].get("rollout")


def sync_price_band(
    venue: KubeVenue, argocd: argo.ArgoCD, git: GitServer, environment: str, market: str, bps: int
) -> float:
    """Commit a new price band, refresh, and wait until the operator has rolled it out and
    the Market is Ready again: the seconds from the commit (`gitops.sync`)."""
    begin = time.monotonic()
    sha = set_price_band(git, environment, market, bps)
    markets_app = apps(environment)[2]
    argocd.refresh(markets_app)
    argocd.wait_application(
        markets_app,
        lambda app: (
            argo.sync_status(app) == "Synced" and app["status"]["sync"].get("revision") == sha
        ),
        f"synced at {sha[:8]}",
        timeout=60,
    )
    venue.wait(
        lambda: rolled_out(venue, market, "MATCHER_MARKET_PRICE_BAND_BPS", str(bps)),
        f"{market}'s price band {bps} rolled out",
        timeout=180,
    )
    return time.monotonic() - begin


def resource_health(app: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """The health Argo CD computed for one of an Application's resources."""
    for resource in (app.get("status") or {}).get("resources") or []:
        if resource.get("kind") == kind and resource.get("name") == name:
            return dict(resource.get("health") or {})
    return {}
