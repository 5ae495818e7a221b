"""The operator's fault scenarios on the local cluster, shared by the e2e tests (which assert
on what they return) and `make bench BENCH=operator` (which prints it)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import grpc
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from contracts.v1 import common_pb2, events_pb2, matcher_pb2, matcher_pb2_grpc
from e2e.drills.gateway_load import GatewayLoad, Placed
from e2e.drills.kube_venue import ADMIN_TOKEN, KubeVenue, ready
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


@dataclass
class Failover:
    from_epoch: int
    to_epoch: int
    seconds: float
    """From the kill until the first order accepted under the new epoch."""
    market: dict[str, Any]
    load: GatewayLoad
    published_ids: list[str] = field(default_factory=list)


async def crash_failover(
    venue: KubeVenue, http: aiohttp.ClientSession, bootstrap: str, market: str = "btc-usdt"
) -> Failover:
    """`kill -9` of the leading matcher process while orders flow through the gateway."""
    load = GatewayLoad(await traders(venue, http, 4), rate=20)
    epoch = venue.get(f"market/{market}")["status"]["fencing"]["epoch"]
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    await asyncio.sleep(2)
    killed = asyncio.get_running_loop().time()
    os.kill(await asyncio.to_thread(venue.matcher_pid, market), signal.SIGKILL)
    after = await asyncio.to_thread(
        venue.wait_market, market, lambda m: m["status"]["fencing"]["epoch"] > epoch and ready(m),
        "the next epoch, Ready", 60,
    )  # fmt: skip
    await asyncio.sleep(3)
    stop.set()
    await task
    served = [p for p in load.accepted if p.epoch == epoch + 1]
    seconds = served[0].at - killed if served else float("inf")
    wanted = {p.order_id for p in load.accepted}
    deadline = time.monotonic() + 30
    while True:  # the last acknowledged orders reach the topic within the outbox's linger
        events = await read_topic(bootstrap, f"{venue.namespace}.core.events.v1")
        ids = [
            f"{e.order_accepted.envelope.symbol}:{e.order_accepted.order_id}"
            for e in events
            if e.HasField("order_accepted")
        ]
        if wanted <= set(ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    return Failover(epoch, after["status"]["fencing"]["epoch"], seconds, after, load, ids)


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
    pod_ip = venue.get(f"pod/matcher-{market}-0")["status"]["podIP"]
    async with grpc.aio.insecure_channel(f"{pod_ip}:50051") as channel:
        status = await matcher_pb2_grpc.MatcherStub(channel).GetStatus(
            matcher_pb2.GetStatusRequest(), timeout=5
        )
    durable = status.last_durable_seq
    pid = await asyncio.to_thread(venue.matcher_pid, market)
    os.kill(pid, signal.SIGSTOP)
    try:
        frozen = await crew[0].place(symbol, "BUY", "60000.00", "0.0100")  # the gateway's deadline
        await asyncio.sleep(12 - 5)  # past the lease's 10 s, short of the operator's fencing
        await asyncio.to_thread(venue.markets, "frozen past the lease's end")
    finally:
        os.kill(pid, signal.SIGCONT)
    after = await asyncio.to_thread(
        venue.wait_market, market, lambda m: m["status"]["fencing"]["epoch"] > epoch and ready(m),
        "the next epoch after the zombie woke", 60,
    )  # fmt: skip
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
