"""The checks made after a fault, from the outside: what traders were told against the
events topic, the topic against the ledger's book, and the ledger's own health."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from contracts.v1 import events_pb2
from e2e.drills.load import CrossingLoad
from e2e.drills.venue import Venue
from workloads.matcher.outbox import topic_partitions


def envelope(event: events_pb2.Event) -> Any:
    body = event.WhichOneof("body")
    assert body is not None, event
    return getattr(event, body).envelope


async def read_topic(bootstrap: str, topic: str, within: float = 60.0) -> list[events_pb2.Event]:
    """Every committed event of the topic, up to its end as it is now."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    events: list[events_pb2.Event] = []
    try:
        partitions = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        async with asyncio.timeout(within):
            for tp in partitions:
                while await consumer.position(tp) < ends[tp]:
                    batch = await consumer.getmany(tp, timeout_ms=500)
                    events.extend(
                        events_pb2.Event.FromString(r.value) for r in batch.get(tp, []) if r.value
                    )
    finally:
        await consumer.stop()
    return events


@dataclass(frozen=True)
class Findings:
    events: int
    last_seq: int
    trades: int
    acked: int
    problems: tuple[str, ...]


async def nothing_lost(venue: Venue, load: CrossingLoad) -> Findings:
    """Every acknowledged order is in the topic once, under the id the trader was given;
    the market's seqs are gapless and each event id appears once; every trade in the topic
    is booked exactly once by the ledger, and nothing else is; invariants and the balance
    rebuild agree."""
    problems: list[str] = []
    events = [
        e for e in await read_topic(venue.kafka_bootstrap, venue.topic)
        if envelope(e).symbol == venue.symbol
    ]  # fmt: skip
    ids = Counter(envelope(e).event_id for e in events)
    twice = [event_id for event_id, n in ids.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} event ids published more than once, e.g. {twice[:3]}")
    seqs = sorted({envelope(e).seq for e in events})
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"seqs are not gapless from 1: {len(seqs)} seqs up to {seqs[-1:]}")
    accepted = Counter(e.order_accepted.order_id for e in events if e.HasField("order_accepted"))
    by_client = {
        e.order_accepted.client_order_id: e.order_accepted.order_id
        for e in events
        if e.HasField("order_accepted")
    }
    for ack in load.acked:
        if accepted[ack.order_id] != 1:
            problems.append(
                f"acknowledged order {ack.order_id} published {accepted[ack.order_id]}x"
            )
        elif by_client.get(ack.client_order_id) != ack.order_id:
            problems.append(f"{ack.client_order_id} published under another order id")
    trades = {e.trade_executed.trade_id for e in events if e.HasField("trade_executed")}
    conn = await asyncpg.connect(venue.dsn)
    try:
        booked = Counter(
            r["trade_id"]
            for r in await conn.fetch(
                "SELECT trade_id FROM journal WHERE kind = 'trade' AND market = $1", venue.symbol
            )
        )
    finally:
        await conn.close()
    if set(booked) != trades:
        problems.append(
            f"ledger trades differ from the topic's: {len(set(booked) - trades)} extra,"
            f" {len(trades - set(booked))} missing"
        )
    if any(n > 1 for n in booked.values()):
        problems.append("a trade is booked more than once")
    status, report = await venue.post("/v1/admin/invariants/check")
    if status != 200 or not report["ok"]:
        problems.append(f"invariants: {report}")
    status, rebuild = await venue.post("/v1/admin/rebuild-balances", {})
    if status != 200 or not rebuild["consistent"]:
        problems.append(f"balance rebuild disagrees: {rebuild}")
    return Findings(
        len(events), seqs[-1] if seqs else 0, len(trades), len(load.acked), tuple(problems)
    )


async def breaches(venue: Venue) -> list[dict[str, Any]]:
    """Every reconciliation evaluation of the market that was a breach."""
    conn = await asyncpg.connect(venue.dsn)
    try:
        rows = await conn.fetch(
            "SELECT evaluated_at, lag, reasons, action FROM reconciliation_history"
            " WHERE market = $1 AND breach ORDER BY id",
            venue.symbol,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]
