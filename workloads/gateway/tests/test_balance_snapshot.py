"""Balances that do not need the events topic's whole history: a gateway replica started
after retention deleted the topic's early records still shows every trader's balances,
because it starts each market's balances from the matcher's committed snapshot
(`GetBalances`) and applies only the events above its seq. Real matcher, Kafka, PostgreSQL
and gateway processes."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition

from workloads.gateway.client import GatewayClient
from workloads.gateway.tests.conftest import StackFactory, new_trader, poll
from workloads.matcher.outbox import topic_partitions

pytestmark = pytest.mark.integration


async def delete_every_record(bootstrap: str, topic: str) -> int:
    """What retention does to old segments, to every record the topic holds now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap, topic)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(end) for tp, end in ends.items()})
    finally:
        await admin.close()
    return sum(ends.values())


async def balances_at(client: GatewayClient, url: str, seq: int) -> list[dict[str, Any]] | None:
    """The trader's balances from the replica at `url`, once it has applied `seq`."""
    reply = await client.on(url).call("GET", "/v1/account/balances")
    assert reply.status == 200, reply.body
    if reply.body["as_of_seq"]["BTC-USDT"] < seq:
        return None
    return reply.body["balances"]  # type: ignore[no-any-return]


async def test_a_replica_started_after_retention_shows_the_matchers_balances(
    make_stack: StackFactory, http: aiohttp.ClientSession, kafka_bootstrap: str
) -> None:
    stack = make_stack()
    maker, _ = await new_trader(http, stack.url, stack)
    taker, _ = await new_trader(http, stack.url, stack)
    order = {"symbol": "BTC-USDT", "side": "SELL", "price": "60000.00", "quantity": "0.0200"}
    assert (await maker.call("POST", "/v1/orders", order)).status == 201
    bought = await taker.call("POST", "/v1/orders", {**order, "side": "BUY", "quantity": "0.0100"})
    assert bought.body["status"] == "FILLED", bought.body  # the maker holds the rest

    seq = await stack.matcher_seq()
    first = stack.gateways[0].url
    before = {
        name: await poll(lambda c=client: balances_at(c, first, seq))
        for name, client in (("maker", maker), ("taker", taker))
    }
    held = {b["asset"]: b["hold"] for b in before["maker"]}
    assert held["BTC"] == "0.01000000", before  # the resting remainder

    assert await delete_every_record(kafka_bootstrap, stack.topic) > 0
    late = stack.add_gateway().url

    after = {
        name: await poll(lambda c=client: balances_at(c, late, seq))
        for name, client in (("maker", maker), ("taker", taker))
    }
    assert after == before

    # Events above the snapshot apply on top of it, once.
    sold = await taker.call("POST", "/v1/orders", {**order, "quantity": "0.0050"})
    assert sold.status == 201, sold.body
    seq = await stack.matcher_seq()
    for client in (maker, taker):
        on_first = await poll(lambda c=client: balances_at(c, first, seq))
        assert await poll(lambda c=client: balances_at(c, late, seq)) == on_first
