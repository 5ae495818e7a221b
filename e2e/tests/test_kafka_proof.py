"""Proof that the Kafka the fixtures start gives transactions and producer fencing."""

import asyncio
import contextlib

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced

pytestmark = pytest.mark.integration


async def _read_committed(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    """Read from the start with read_committed until `expect` records or 10 s of silence."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        while len(values) < expect:
            batch = await consumer.getmany(timeout_ms=10_000)
            if not batch:
                break
            values.extend(r.value for records in batch.values() for r in records if r.value)
    finally:
        await consumer.stop()
    return values


async def test_aborted_messages_are_invisible_to_read_committed(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"{kafka_topic}-tx"
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(kafka_topic, b"committed-1")
        await producer.begin_transaction()
        await producer.send_and_wait(kafka_topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(kafka_topic, b"committed-2")
    finally:
        await producer.stop()

    assert await _read_committed(kafka_bootstrap, kafka_topic, expect=3) == [
        b"committed-1",
        b"committed-2",
    ]


async def test_second_producer_with_same_transactional_id_fences_the_first(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    tx_id = f"{kafka_topic}-market"
    first = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=tx_id)
    second = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=tx_id)
    await first.start()
    try:
        async with first.transaction():
            await first.send_and_wait(kafka_topic, b"from-first")
        await second.start()  # InitProducerId bumps the epoch: the first is now a zombie
        try:
            with pytest.raises(ProducerFenced):
                async with first.transaction():
                    await first.send_and_wait(kafka_topic, b"zombie")
            async with second.transaction():
                await second.send_and_wait(kafka_topic, b"from-second")
        finally:
            await second.stop()
    finally:
        with contextlib.suppress(KafkaError, TimeoutError):
            await asyncio.wait_for(first.stop(), 10)

    assert await _read_committed(kafka_bootstrap, kafka_topic, expect=3) == [
        b"from-first",
        b"from-second",
    ]
