"""Benchmarks of the operator on the local cluster (`make bench BENCH=operator`).

One fresh cluster, PostgreSQL and Kafka on its bridge, the operator installed with Helm, a
venue with one Market; all defaults (lease 10 s, renew deadline 7 s, failover timeout 5 s):

- `operator.reconcile`: `seconds` from `kubectl apply` of a Market until the Market is Ready
  (its matcher leads and serves, the venue's gateway and ledger are ready).
- `operator.failover`: `seconds` from `kill -9` of the leading matcher until an order is
  accepted under the new epoch (its hot standby's), with orders at 20/s through the gateway.
  Target 3.
- `drill.failover`: 20 kills -9 of whichever matcher leads, orders at 20/s throughout, each
  after the killed one is back in sync as the standby: `acked_lost` (acknowledged orders
  missing from the topic, target 0), `duplicates_settled` (orders accepted twice in it, which
  the ledger would settle twice, target 0), the failover seconds' median and maximum.
- `operator.zombie`: `applied`, the events of the old epoch the ledger booked after its
  leader was frozen past its lease and resumed, and after the test wrote one by hand.
  Target 0.

They share one run (the cluster takes about a minute to set up). Stop a `make
cluster-up` cluster first: they take the same bridge.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import statistics
import time
from typing import Any

import aiohttp

from e2e.drills.kube_venue import KubeVenue, install_operator, ready
from e2e.drills.operator_scenarios import crash_failover, failover_cycles, zombie
from e2e.env import paths
from e2e.env.cluster import Cluster
from e2e.env.clustersettings import ClusterSettings
from e2e.env.hostservices import HostServices
from e2e.env.process import free_port, wait_until

DRILL_CYCLES = 20


@functools.cache
def _run() -> dict[str, dict[str, object]]:
    run_dir = paths.new_run_dir("exchange-bench-operator-")
    cluster = Cluster(
        ClusterSettings(name="bench", state_dir=run_dir / "cluster", api_port=free_port()),
        log=lambda _line: None,
    )
    services = HostServices(cluster, run_dir / "services")
    try:
        cluster.start()
        services.start()
        install_seconds = install_operator(cluster)
        cluster.kubectl("create", "namespace", "bench")
        wait_until(
            lambda: bool(cluster.kubectl("get", "sa", "default", "-n", "bench", check=False)),
            timeout=30, what="ServiceAccount bench/default",
        )  # fmt: skip
        venue = KubeVenue(cluster, services, "bench")
        venue.prepare()
        begin = time.monotonic()
        venue.apply_market("btc-usdt", "BTC-USDT")
        venue.wait_market("btc-usdt", ready, "Ready", timeout=180)
        reconcile = time.monotonic() - begin
        return asyncio.run(_faults(venue, services, reconcile, install_seconds))
    finally:
        services.stop()
        cluster.teardown()
        shutil.rmtree(run_dir, ignore_errors=True)


async def _faults(
    venue: KubeVenue, services: HostServices, reconcile: float, install: float
) -> dict[str, dict[str, object]]:
    endpoints = services.endpoints()
    bootstrap = endpoints["EXCHANGE_KAFKA_BOOTSTRAP"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        failover = await crash_failover(venue, http, bootstrap)
        drill = await failover_cycles(venue, http, bootstrap, DRILL_CYCLES)
        frozen = await zombie(venue, http, bootstrap, endpoints["EXCHANGE_PG_DSN"])
    return {
        "operator.reconcile": {
            "seconds": round(reconcile, 2),
            "helm_install_seconds": round(install, 2),
        },
        "operator.failover": {
            "seconds": round(failover.seconds, 2),
            "from_epoch": failover.from_epoch,
            "to_epoch": failover.to_epoch,
            "orders_refused_meanwhile": len(failover.load.failed()),
            "acked_lost": failover.acked_lost,
            "target_seconds": 3,
        },
        "drill.failover": {
            "cycles": len(drill.seconds),
            "acked_lost": drill.acked_lost,
            "duplicates_settled": drill.duplicates,
            "orders_accepted": len(drill.load.accepted),
            "failover_median_s": round(statistics.median(drill.seconds), 2),
            "failover_max_s": round(max(drill.seconds), 2),
            "from_epoch": drill.epochs[0],
            "to_epoch": drill.epochs[1],
        },
        "operator.zombie": {
            "applied": frozen.applied,
            "published_after_freeze": frozen.published_after_freeze,
            "stale_counted": frozen.stale_counted,
            "from_epoch": frozen.epoch,
            "to_epoch": frozen.new_epoch,
            "target": 0,
        },
    }


def _part(name: str) -> dict[str, Any]:
    return _run()[name]


BENCHMARKS = {
    name: functools.partial(_part, name)
    for name in ("operator.reconcile", "operator.failover", "drill.failover", "operator.zombie")
}
