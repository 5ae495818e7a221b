"""The operator's fault scenarios on the local cluster, shared by the e2e tests (which assert
on what they return) and `make bench BENCH=operator` (which prints it)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import grpc
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from contracts.v1 import common_pb2, events_pb2, matcher_pb2, matcher_pb2_grpc
from e2e.drills.gateway_load import GatewayLoad, Placed, longest_gap
from e2e.drills.kube_venue import ADMIN_TOKEN, KubeVenue, condition, ready
from e2e.drills.traders import Trader, deposit
from e2e.drills.verify import envelope, read_topic
from workloads.matcher.outbox import topic_partitions


async def traders(venue: KubeVenue, http: aiohttp.ClientSession, n: int) -> list[Trader]:
    """`n` traders, signed up at the gateway and funded through the ledger in the venue's
    markets (BTC-USDT, and ETH-USDT when it exists)."""
    symbols = [m["spec"]["symbol"] for m in venue.get("markets")["items"]]
    found = [await Trader.signup(http, venue.gateway_url, f"trader{i}") for i in range(n)]
    for trader in found:
        for symbol in symbols:
            base, _, quote = symbol.partition("-")
            for asset, amount in ((base, 10**10), (quote, 10**13)):
                await deposit(http, venue.ledger_url, ADMIN_TOKEN, symbol, trader.account, asset,
                              amount)  # fmt: skip
    return found


class Delivery:
    """What the traders were told against what the topic holds."""

    load: GatewayLoad
    published_ids: list[str]

    @property
    def acked_lost(self) -> int:
        """Acknowledged orders missing from the topic."""
        return len({p.order_id for p in self.load.accepted} - set(self.published_ids))

    @property
    def duplicates(self) -> int:
        """Orders accepted twice in the topic (the ledger would settle them twice)."""
        return len(self.published_ids) - len(set(self.published_ids))


@dataclass
class Failover(Delivery):
    from_epoch: int
    to_epoch: int
    seconds: float
    """From the kill until the first order accepted under the new epoch."""
    market: dict[str, Any]
    load: GatewayLoad
    published_ids: list[str] = field(default_factory=list)
    killed_pod: str = ""
    invariant_failures: list[str] = field(default_factory=list)


async def crash_failover(
    venue: KubeVenue, http: aiohttp.ClientSession, bootstrap: str, market: str = "btc-usdt"
) -> Failover:
    """`kill -9` of the leading matcher process while orders flow through the gateway; with a
    standby, until the former leader is back in sync as the standby."""
    crew = await traders(venue, http, 4)
    load = GatewayLoad(crew, rate=20)
    epoch = venue.get(f"market/{market}")["status"]["fencing"]["epoch"]
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    await asyncio.sleep(2)
    leader = await asyncio.to_thread(venue.leader_pod, market)
    killed = asyncio.get_running_loop().time()
    await asyncio.to_thread(venue.signal_matcher, market, leader, signal.SIGKILL)
    after = await asyncio.to_thread(
        venue.wait_market, market, lambda m: m["status"]["fencing"]["epoch"] > epoch and ready(m),
        "the next epoch, Ready", 60,
    )  # fmt: skip
    if after["spec"]["matcher"]["replicas"] > 1:
        after = await asyncio.to_thread(
            venue.wait_market, market, in_sync, "the former leader in sync as the standby", 90
        )
    await asyncio.sleep(2)
    stop.set()
    await task
    served = [p for p in load.accepted if p.epoch == epoch + 1]
    seconds = served[0].at - killed if served else float("inf")
    if not served:
        diagnostics = await asyncio.to_thread(venue.diagnostics)
        venue.show(f"no order served under the new epoch:\n{diagnostics}")
    ids = await published_order_ids(bootstrap, venue, {p.order_id for p in load.accepted})
    failures = await invariant_failures(http, venue)
    return Failover(
        epoch, after["status"]["fencing"]["epoch"], seconds, after, load, ids, leader, failures
    )


def in_sync(market: dict[str, Any]) -> bool:
    """The Market says its leader has a standby in sync."""
    return ready(market) and bool((market["status"].get("replication") or {}).get("inSync"))


def in_sync_under(epoch: int, market: dict[str, Any]) -> bool:
    return in_sync(market) and market["status"]["fencing"]["epoch"] == epoch


async def published_order_ids(
    bootstrap: str, venue: KubeVenue, wanted: set[str], within: float = 30
) -> list[str]:
    """The accepted orders' ids in the venue's topic (symbol:order id), once `wanted` are
    all there (the last acknowledged ones arrive within the outbox's linger) or `within`."""
    deadline = time.monotonic() + within
    while True:
        events = await read_topic(bootstrap, f"{venue.namespace}.core.events.v1")
        ids = [
            f"{e.order_accepted.envelope.symbol}:{e.order_accepted.order_id}"
            for e in events
            if e.HasField("order_accepted")
        ]
        if wanted <= set(ids) or time.monotonic() > deadline:
            return ids
        await asyncio.sleep(0.5)


async def invariant_failures(http: aiohttp.ClientSession, venue: KubeVenue) -> list[str]:
    """The ledger's invariants that fail now ([]: all hold)."""
    async with http.post(
        f"{venue.ledger_url}/v1/admin/invariants/check", headers={"X-Admin-Token": ADMIN_TOKEN}
    ) as answer:
        body = await answer.json()
    return [str(c.get("name")) for c in body.get("checks", []) if not c.get("ok")]


async def matcher_status(ip: str) -> matcher_pb2.MatcherStatus | None:
    async with grpc.aio.insecure_channel(f"{ip}:50051") as channel:
        try:
            status: matcher_pb2.MatcherStatus = await matcher_pb2_grpc.MatcherStub(
                channel
            ).GetStatus(matcher_pb2.GetStatusRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return None
        return status


@dataclass
class StandbyLoss(Delivery):
    """What the leader did while its standby was gone (killed, or cut off)."""

    epoch: int
    epoch_after: int
    out_of_sync_seen: bool
    """The leader reported its standby out of sync (polled every 100 ms)."""
    degraded_reason: str
    """The Market's Degraded reason seen meanwhile ("" if the operator never saw it)."""
    back_in_sync_s: float
    """From the standby's return (its kill, or the cut's end) until the leader said its standby
    is in sync again (inf: never; negative: before the cut ended, which it must not)."""
    longest_gap_s: float
    """The longest time between two accepted orders while it happened."""
    load: GatewayLoad
    published_ids: list[str]
    market: dict[str, Any]


async def standby_loss(
    venue: KubeVenue,
    http: aiohttp.ClientSession,
    bootstrap: str,
    how: str,
    market: str = "btc-usdt",
    cut_seconds: float = 12.0,
) -> StandbyLoss:
    """`how`: "kill" (kill -9 of the standby's process; its instance manager restarts it) or
    "cut" (iptables DROP between the two pods, inside the leader pod's network namespace,
    for `cut_seconds`, then removed). Orders flow throughout."""
    load = GatewayLoad(await traders(venue, http, 4), rate=20)
    before = await asyncio.to_thread(venue.wait_market, market, in_sync, "standby in sync", 90)
    epoch = before["status"]["fencing"]["epoch"]
    leader = await asyncio.to_thread(venue.leader_pod, market)
    standby = await asyncio.to_thread(venue.standby_pod, market)
    leader_ip = await asyncio.to_thread(venue.pod_ip, leader)
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    seen: dict[str, Any] = {"out_of_sync": False, "degraded": "", "in_sync_again": None}
    watching, again = asyncio.Event(), asyncio.Event()

    async def watch() -> None:
        """The leader's own word, every 100 ms: out of sync, then in sync again when."""
        while not watching.is_set():
            status = await matcher_status(leader_ip)
            if status is not None and status.role == "leader":
                if not status.standby_in_sync:
                    seen["out_of_sync"], seen["in_sync_again"] = True, None
                elif seen["out_of_sync"] and seen["in_sync_again"] is None:
                    seen["in_sync_again"] = time.monotonic()
                    again.set()
            await asyncio.sleep(0.1)

    async def watch_market() -> None:
        while not watching.is_set():
            found = await asyncio.to_thread(venue.get, f"market/{market}")
            if condition(found, "Degraded") == ("True", "NoSyncStandby"):
                seen["degraded"] = "NoSyncStandby"
            await asyncio.sleep(0.5)

    watchers = [asyncio.create_task(watch()), asyncio.create_task(watch_market())]
    await asyncio.sleep(2)
    started = time.monotonic()
    if how == "kill":
        await asyncio.to_thread(venue.signal_matcher, market, standby, signal.SIGKILL)
        returned = time.monotonic()
    else:
        standby_ip = await asyncio.to_thread(venue.pod_ip, standby)
        pid = await asyncio.to_thread(venue.matcher_pid, market, leader)
        async with network_cut(venue, pid, standby_ip):
            await asyncio.sleep(cut_seconds)
        returned = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(again.wait(), 90)
    back = (seen["in_sync_again"] or float("inf")) - returned
    after = await asyncio.to_thread(
        venue.wait_market, market, in_sync, "the standby in sync again", 90
    )
    await asyncio.sleep(2)
    watching.set()
    stop.set()
    await asyncio.gather(task, *watchers)
    during = [p for p in load.results if p.at >= started - 1]
    ids = await published_order_ids(bootstrap, venue, {p.order_id for p in load.accepted})
    return StandbyLoss(
        epoch, after["status"]["fencing"]["epoch"], bool(seen["out_of_sync"]),
        str(seen["degraded"]),
        back, longest_gap(during), load, ids, after,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def network_cut(venue: KubeVenue, pid: int, peer_ip: str) -> AsyncIterator[None]:
    """Drop every packet between the network namespace of the node's process `pid` and
    `peer_ip` while inside; the rules are removed on the way out, whatever happens."""
    rules = [["INPUT", "-s", peer_ip, "-j", "DROP"], ["OUTPUT", "-d", peer_ip, "-j", "DROP"]]
    enter = ["nsenter", "-t", str(pid), "-n", "iptables", "-w", "5"]
    added = []
    try:
        for rule in rules:
            await asyncio.to_thread(venue.cluster.on_node, *enter, "-I", *rule)
            added.append(rule)
        yield
    finally:
        for rule in added:
            await asyncio.to_thread(venue.cluster.on_node, *enter, "-D", *rule, check=False)


@dataclass
class Zombie:
    epoch: int
    new_epoch: int
    durable_at_freeze: int
    placed_while_frozen: int
    """The HTTP status of an order sent while the leader was frozen."""
    published_after_freeze: int
    """Events of the old epoch beyond its durable seq at the freeze (must be 0)."""
    stale_counted: float
    """How many more stale-epoch events the ledger counted after the test wrote one."""
    applied: int
    """Events of the old epoch beyond the freeze that the ledger booked (must be 0)."""
    placed_after: Placed | None
    market: dict[str, Any]


async def zombie(
    venue: KubeVenue,
    http: aiohttp.ClientSession,
    bootstrap: str,
    dsn: str,
    market: str = "btc-usdt",
    symbol: str = "BTC-USDT",
) -> Zombie:
    """SIGSTOP of the leading matcher past its lease's end (short of the operator's fencing),
    SIGCONT; then an event of the old epoch written to the topic by hand."""
    crew = await traders(venue, http, 2)
    epoch = venue.get(f"market/{market}")["status"]["fencing"]["epoch"]
    leader = await asyncio.to_thread(venue.leader_pod, market)
    status = await matcher_status(await asyncio.to_thread(venue.pod_ip, leader))
    assert status is not None, f"{leader} does not answer"
    durable = status.last_durable_seq
    pid = await asyncio.to_thread(venue.signal_matcher, market, leader, signal.SIGSTOP)
    try:
        frozen = await crew[0].place(symbol, "BUY", "60000.00", "0.0100")  # the gateway's deadline
        await asyncio.sleep(12 - 5)  # past the lease's 10 s, short of the operator's fencing
        await asyncio.to_thread(venue.markets, "frozen past the lease's end")
    finally:
        await asyncio.to_thread(venue.signal, pid, signal.SIGCONT)
    after = await asyncio.to_thread(
        venue.wait_market, market, lambda m: m["status"]["fencing"]["epoch"] > epoch and ready(m),
        "the next epoch after the zombie woke", 60,
    )  # fmt: skip
    if after["spec"]["matcher"]["replicas"] > 1:  # the old leader rejoins as the standby
        after = await asyncio.to_thread(
            venue.wait_market, market, in_sync, "the woken leader in sync as the standby", 90
        )
    placed = await crew[1].place(symbol, "SELL", "60000.00", "0.0100")
    topic = f"{venue.namespace}.core.events.v1"
    stale = [
        e for e in await read_topic(bootstrap, topic)
        if envelope(e).symbol == symbol and envelope(e).epoch == epoch
        and envelope(e).seq > durable
    ]  # fmt: skip
    before = await stale_count(http, venue, symbol)
    await publish_stale(bootstrap, topic, symbol, epoch, seq=durable + 1_000_000)
    deadline = time.monotonic() + 30
    while (counted := await stale_count(http, venue, symbol)) <= before:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    schema = "ledger_" + venue.namespace.replace("-", "_")
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        applied = await conn.fetchval(
            "SELECT count(*) FROM journal WHERE market = $1 AND epoch = $2 AND seq > $3",
            symbol, epoch, durable,
        )  # fmt: skip
    finally:
        await conn.close()
    return Zombie(
        epoch,
        after["status"]["fencing"]["epoch"],
        durable,
        frozen.status,
        len(stale),
        counted - before,
        int(applied),
        None if placed.status != 201 else _placed(placed.body),
        after,
    )


def _placed(body: Any) -> Placed:
    return Placed(0.0, 201, str(body["order_id"]), str(body["status"]), "", int(body["epoch"]))


async def stale_count(http: aiohttp.ClientSession, venue: KubeVenue, symbol: str) -> float:
    async with http.get(f"{venue.ledger_url}/metrics") as answer:
        text = await answer.text()
    for line in text.splitlines():
        if line.startswith(f'ledger_stale_epoch_rejected_total{{market="{symbol}"}}'):
            return float(line.split()[1])
    return 0.0


async def publish_stale(bootstrap: str, topic: str, symbol: str, epoch: int, seq: int) -> None:
    """An event of `epoch` at `seq`, as a stale leader would write it (not transactional)."""
    event = events_pb2.Event(
        epoch_started=events_pb2.EpochStarted(
            envelope=common_pb2.EventEnvelope(
                event_id=f"{symbol}:{seq}:0", event_version=1, symbol=symbol, seq=seq,
                occurred_at=time.time_ns(), epoch=epoch,
            ),
        )
    )  # fmt: skip
    partitions = await topic_partitions(bootstrap, topic)
    key = symbol.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, event.SerializeToString(), key=key,
            partition=DefaultPartitioner()(key, partitions, partitions),
        )  # fmt: skip
    finally:
        await producer.stop()


@dataclass
class FailoverDrill(Delivery):
    seconds: list[float]
    """Per cycle: from the kill until the first order accepted under the new epoch."""
    load: GatewayLoad
    published_ids: list[str]
    epochs: tuple[int, int]


async def failover_cycles(
    venue: KubeVenue,
    http: aiohttp.ClientSession,
    bootstrap: str,
    cycles: int,
    market: str = "btc-usdt",
) -> FailoverDrill:
    """`cycles` kills -9 of whichever matcher leads, orders at 20/s throughout; each cycle
    waits for the new epoch to serve and for the killed one to be back in sync."""
    load = GatewayLoad(await traders(venue, http, 4), rate=20)
    start = await asyncio.to_thread(venue.wait_market, market, in_sync, "standby in sync", 90)
    first = start["status"]["fencing"]["epoch"]
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    loop = asyncio.get_running_loop()
    seconds: list[float] = []
    epoch = first
    try:
        for _ in range(cycles):
            await asyncio.sleep(1)
            leader = await asyncio.to_thread(venue.leader_pod, market)
            killed = loop.time()
            await asyncio.to_thread(venue.signal_matcher, market, leader, signal.SIGKILL)
            while not [p for p in load.accepted if p.epoch > epoch and p.at > killed]:
                if loop.time() - killed > 60:
                    raise AssertionError(f"no order accepted 60 s after killing {leader}")
                await asyncio.sleep(0.05)
            served = next(p for p in load.accepted if p.epoch > epoch and p.at > killed)
            seconds.append(served.at - killed)
            epoch = served.epoch
            await asyncio.to_thread(
                venue.wait_market, market, functools.partial(in_sync_under, epoch),
                "the killed leader back in sync", 90,
            )  # fmt: skip
    finally:
        stop.set()
        await task
    ids = await published_order_ids(bootstrap, venue, {p.order_id for p in load.accepted})
    return FailoverDrill(seconds, load, ids, (first, epoch))
