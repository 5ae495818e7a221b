"""The operator on the real node, driven as a platform team and traders would: `helm install`
from `charts/`, Markets applied with kubectl, the workloads as pods the operator created,
signed orders through the gateway's Service, SafetyModes, a settlement breach, a crashed and
a frozen matcher, an upgrade, and the Markets' deletion. `kubectl get markets` is printed at
each step.

The tests of this module build on each other, in order (one venue, one namespace). The
first Market shortens the ledger's lag grace (3 s, evaluated every second) so that the
breach step takes seconds; every other timeout is the default.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2e.drills.gateway_load import GatewayLoad, longest_gap
from e2e.drills.kube_venue import (
    ADMIN_TOKEN,
    KubeVenue,
    condition,
    install_operator,
    ready,
)
from e2e.drills.operator_scenarios import (
    crash_failover,
    in_sync,
    matcher_status,
    standby_loss,
    traders,
    zombie,
)
from e2e.drills.traders import Trader
from e2e.env import images
from e2e.env.matcher import restore
from e2e.env.process import wait_until
from e2e.env.target import Node, Services
from workloads.common.objectstore import ObjectStoreSettings

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

BTC, ETH, SOL = "btc-usdt", "eth-usdt", "sol-usdt"
FAST_LEDGER = {
    "LEDGER_RECONCILIATION_LAG_GRACE_MS": "3000",
    "LEDGER_RECONCILIATION_INTERVAL_MS": "1000",
}
NEXT_IMAGE = "localhost/exchange-platform:e2e-next"


@pytest.fixture(scope="module")
def venue(kube_target: tuple[Node, Services], show: Callable[[str], None]) -> Iterator[KubeVenue]:
    node, services = kube_target
    namespace = "venue-e2e"
    node.kubectl("create", "namespace", namespace)
    wait_until(
        lambda: bool(node.kubectl("get", "sa", "default", "-n", namespace, check=False)),
        timeout=30, what="the namespace's default ServiceAccount",
    )  # fmt: skip
    seconds = install_operator(node)
    print(f"\noperator installed with helm and Available in {seconds:.1f}s")
    venue = KubeVenue(node, services, namespace, show)
    venue.prepare()
    yield venue
    node.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def run_load(load: GatewayLoad, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task


def prometheus_query(url: str, expr: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as answer:
        result: list[dict[str, Any]] = json.loads(answer.read())["data"]["result"]
        return result


def children_of(venue: KubeVenue, market: str) -> list[str]:
    return [f"{kind}/matcher-{market}" for kind in (
        "statefulset", "service", "poddisruptionbudget", "lease", "serviceaccount", "role",
        "rolebinding", "networkpolicy",
    )] + [f"service/matcher-{market}-peers"]  # fmt: skip


def test_a_market_comes_up_ready_with_owned_children_and_a_second_joins_the_venue(
    venue: KubeVenue,
) -> None:
    begin = time.monotonic()
    venue.apply_market(BTC, "BTC-USDT", ledger={"env": FAST_LEDGER}, gateway={"replicas": 2})
    venue.markets("applied BTC-USDT")
    market = venue.wait_market(BTC, ready, "Ready", timeout=180)
    venue.show(f"operator.reconcile: Ready {time.monotonic() - begin:.1f}s after apply")
    venue.markets("BTC-USDT Ready")
    uid = market["metadata"]["uid"]
    for child in children_of(venue, BTC):
        owners = venue.get(child)["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"], o["controller"]) for o in owners] == [("Market", uid, True)]
    sts = venue.get(f"statefulset/matcher-{BTC}")["spec"]["template"]["spec"]
    matcher = sts["containers"][0]
    assert matcher["securityContext"]["readOnlyRootFilesystem"] is True
    assert sts["serviceAccountName"] == f"matcher-{BTC}"
    assert market["status"]["fencing"]["epoch"] >= 1
    leader = market["status"]["fencing"]["leader"]
    assert leader in (f"matcher-{BTC}-0", f"matcher-{BTC}-1")
    market = venue.wait_market(BTC, in_sync, "its standby in sync", timeout=120)
    standby = market["status"]["replication"]["standby"]
    assert {leader, standby} == {f"matcher-{BTC}-0", f"matcher-{BTC}-1"}
    assert venue.get(f"pod/{leader}")["metadata"]["labels"]["exchange.io/role"] == "leader"
    venue.markets("BTC-USDT with its standby in sync")
    assert market["status"]["effectiveMode"] == "NORMAL"
    assert condition(market, "ReconciliationHealthy") == ("True", "InSync")

    venue.apply_market(ETH, "ETH-USDT", lotSize=100_000, tickSize=10)
    venue.wait_market(ETH, ready, "Ready", timeout=180)
    venue.markets("ETH-USDT joined")
    for shared in ("deployment/gateway", "statefulset/ledger", "service/gateway"):
        owners = {o["name"] for o in venue.get(shared)["metadata"]["ownerReferences"]}
        assert owners == {BTC, ETH}, shared
    gateway = venue.get("deployment/gateway")["spec"]["template"]["spec"]["containers"][0]
    catalogue = next(e["value"] for e in gateway["env"] if e["name"] == "EDGE_MARKETS")
    assert {m["symbol"] for m in json.loads(catalogue)} == {"BTC-USDT", "ETH-USDT"}

    def rolled_out() -> bool:
        """Both gateways know both markets and no older one is left (`status.replicas` counts
        a terminating one, which a request could still reach)."""
        found = venue.get("deployment/gateway")
        status = found["status"]
        return bool(
            status.get("observedGeneration") == found["metadata"]["generation"]
            and status.get("updatedReplicas") == status.get("availableReplicas") == 2
            and status.get("replicas") == 2
        )

    wait_until(rolled_out, timeout=120, what="the gateways with both markets")

    # The host's Prometheus scrapes the venue's pods, labelled as the chart's PodMonitor does.
    def scraped() -> bool:
        up = prometheus_query(venue.services.prometheus_url,
                              f'up{{namespace="{venue.namespace}"}} == 1')  # fmt: skip
        return {"matcher", "gateway", "ledger", "history"} <= {s["metric"]["job"] for s in up}

    wait_until(scraped, timeout=60, what="Prometheus scraping the venue's pods", interval=1)


async def test_orders_fill_through_the_gateway_and_settle_in_the_ledger_by_their_trade_ids(
    venue: KubeVenue, http: aiohttp.ClientSession
) -> None:
    # Requests go through the Service: until kube-proxy has dropped a terminating gateway of
    # the rollout that added ETH-USDT, a request may still reach one without it.
    async def knows_both() -> bool:
        async with http.get(f"{venue.gateway_url}/v1/markets") as answer:
            listed = {m["symbol"] for m in (await answer.json())["markets"]}
        return {"BTC-USDT", "ETH-USDT"} <= listed

    deadline, in_a_row = time.monotonic() + 60, 0
    while in_a_row < 10:
        in_a_row = in_a_row + 1 if await knows_both() else 0
        assert time.monotonic() < deadline, "a gateway without ETH-USDT still answers"
        await asyncio.sleep(0.2)
    seller, buyer = await traders(venue, http, 2)
    for symbol, price, qty in (
        ("BTC-USDT", "60000.00", "0.0100"),
        ("ETH-USDT", "3000.00", "0.100"),
    ):
        sold = await seller.place(symbol, "SELL", price, qty)
        assert sold.status == 201, sold.body
        bought = await buyer.place(symbol, "BUY", price, qty)
        assert bought.status == 201 and bought.body["status"] == "FILLED", bought.body
        (fill,) = bought.body["fills"]

        async def booked(trade_id: str = fill["trade_id"]) -> dict[str, Any] | None:
            async with http.get(
                f"{venue.ledger_url}/v1/admin/trades/{trade_id}",
                headers={"X-Admin-Token": ADMIN_TOKEN},
            ) as answer:
                return await answer.json() if answer.status == 200 else None

        deadline = time.monotonic() + 30
        while (entry := await booked()) is None:
            assert time.monotonic() < deadline, f"trade {fill['trade_id']} not booked"
            await asyncio.sleep(0.5)
        assert fill["trade_id"] in json.dumps(entry)
        # The buyer's fills, from the ledger through the gateway (its token, its egress).
        mine = await buyer.client.call("GET", f"/v1/account/trades?symbol={symbol}")
        assert mine.status == 200, mine.body
        assert [(t["trade_id"], t["liquidity"]) for t in mine.body["trades"]] == [
            (fill["trade_id"], "TAKER")
        ]
    venue.markets("orders filled and settled")

    # The venue's history writer (its ConfigMap names a ClickHouse) has both trades, and the
    # gateway answers an hour's candle from it: the current hour is past the memory's minutes.
    history = venue.get("deployment/history")
    assert {o["name"] for o in history["metadata"]["ownerReferences"]} == {BTC, ETH}
    deadline = time.monotonic() + 90
    while True:
        async with http.get(
            f"{venue.gateway_url}/v1/markets/BTC-USDT/candles", params={"interval": "1h"}
        ) as answer:
            body = await answer.json()
        hours = body.get("candles") if answer.status == 200 else None
        if hours and hours[-1]["trades"] >= 1:
            break
        assert time.monotonic() < deadline, f"no 1h candle from the history: {answer.status} {body}"
        await asyncio.sleep(1)
    assert hours[-1]["close"] == "60000.00" and hours[-1]["volume"] == "0.0100", hours[-1]
    venue.show(f"history: the 1h candle {hours[-1]}")


def test_a_paused_market_is_left_alone_and_says_so(venue: KubeVenue) -> None:
    def patch(spec: dict[str, Any]) -> None:
        venue.kubectl("patch", f"market/{ETH}", "-n", venue.namespace, "--type=merge", "-p",
                      json.dumps({"spec": spec}))  # fmt: skip

    patch({"paused": True})
    paused = venue.wait_market(ETH, lambda m: m["status"].get("phase") == "Paused", "Paused", 60)
    assert condition(paused, "Ready") == ("False", "Paused")
    patch({"matcher": {"resources": {"limits": {"memory": "600Mi"}}}})
    time.sleep(8)  # more than one check: nothing may be applied meanwhile
    container = venue.get(f"statefulset/matcher-{ETH}")["spec"]["template"]["spec"]["containers"][0]
    assert "limits" not in container.get("resources", {})
    venue.markets("ETH-USDT paused")
    patch({"paused": False})

    def applied() -> bool:
        sts = venue.get(f"statefulset/matcher-{ETH}")["spec"]["template"]["spec"]
        return bool(sts["containers"][0].get("resources", {}).get("limits"))

    venue.wait(applied, "the change applied once unpaused", timeout=60)
    # The change rolls the matcher (the standby, then one leader switch): the next tests
    # start once it is done, not while ETH-USDT's leader moves.
    _on_resources(venue, f"statefulset/matcher-{ETH}")
    venue.wait_market(ETH, lambda m: in_sync(m) and not m["status"].get("rollout"),
                      "Ready again, rolled, its standby in sync", timeout=120)  # fmt: skip


async def test_a_safety_mode_refuses_new_orders_until_it_is_released(
    venue: KubeVenue, http: aiohttp.ClientSession
) -> None:
    (trader,) = await traders(venue, http, 1)
    venue.apply({"apiVersion": "exchange.io/v1alpha1", "kind": "SafetyMode",
                 "metadata": {"name": "btc-maintenance"},
                 "spec": {"market": BTC, "mode": "CANCEL_ONLY", "reason": "e2e"}})  # fmt: skip
    try:
        venue.wait_market(BTC, lambda m: m["status"].get("effectiveMode") == "CANCEL_ONLY",
                          "CANCEL_ONLY", timeout=60)  # fmt: skip
        assert venue.get("safetymode/btc-maintenance")["status"]["applied"] is True
        venue.markets("SafetyMode CANCEL_ONLY applied")
        refused = await trader.place("BTC-USDT", "BUY", "59000.00", "0.0100")
        assert refused.body["reject_reason"] == "market_cancel_only", refused.body
        other = await trader.place("ETH-USDT", "BUY", "2900.00", "0.100")
        assert other.status == 201, other.body  # the other market trades on
    finally:  # a failure here must not leave the next tests a market in CANCEL_ONLY
        venue.kubectl("delete", "safetymode", "btc-maintenance", "-n", venue.namespace,
                      "--timeout=60s", "--ignore-not-found")  # fmt: skip
    venue.wait_market(BTC, lambda m: m["status"].get("effectiveMode") == "NORMAL", "NORMAL", 60)
    venue.markets("SafetyMode released")
    accepted = await trader.place("BTC-USDT", "BUY", "59000.00", "0.0100")
    assert accepted.status == 201, accepted.body


async def test_a_settlement_breach_latches_a_safety_mode_until_it_is_released(
    venue: KubeVenue, http: aiohttp.ClientSession
) -> None:
    crew = await traders(venue, http, 2)
    ledger = venue.ledger_url
    headers = {"X-Admin-Token": ADMIN_TOKEN}
    async with http.post(f"{ledger}/v1/admin/consumers/settlement/pause", headers=headers) as r:
        assert r.status == 200
    try:
        await _breach_and_release(venue, http, crew)
    finally:  # a failure here must not leave the next tests a ledger that settles nothing
        async with http.post(f"{ledger}/v1/admin/consumers/settlement/resume", headers=headers):
            pass


async def _breach_and_release(
    venue: KubeVenue, http: aiohttp.ClientSession, crew: list[Trader]
) -> None:
    ledger = venue.ledger_url
    headers = {"X-Admin-Token": ADMIN_TOKEN}
    load = GatewayLoad(crew, rate=20)
    await run_load(load, 3)
    latched = venue.wait_market(
        BTC, lambda m: condition(m, "ReconciliationHealthy")[0] == "False"
        and m["status"].get("effectiveMode") == "CANCEL_ONLY",
        "a latched breach in CANCEL_ONLY", timeout=60,
    )  # fmt: skip
    venue.markets("settlement paused: breach latched")
    assert condition(latched, "ReconciliationHealthy")[1] == "LagBreach"
    assert condition(latched, "SafetyModeActive") == ("True", "Reconciliation")
    mode = venue.get(f"safetymode/{BTC}-reconciliation")
    assert (mode["spec"]["source"], mode["spec"]["latched"]) == ("reconciliation", True)
    refused = await crew[0].place("BTC-USDT", "BUY", "60000.00", "0.0100")
    assert refused.body["reject_reason"] == "market_cancel_only", refused.body

    # A release is held back while the breach lasts (the finalizer), then goes through.
    venue.kubectl("delete", "safetymode", f"{BTC}-reconciliation", "-n", venue.namespace,
                  "--wait=false")  # fmt: skip
    wait_until(
        lambda: venue.get(f"safetymode/{BTC}-reconciliation").get("status", {}).get("blockedBy"),
        timeout=30, what="the release held back",
    )  # fmt: skip
    assert venue.exists(f"safetymode/{BTC}-reconciliation")
    async with http.post(f"{ledger}/v1/admin/consumers/settlement/resume", headers=headers) as r:
        assert r.status == 200
    wait_until(lambda: not venue.exists(f"safetymode/{BTC}-reconciliation"), timeout=60,
               what="the release")  # fmt: skip
    venue.wait_market(
        BTC, lambda m: m["status"].get("effectiveMode") == "NORMAL"
        and condition(m, "ReconciliationHealthy") == ("True", "InSync"),
        "NORMAL and in sync", timeout=60,
    )  # fmt: skip
    venue.markets("breach released")
    accepted = await crew[0].place("BTC-USDT", "BUY", "60000.00", "0.0100")
    assert accepted.status == 201, accepted.body


async def test_kill_9_of_the_leader_fails_over_to_the_next_epoch_with_nothing_lost(
    venue: KubeVenue, http: aiohttp.ClientSession
) -> None:
    bootstrap = venue.services.endpoints()["EXCHANGE_KAFKA_BOOTSTRAP"]
    run = await crash_failover(venue, http, bootstrap)
    venue.markets("after kill -9 of the matcher")
    venue.show(f"operator.failover: the new epoch served an order {run.seconds:.2f}s after kill -9")
    answers = Counter((p.http, p.code, p.epoch) for p in run.load.results)
    assert run.to_epoch == run.from_epoch + 1 and run.seconds < 10, answers
    last = run.market["status"]["lastFailover"]
    assert (last["fromEpoch"], last["toEpoch"], last["reason"]) == (
        run.from_epoch, run.to_epoch, "LeaderReplaced",
    )  # fmt: skip
    # The standby took over; the killed leader's pod came back as the standby, in sync.
    assert run.market["status"]["fencing"]["leader"] != run.killed_pod
    assert run.market["status"]["replication"]["standby"] == run.killed_pod
    assert run.acked_lost == 0 and run.duplicates == 0
    assert run.invariant_failures == []
    events = venue.kubectl("get", "events", "-n", venue.namespace, "--field-selector",
                           "involvedObject.kind=Market,reason=FailedOver")  # fmt: skip
    assert f"epoch {run.from_epoch} -> {run.to_epoch}" in events
    # While the matcher restarted the gateway answered 503; nothing else failed.
    assert not [p for p in run.load.results if p.http not in (201, 503)]
    for placed in run.load.accepted:  # every acknowledged order is in the topic, once
        assert run.published_ids.count(placed.order_id) == 1, placed
    failovers = await asyncio.to_thread(venue.operator_metric, "exchange_operator_failovers_total")
    assert failovers >= 1  # counted by the active replica


async def test_a_frozen_leader_resumes_silent_and_an_old_epoch_event_is_refused(
    venue: KubeVenue, http: aiohttp.ClientSession
) -> None:
    endpoints = venue.services.endpoints()
    run = await zombie(venue, http, endpoints["EXCHANGE_KAFKA_BOOTSTRAP"],
                       endpoints["EXCHANGE_PG_DSN"])  # fmt: skip
    venue.markets("after SIGSTOP past the lease and SIGCONT")
    assert run.placed_while_frozen == 503  # the gateway's deadline, never an acceptance
    assert run.new_epoch == run.epoch + 1
    # The standby takes the expired lease (LeaderReplaced); on a loaded machine the operator
    # may fence the frozen leader first, a timeout later (LeaderFenced). Both end the epoch.
    assert run.market["status"]["lastFailover"]["reason"] in ("LeaderReplaced", "LeaderFenced")
    assert run.placed_after is not None and run.placed_after.epoch == run.new_epoch
    assert run.published_after_freeze == 0  # nothing published under the old epoch after it
    assert run.stale_counted >= 1  # the hand-written old-epoch event: refused and counted
    venue.show(f"operator.zombie: the ledger applied {run.applied} events of the old epoch")
    assert run.applied == 0


async def test_kill_9_of_the_standby_leaves_the_leader_serving_and_it_comes_back_in_sync(
    venue: KubeVenue, http: aiohttp.ClientSession
) -> None:
    bootstrap = venue.services.endpoints()["EXCHANGE_KAFKA_BOOTSTRAP"]
    run = await standby_loss(venue, http, bootstrap, "kill")
    venue.markets("after kill -9 of the standby")
    venue.show(
        f"standby killed: longest pause {run.longest_gap_s:.2f}s, "
        f"in sync again {run.back_in_sync_s:.1f}s after"
    )
    assert run.epoch_after == run.epoch  # the leader went on
    assert run.out_of_sync_seen  # ... alone, and said so
    assert 0 <= run.back_in_sync_s < 60  # the restarted standby caught up
    assert not [p for p in run.load.results if p.http not in (201, 503)]
    assert run.acked_lost == 0 and run.duplicates == 0


async def test_a_network_cut_between_leader_and_standby_degrades_and_heals(
    venue: KubeVenue, http: aiohttp.ClientSession
) -> None:
    """An iptables DROP inside the leader pod's network namespace, for 12 s: the leader
    commits alone after its sync timeout, the Market says NoSyncStandby; once the rules are
    gone the standby catches up. Nobody else is touched; the rules are removed in any case."""
    bootstrap = venue.services.endpoints()["EXCHANGE_KAFKA_BOOTSTRAP"]
    run = await standby_loss(venue, http, bootstrap, "cut")
    venue.markets("after the network cut healed")
    venue.show(
        f"network cut: longest pause {run.longest_gap_s:.2f}s, "
        f"in sync again {run.back_in_sync_s:.1f}s after the cut"
    )
    assert run.epoch_after == run.epoch
    assert run.out_of_sync_seen and run.degraded_reason == "NoSyncStandby"
    assert 0 <= run.back_in_sync_s < 60  # in sync again only once the cut ended
    assert run.longest_gap_s < 5  # the sync timeout (1 s), not the cut's 12 s
    assert run.acked_lost == 0 and run.duplicates == 0


async def test_an_upgrade_rolls_the_gateways_without_failed_orders_and_the_matcher_within_the_bound(
    venue: KubeVenue, http: aiohttp.ClientSession
) -> None:
    load = GatewayLoad(await traders(venue, http, 4), rate=10)
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    try:
        # A gateway setting: the gateways roll, one by one, each out of the Service first.
        setting = {"gateway": {"replicas": 2, "env": {"EDGE_RATE_LIMIT_PER_MINUTE": "100000"}}}
        await asyncio.to_thread(venue.kubectl, "patch", f"market/{BTC}", "-n", venue.namespace,
                                "--type=merge", "-p", json.dumps({"spec": setting}))  # fmt: skip
        await asyncio.to_thread(_rolled, venue, "deployment/gateway", "EDGE_RATE_LIMIT_PER_MINUTE")
        assert load.failed() == [], load.failed()[:5]
        venue.markets("gateways rolled")

        # The image tag: matchers, ledger and gateways roll onto it.
        await asyncio.to_thread(venue.cluster.tag_image, images.PROJECT_IMAGE, NEXT_IMAGE)
        rolling = asyncio.get_running_loop().time()
        epoch = venue.get(f"market/{BTC}")["status"]["fencing"]["epoch"]
        for market in (BTC, ETH):
            await asyncio.to_thread(venue.kubectl, "patch", f"market/{market}", "-n",
                                    venue.namespace, "--type=merge", "-p",
                                    json.dumps({"spec": {"image": NEXT_IMAGE}}))  # fmt: skip
        for resource in ("deployment/gateway", "statefulset/ledger", f"statefulset/matcher-{BTC}"):
            await asyncio.to_thread(_on_image, venue, resource, NEXT_IMAGE)
        upgraded = await asyncio.to_thread(
            venue.wait_market, BTC,
            lambda m: in_sync(m) and not m["status"].get("rollout")
            and m["status"]["fencing"]["epoch"] > epoch,
            "rolled: a new leader, its standby in sync", 120,
        )  # fmt: skip
        await asyncio.sleep(3)
    finally:
        stop.set()
        await task
    venue.markets("after the upgrade")
    during = [p for p in load.results if p.at > rolling]
    gap = longest_gap(during)
    venue.show(f"upgrade: the matcher switched with at most {gap:.2f}s between two accepted orders")
    assert gap < 10
    # The operator replaced the standby first, then switched the leader once, to it.
    assert upgraded["status"]["fencing"]["epoch"] == epoch + 1
    unexpected = [p for p in during if p.http not in (200, 201) and p.code not in (
        "core_unavailable", "not_leader")]  # fmt: skip
    assert unexpected == [], unexpected[:5]


def _rolled(venue: KubeVenue, deployment: str, variable: str) -> None:
    def done() -> bool:
        found = venue.get(deployment)
        env = found["spec"]["template"]["spec"]["containers"][0]["env"]
        status = found["status"]
        return any(e["name"] == variable for e in env) and (
            status.get("updatedReplicas")
            == status.get("replicas")
            == status.get("availableReplicas")
            and status.get("observedGeneration") == found["metadata"]["generation"]
        )

    venue.wait(done, f"{deployment} rolled", timeout=180)


def _on_image(venue: KubeVenue, resource: str, image: str) -> None:
    _all_updated(venue, resource, lambda c: c["image"] == image, f"{resource} on {image}")


def _on_resources(venue: KubeVenue, resource: str) -> None:
    _all_updated(venue, resource, lambda c: bool(c.get("resources", {}).get("limits")),
                 f"{resource} with its new limits")  # fmt: skip


def _all_updated(
    venue: KubeVenue, resource: str, changed: Callable[[dict[str, Any]], bool], what: str
) -> None:
    """Wait until the first container of `resource`'s template is `changed` and every
    replica runs that template and is ready."""

    def done() -> bool:
        found = venue.get(resource)
        status = found["status"]
        wanted = status.get("replicas")
        return bool(
            changed(found["spec"]["template"]["spec"]["containers"][0])
            and status.get("updatedReplicas") == wanted
            and status.get("readyReplicas") == wanted
        )

    venue.wait(done, what, timeout=240)


async def test_a_market_whose_volume_is_lost_comes_back_from_its_archive(
    venue: KubeVenue, http: aiohttp.ClientSession
) -> None:
    """A third Market, one matcher instance (no standby), archiving to the S3 store: its PVC
    and pod are deleted; the operator's StatefulSet recreates them on an empty volume, the
    matcher restores from the archive to the same state hash, and trading resumes. The
    Market is deleted at the end (the venue goes back to two)."""
    archive = venue.services.archive(prefix=venue.namespace)
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "archive-credentials", "namespace": venue.namespace},
              "stringData": {"AWS_ACCESS_KEY_ID": archive.access_key_id,
                             "AWS_SECRET_ACCESS_KEY": archive.secret_access_key}}  # fmt: skip
    venue.apply(secret)
    venue.apply_market(SOL, "SOL-USDT", matcher={"replicas": 1}, archive={
        "bucket": archive.bucket,  # the store: the venue ConfigMap's EXCHANGE_S3_ENDPOINT
        "credentialsSecretRef": {"name": "archive-credentials"}, "sealSeconds": 1,
    })  # fmt: skip
    await asyncio.to_thread(venue.wait_market, SOL, ready, "Ready", 180)
    await asyncio.to_thread(_gateways_know, venue, "SOL-USDT")
    seller, buyer = await traders(venue, http, 2)

    async def cross() -> None:
        sold = await seller.place("SOL-USDT", "SELL", "150.00", "1.0000")
        assert sold.status == 201, sold.body
        bought = await buyer.place("SOL-USDT", "BUY", "150.00", "1.0000")
        assert bought.status == 201 and bought.body["status"] == "FILLED", bought.body

    for _ in range(5):
        await cross()

    pod = f"matcher-{SOL}-0"
    now = await matcher_status(await asyncio.to_thread(venue.pod_ip, pod))
    assert now is not None and now.archive_enabled
    seq, state_hash = now.seq, now.state_hash.hex()  # the matcher's own word, not a stale status

    def all_archived(m: dict[str, Any]) -> bool:
        return bool((m["status"].get("archive") or {}).get("lastSeq") == seq)

    archived = await asyncio.to_thread(venue.wait_market, SOL, all_archived, "all archived", 60)
    assert archived["status"]["matcher"]["seq"] == seq
    epoch = archived["status"]["fencing"]["epoch"]
    venue.markets("SOL-USDT archived")

    await asyncio.to_thread(lose_volume, venue, pod)
    back = await asyncio.to_thread(
        venue.wait_market, SOL,
        lambda m: ready(m) and m["status"]["fencing"]["epoch"] > epoch, "back on a new volume", 180,
    )  # fmt: skip
    venue.markets("SOL-USDT restored from its archive")
    restarted = await matcher_status(await asyncio.to_thread(venue.pod_ip, pod))
    assert restarted is not None and restarted.seq == seq + 1  # all of it, then EpochStarted
    assert back["status"]["fencing"]["epoch"] == restarted.epoch
    log = venue.kubectl("logs", "-n", venue.namespace, pod)
    assert "the empty volume was restored from the archive" in log
    # The archive, read from outside the cluster, reaches the state hash the market had.
    restored = await asyncio.to_thread(restore_point, archive, "SOL-USDT", seq)
    assert restored["state_hash"] == state_hash
    await cross()  # trading resumes

    venue.kubectl("delete", "market", SOL, "-n", venue.namespace)
    for child in children_of(venue, SOL):
        await asyncio.to_thread(collected, venue, child)


def lose_volume(venue: KubeVenue, pod: str) -> None:
    """Delete the pod's PVC and the pod, as a lost node or an operator's mistake would;
    the StatefulSet recreates both (a pod recreated while its old claim was still being
    deleted is deleted once more, so that the controller makes a new claim)."""
    claim = f"data-{pod}"
    old = venue.get(f"pvc/{claim}")["metadata"]["uid"]
    venue.kubectl("delete", "pvc", claim, "-n", venue.namespace, "--wait=false")
    venue.kubectl("delete", "pod", pod, "-n", venue.namespace)

    def new_claim_bound() -> bool:
        found = json.loads(venue.kubectl("get", "pvc", claim, "-n", venue.namespace, "-o", "json",
                                         check=False) or "{}")  # fmt: skip
        if found.get("metadata", {}).get("uid") not in (None, old):
            return bool(found["status"].get("phase") == "Bound")
        if not found and venue.exists(f"pod/{pod}"):
            venue.kubectl("delete", "pod", pod, "-n", venue.namespace, "--wait=false")
        return False

    venue.wait(new_claim_bound, f"a new volume for {pod}", timeout=120)


def restore_point(archive: ObjectStoreSettings, symbol: str, seq: int) -> dict[str, Any]:
    """`python -m workloads.matcher restore --to-seq` on this host, against the same store."""
    with tempfile.TemporaryDirectory() as scratch:
        done = restore(archive, symbol, Path(scratch), "--to-seq", str(seq))
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def _gateways_know(venue: KubeVenue, symbol: str) -> None:
    """Every gateway replica serves `symbol` (the catalogue changed: they rolled)."""

    def rolled() -> bool:
        found = venue.get("deployment/gateway")
        env = found["spec"]["template"]["spec"]["containers"][0]["env"]
        catalogue = next(e["value"] for e in env if e["name"] == "EDGE_MARKETS")
        status = found["status"]
        return symbol in catalogue and (
            status.get("updatedReplicas")
            == status.get("replicas")
            == status.get("availableReplicas")
            and status.get("observedGeneration") == found["metadata"]["generation"]
        )

    venue.wait(rolled, f"the gateways serving {symbol}", timeout=180)


def test_deleting_the_markets_collects_their_children_and_then_the_venue(venue: KubeVenue) -> None:
    venue.kubectl("delete", "market", ETH, "-n", venue.namespace)
    for child in children_of(venue, ETH):
        collected(venue, child)
    venue.markets("ETH-USDT deleted")

    def catalogue() -> set[str]:
        gateway = venue.get("deployment/gateway")["spec"]["template"]["spec"]["containers"][0]
        raw = next(e["value"] for e in gateway["env"] if e["name"] == "EDGE_MARKETS")
        return {m["symbol"] for m in json.loads(raw)}

    wait_until(lambda: catalogue() == {"BTC-USDT"}, timeout=60, what="the venue without ETH-USDT")
    assert {o["name"] for o in venue.get("statefulset/ledger")["metadata"]["ownerReferences"]} == {
        BTC
    }

    venue.kubectl("delete", "market", BTC, "-n", venue.namespace)
    for shared in [
        *children_of(venue, BTC),
        "deployment/gateway",
        "statefulset/ledger",
        "service/gateway",
        "service/ledger",
        "networkpolicy/exchange-default-deny",
    ]:
        collected(venue, shared)
    venue.markets("all Markets deleted")


def collected(venue: KubeVenue, resource: str) -> None:
    wait_until(lambda: not venue.exists(resource), timeout=120, what=f"{resource} collected")
