"""Benchmarks of the local cluster (`make bench BENCH=cluster`).

- `cluster.start`: a fresh cluster with warm caches (binaries built, images saved), from
  `Cluster.start` until the node is Ready and CoreDNS answers; `restart_seconds` is the
  same after a teardown that kept the state directory. Target: 30 s or less.
- `cluster.pod_start`: from creating a Deployment of the project's image until it is
  Available (no readiness probe: scheduling, sandbox, network and container start).
  Target: 5 s or less.
- `cluster.cold_setup`: `setup --parts kafka,kube,node,cluster` on an empty project cache
  and empty Go module and build caches. Minutes of both CPUs and ~5 GB of downloads and
  builds, so it runs only on demand: `make bench BENCH=cluster.cold_setup`. Debian
  packages already installed stay installed; their install time is not in the figure.

The clusters here take the default bridge (cni0, 10.244.0.1): stop a `make cluster-up`
cluster first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from e2e.env import images, paths, rollout
from e2e.env.cluster import Cluster
from e2e.env.clustersettings import ClusterSettings
from e2e.env.process import free_port, wait_until

ON_DEMAND = {"cluster.cold_setup"}


@contextmanager
def _cluster(timings: dict[str, float] | None = None) -> Iterator[Cluster]:
    run_dir = paths.new_run_dir("exchange-bench-")
    cluster = Cluster(
        ClusterSettings(name="bench", state_dir=run_dir / "cluster", api_port=free_port()),
        log=lambda _line: None,
    )
    try:
        started = cluster.start()
        if timings is not None:
            timings.update(started)
        yield cluster
    finally:
        cluster.teardown()
        shutil.rmtree(run_dir, ignore_errors=True)


def start() -> dict[str, object]:
    """A fresh state directory (what a test session sees), then a restart on the kept state
    directory (what `make cluster-down && make cluster-up` sees: images already imported)."""
    fresh: dict[str, float] = {}
    with _cluster(fresh) as cluster:
        cluster.teardown()
        restarted = Cluster(cluster.settings, log=cluster.log).start()
    return {
        "seconds": round(fresh["node ready and dns answering"], 2),
        "api_server_seconds": round(fresh["etcd"] + fresh["kube-apiserver"], 2),
        "image_import_seconds": round(fresh.get(f"image {images.PROJECT_IMAGE}", 0.0), 2),
        "until_default_service_account_seconds": round(fresh["total"], 2),
        "restart_seconds": round(restarted["node ready and dns answering"], 2),
    }


def _deployment(name: str) -> str:
    labels = {"app": name}
    main = {
        "name": "main",
        "image": images.PROJECT_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", "import time; time.sleep(1e9)"],
    }
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [main]},
                },
            },
        }
    )


def pod_start(runs: int = 3) -> dict[str, object]:
    seconds = []
    with _cluster() as cluster:
        cluster.kubectl("create", "namespace", "bench")
        wait_until(
            lambda: bool(cluster.kubectl("get", "sa", "default", "-n", "bench", check=False)),
            timeout=30,
            what="ServiceAccount bench/default",
        )
        for run in range(runs):
            name = f"pod-start-{run}"
            begin = time.monotonic()
            cluster.kubectl("create", "-n", "bench", "-f", "-", input=_deployment(name))
            rollout.wait_available(cluster.kubectl, "bench", name, timeout=60)
            seconds.append(time.monotonic() - begin)
    return {
        "seconds": round(seconds[0], 2),
        "median_seconds": round(statistics.median(seconds), 2),
        "runs": [round(s, 2) for s in seconds],
    }


def cold_setup() -> dict[str, object]:
    scratch = Path(paths.new_run_dir("exchange-cold-"))
    env = {
        **os.environ,
        "EXCHANGE_CACHE_DIR": str(scratch / "cache"),
        "GOMODCACHE": str(scratch / "gomod"),
        "GOCACHE": str(scratch / "gocache"),
    }
    shutil.rmtree(paths.REPO_ROOT / "build" / "wheels", ignore_errors=True)
    begin = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "e2e.env", "setup", "--parts", "kafka,kube,node,cluster"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - begin
        if result.returncode != 0:
            raise RuntimeError(f"cold setup failed:\n{result.stderr[-3000:]}")
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(scratch)], check=False)  # Go's read-only mods
        shutil.rmtree(scratch, ignore_errors=True)
    steps = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^setup: (.+) ([\d.]+)s$", result.stderr, re.MULTILINE)
    }
    return {"seconds": round(seconds, 1), "steps": steps}


BENCHMARKS = {
    "cluster.start": start,
    "cluster.pod_start": pod_start,
    "cluster.cold_setup": cold_setup,
}
