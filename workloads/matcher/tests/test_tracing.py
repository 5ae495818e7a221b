"""The matcher's spans: only commands of sampled orders get them, in the order's trace, and
the outbox's publish span travels on to the consumers in the events' record headers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contracts.v1 import common_pb2 as c
from contracts.v1 import matcher_pb2, matcher_pb2_grpc
from e2e.env.process import free_port
from workloads.common import tracing
from workloads.matcher import engine as e
from workloads.matcher import wal
from workloads.matcher.epoch import FileEpoch
from workloads.matcher.outbox import Outbox
from workloads.matcher.sequencer import Sequencer, SequencerSettings
from workloads.matcher.service import MatcherService
from workloads.matcher.settings import OtelSettings
from workloads.matcher.spec import MarketSpec
from workloads.matcher.tracing import MatcherTracing, sampled_positions

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT", lot_size=10, tick_size=5, max_lots=1_000)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GATEWAY_SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{TRACE}-{GATEWAY_SPAN}-01"
UNSAMPLED = f"00-{'1' * 32}-{GATEWAY_SPAN}-00"


def spans_of(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    """Poll `check` (spans are built after the reply, on a later turn of the loop)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.unit
def test_only_sampled_traceparents_are_traced() -> None:
    items = [((), SAMPLED), ((), UNSAMPLED), ((), "corr-1"), ((), ""), ((), TRACE)]
    assert sampled_positions(items) == [0]
    assert tracing.is_sampled(SAMPLED) and not tracing.is_sampled(UNSAMPLED)
    assert tracing.parent_of(SAMPLED) is not None and tracing.parent_of(UNSAMPLED) is None
    assert tracing.parent_of(f"00-{'0' * 32}-{GATEWAY_SPAN}-01") is None
    assert tracing.parent_of(b"garbage") is None


@dataclass
class Harness:
    stub: matcher_pb2_grpc.MatcherStub
    service: MatcherService
    exporter: InMemorySpanExporter


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    fencing = FileEpoch(tmp_path / "epoch", "test-instance")
    sequencer = Sequencer(
        e.Engine(SPEC), tmp_path, await fencing.acquire(), fencing, SequencerSettings()
    )
    sequencer.start()
    service = MatcherService(SPEC, sequencer, lambda: 0)
    exporter = InMemorySpanExporter()
    service.tracing = MatcherTracing(tracing.provider(OtelSettings(), exporter), SPEC.symbol)
    server = grpc.aio.server()
    matcher_pb2_grpc.add_MatcherServicer_to_server(service, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield Harness(matcher_pb2_grpc.MatcherStub(channel), service, exporter)
    await channel.close()
    await server.stop(None)
    await sequencer.close()


def place(client_order_id: str, correlation: str) -> matcher_pb2.Command:
    return matcher_pb2.Command(
        place_order=matcher_pb2.PlaceOrderRequest(
            symbol="BTC-USDT", account="alice", client_order_id=client_order_id,
            side=c.SIDE_BUY, order_type=c.ORDER_TYPE_LIMIT, time_in_force=c.TIME_IN_FORCE_GTC,
            price=100, quantity=50, correlation_id=correlation,
        )
    )  # fmt: skip


@pytest.mark.unit
async def test_a_batch_span_and_its_wal_commit_join_the_sampled_orders_trace(
    harness: Harness,
) -> None:
    batch = [place("o-1", "corr"), place("o-2", SAMPLED), place("o-3", UNSAMPLED)]
    reply = await harness.stub.SubmitBatch(matcher_pb2.CommandBatch(commands=batch))
    sampled_seq = reply.replies[1].seq
    await until(lambda: len(harness.exporter.get_finished_spans()) == 2)
    spans = spans_of(harness.exporter)
    assert set(spans) == {"matcher.batch", "matcher.wal_commit"}  # the sampled order's only
    batch_span, commit = spans["matcher.batch"], spans["matcher.wal_commit"]
    assert format(batch_span.context.trace_id, "032x") == TRACE
    assert batch_span.parent is not None and format(batch_span.parent.span_id, "016x") == (
        GATEWAY_SPAN
    )
    assert batch_span.kind is SpanKind.SERVER
    assert commit.parent is not None and commit.parent.span_id == batch_span.context.span_id
    assert batch_span.attributes is not None
    assert batch_span.attributes["matcher.seq"] == sampled_seq
    assert batch_span.attributes["matcher.batch.commands"] == 3
    assert batch_span.attributes["matcher.outcome"] == "rejected"  # alice has no funds
    assert batch_span.start_time is not None and commit.start_time is not None
    assert batch_span.end_time == commit.end_time and batch_span.start_time <= commit.start_time

    harness.exporter.clear()  # a retry of the sampled order: its original's seq, no commit
    again = await harness.stub.SubmitBatch(
        matcher_pb2.CommandBatch(commands=[place("o-4", ""), place("o-2", SAMPLED)])
    )
    await until(lambda: len(harness.exporter.get_finished_spans()) == 1)
    duplicate = spans_of(harness.exporter)["matcher.batch"]
    assert duplicate.attributes is not None
    assert duplicate.attributes["matcher.outcome"] == "duplicate"
    assert duplicate.attributes["matcher.seq"] == sampled_seq == again.replies[1].seq

    harness.service.tracing = None  # MATCHER_OTEL_ENDPOINT empty: no span at all
    harness.exporter.clear()
    await harness.stub.SubmitBatch(matcher_pb2.CommandBatch(commands=[place("o-5", SAMPLED)]))
    await harness.stub.PlaceOrder(place("o-6", SAMPLED).place_order)
    await asyncio.sleep(0)
    assert harness.exporter.get_finished_spans() == ()


@pytest.mark.integration
async def test_the_outbox_hands_its_publish_span_to_the_consumers_of_sampled_events(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: str
) -> None:
    spec = MarketSpec(f"M{uuid.uuid4().hex[:8]}-USDT", "BTC", "USDT")
    engine = e.Engine(spec)
    writer = wal.WalWriter(tmp_path, 1, 64 << 20)
    commands = [
        ((e.C_FUNDING, "f-1", "alice", "USDT", 10**9, e.CREDIT), ""),
        ((e.C_PLACE, "alice", "o-1", e.BUY, e.LIMIT, e.GTC, 100, 5, False, 0), SAMPLED),
        ((e.C_PLACE, "alice", "o-2", e.BUY, e.LIMIT, e.GTC, 100, 5, False, 0), UNSAMPLED),
    ]
    entries = []
    for seq, (command, correlation) in enumerate(commands, 1):
        events = engine.execute(command, seq, seq * 1000)
        entries.append((seq * 1000, command, events, correlation, engine.state_hash))
    writer.write(wal.encode(1, 1, engine.state_hash, entries), 1)
    writer.sync()
    writer.close()
    exporter = InMemorySpanExporter()
    outbox = Outbox(
        spec, tmp_path, kafka_bootstrap, kafka_topic,
        durable_seq=lambda: len(commands), durable_changed=asyncio.Event(),
        tracing=MatcherTracing(tracing.provider(OtelSettings(), exporter), spec.symbol),
        retry_backoff=0.1, transaction_timeout=5.0,
    )  # fmt: skip
    task = asyncio.create_task(outbox.run())
    try:
        await until(lambda: outbox.published_seq == len(commands), within=30)
    finally:
        await outbox.stop()
        await task
    (publish,) = exporter.get_finished_spans()
    assert publish.name == "matcher.outbox_publish" and publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None and format(publish.parent.span_id, "016x") == GATEWAY_SPAN
    assert publish.attributes is not None and publish.attributes["matcher.seq"] == 2

    consumer = AIOKafkaConsumer(
        kafka_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
        isolation_level="read_committed", enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    headers: list[dict[str, bytes]] = []
    try:
        deadline = time.monotonic() + 30
        while len(headers) < sum(len(entry[2]) for entry in entries):
            assert time.monotonic() < deadline, f"only {len(headers)} records"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                headers.extend(dict(record.headers) for record in records)
    finally:
        await consumer.stop()
    carried = {h.get(tracing.TRACEPARENT_HEADER) for h in headers}
    assert carried == {None, tracing.traceparent(publish.context).encode()}
    traced = [h for h in headers if tracing.TRACEPARENT_HEADER in h]
    assert len(traced) == len(entries[1][2])  # every event of the sampled command, no other
