"""The Kafka settlement consumer against real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from e2e.bench import simulate
from workloads.ledger.consumer import UNDECODABLE
from workloads.ledger.settings import KafkaSettings
from workloads.ledger.store import APPLY_LOCK
from workloads.ledger.tests.conftest import (
    applied_seq,
    balances,
    close_client,
    engine_view,
    open_client,
    settings_for,
    user_view,
    wait_for,
)
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.integration

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT", maker_fee_bps=5, taker_fee_bps=15)
ACCOUNTS = [f"k{i}" for i in range(8)]
HEADERS = {"X-Admin-Token": "tok-alice"}


def kafka(bootstrap: str, topic: str, batch: int = 500) -> KafkaSettings:
    return KafkaSettings(
        enabled=True,
        brokers=bootstrap,
        topic=topic,
        group_id=f"ledger-{uuid.uuid4().hex[:8]}",
        batch_max_events=batch,
    )


async def committed(bootstrap: str, group: str, topic: str) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(topic, 0))
    return meta.offset if meta is not None and meta.offset >= 0 else None


async def test_a_stream_is_settled_and_offsets_are_committed_only_after_the_database(
    ledger_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    sim = simulate.Simulator(SPEC)
    events = sim.start_epoch(1) + sim.run(simulate.funding(ACCOUNTS, SPEC, 10**8))
    events += sim.run(list(simulate.random_commands(random.Random(9), ACCOUNTS, 1500)))
    await simulate.publish(kafka_bootstrap, kafka_topic, events)

    # Hold the settlement lock: the consumer fetches, but its transaction cannot commit.
    blocker = await asyncpg.connect(ledger_dsn)
    blocking = blocker.transaction()
    await blocking.start()
    await blocker.execute(APPLY_LOCK)
    settings = settings_for(ledger_dsn, kafka=kafka(kafka_bootstrap, kafka_topic))
    ledger, client = await open_client(settings)
    try:

        async def waiting_on_the_lock() -> bool:
            return bool(
                await blocker.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
            )

        await wait_for(waiting_on_the_lock, what="the consumer's batch reaching the database")
        group = settings.kafka.group_id
        assert await committed(kafka_bootstrap, group, kafka_topic) is None
        await blocking.rollback()

        async def settled() -> bool:
            return await applied_seq(ledger_dsn, "BTC-USDT") == sim.engine.seq

        await wait_for(settled, what="settlement of the whole stream")

        async def offsets_committed() -> bool:
            status = await (
                await client.get("/v1/admin/consumers/settlement/status", headers=HEADERS)
            ).json()
            return bool(status["partitions"] and status["partitions"][0]["lag"] == 0)

        await wait_for(offsets_committed, what="offsets committed to the end")
        assert (await committed(kafka_bootstrap, group, kafka_topic) or 0) > len(events)
        assert user_view(await balances(ledger_dsn)) == engine_view(sim)
    finally:
        await blocker.close()
        await close_client(ledger, client)


async def test_pause_stops_settlement_at_a_batch_boundary_and_resume_continues(
    ledger_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    sim = simulate.Simulator(SPEC)
    first = sim.start_epoch(1) + sim.run(simulate.funding(ACCOUNTS, SPEC, 10**8))
    settings = settings_for(ledger_dsn, kafka=kafka(kafka_bootstrap, kafka_topic, batch=50))
    ledger, client = await open_client(settings)
    try:
        await simulate.publish(kafka_bootstrap, kafka_topic, first)
        target = sim.engine.seq

        async def caught_up() -> bool:
            return await applied_seq(ledger_dsn, "BTC-USDT") == target

        await wait_for(caught_up, what="the first part")
        paused = await client.post("/v1/admin/consumers/settlement/pause", headers=HEADERS)
        assert paused.status == 200 and (await paused.json())["state"] == "paused"
        second = sim.run(list(simulate.random_commands(random.Random(2), ACCOUNTS, 300)))
        await simulate.publish(kafka_bootstrap, kafka_topic, second)
        # Paused: for a full second nothing more is settled although the records are there.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while loop.time() < deadline:
            assert await applied_seq(ledger_dsn, "BTC-USDT") == target
            await asyncio.sleep(0.1)
        status = await (
            await client.get("/v1/admin/consumers/settlement/status", headers=HEADERS)
        ).json()
        assert status["paused"] and status["state"] == "paused"
        resumed = await client.post("/v1/admin/consumers/settlement/resume", headers=HEADERS)
        assert resumed.status == 200 and not (await resumed.json())["paused"]
        target = sim.engine.seq
        await wait_for(caught_up, what="the second part after resume")
        assert user_view(await balances(ledger_dsn)) == engine_view(sim)
    finally:
        await close_client(ledger, client)


async def test_garbage_is_skipped_and_a_lost_event_stalls_the_market(
    ledger_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    sim = simulate.Simulator(SPEC)
    events = sim.start_epoch(1) + sim.run(simulate.funding(ACCOUNTS, SPEC, 10**6))
    lost = events.pop(5)  # a record that never made it to the topic
    await simulate.publish(kafka_bootstrap, kafka_topic, events[:3])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await producer.send_and_wait(kafka_topic, b"\x08\x96\x01 not an event")
    await producer.stop()
    await simulate.publish(kafka_bootstrap, kafka_topic, events[3:])
    garbage = UNDECODABLE._value.get()
    settings = settings_for(ledger_dsn, kafka=kafka(kafka_bootstrap, kafka_topic))
    ledger, client = await open_client(settings)
    try:

        async def stalled() -> bool:
            row = await ledger.pool.fetchrow("SELECT * FROM market_state")
            parked = await ledger.pool.fetchval("SELECT count(*) FROM parked_events")
            return bool(row and row["stalled"] and parked == len(events) - 5)

        await wait_for(stalled, what="the stall behind the lost event")
        assert UNDECODABLE._value.get() == garbage + 1
        assert await applied_seq(ledger_dsn, "BTC-USDT") == lost.funds_credited.envelope.seq - 1
        # The missing event arrives (re-published): the parked ones follow it, in order.
        await simulate.publish(kafka_bootstrap, kafka_topic, [lost])

        async def drained() -> bool:
            return await applied_seq(ledger_dsn, "BTC-USDT") == sim.engine.seq

        await wait_for(drained, what="the drain of the parked events")
        assert user_view(await balances(ledger_dsn)) == engine_view(sim)
    finally:
        await close_client(ledger, client)
