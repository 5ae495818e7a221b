"""The matcher as a real process on a real disk with real Kafka: kill -9 and restart,
and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer

from contracts.v1 import common_pb2 as c
from contracts.v1 import events_pb2, funding_pb2, matcher_pb2, matcher_pb2_grpc
from e2e.env.matcher import MatcherProcess
from workloads.matcher import codec, recovery
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.integration


def fund(account: str, asset: str) -> matcher_pb2.Command:
    return matcher_pb2.Command(
        funding=funding_pb2.FundingCommand(
            funding_id=f"fund-{account}-{asset}",
            account=account,
            asset=asset,
            amount=10**12,
            direction=funding_pb2.FUNDING_DIRECTION_CREDIT,
        )
    )


def order(i: int) -> matcher_pb2.Command:
    buy = i % 2 == 0
    return matcher_pb2.Command(
        place_order=matcher_pb2.PlaceOrderRequest(
            symbol="BTC-USDT",
            account="alice" if buy else "bob",
            client_order_id=f"o-{i}",
            side=c.SIDE_BUY if buy else c.SIDE_SELL,
            order_type=c.ORDER_TYPE_LIMIT,
            time_in_force=c.TIME_IN_FORCE_GTC,
            price=1000 + (i % 11) - 5,
            quantity=1 + i % 4,
        )
    )


async def read_events(bootstrap: str, topic: str, until_seq: int) -> list[events_pb2.Event]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    events: list[events_pb2.Event] = []
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                events.extend(events_pb2.Event.FromString(r.value) for r in records if r.value)
            if events and envelope(events[-1]).seq >= until_seq:
                break
    finally:
        await consumer.stop()
    return events


def envelope(event: events_pb2.Event) -> Any:
    body = event.WhichOneof("body")
    assert body is not None
    return getattr(event, body).envelope


async def test_kill_9_mid_stream_loses_no_acknowledged_order_and_duplicates_nothing(
    run_dir: Path, kafka_bootstrap: str, kafka_topic: str
) -> None:
    matcher = MatcherProcess(
        run_dir / "crash", kafka_bootstrap=kafka_bootstrap, events_topic=kafka_topic
    )
    matcher.start()
    try:
        channel = grpc.aio.insecure_channel(matcher.target)
        stub = matcher_pb2_grpc.MatcherStub(channel)
        funded = await stub.SubmitBatch(
            matcher_pb2.CommandBatch(commands=[fund("alice", "USDT"), fund("bob", "BTC")])
        )
        assert all(r.status == matcher_pb2.COMMAND_STATUS_ACCEPTED for r in funded.replies)

        acknowledged: dict[str, int] = {}  # client order id -> seq
        sent = 0
        killed = False
        enough = asyncio.Event()

        async def stream(worker: int) -> None:
            nonlocal sent
            while not killed:
                batch = [order(sent + k) for k in range(20)]
                sent += 20
                try:
                    reply = await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=batch))
                except grpc.aio.AioRpcError:
                    return  # the process died under us: this batch is unacknowledged
                for cmd, r in zip(batch, reply.replies, strict=True):
                    assert r.status == matcher_pb2.COMMAND_STATUS_ACCEPTED
                    acknowledged[cmd.place_order.client_order_id] = r.seq
                if len(acknowledged) >= 3_000:
                    enough.set()

        workers = [asyncio.create_task(stream(w)) for w in range(4)]
        await asyncio.wait_for(enough.wait(), 60)
        matcher.kill()  # kill -9, while the workers keep sending
        killed = True
        await asyncio.gather(*workers)
        await channel.close()
        assert acknowledged

        matcher.start()
        channel = grpc.aio.insecure_channel(matcher.target)
        stub = matcher_pb2_grpc.MatcherStub(channel)
        status = await stub.GetStatus(matcher_pb2.GetStatusRequest(symbol="BTC-USDT"))
        assert status.epoch == 2
        assert status.seq > max(acknowledged.values())  # + EpochStarted of the new epoch

        # Every acknowledged order is there, exactly once: resending it is a duplicate of
        # the original seq. Orders in flight at the kill either were durable (duplicate)
        # or are executed now; either way once.
        by_id: dict[str, matcher_pb2.CommandReply] = {}
        for start in range(0, sent, 2_000):
            chunk = [order(i) for i in range(start, min(start + 2_000, sent))]
            resent = await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=chunk))
            for cmd, r in zip(chunk, resent.replies, strict=True):
                by_id[cmd.place_order.client_order_id] = r
        for client_id, seq in acknowledged.items():
            assert by_id[client_id].status == matcher_pb2.COMMAND_STATUS_DUPLICATE, client_id
            assert by_id[client_id].seq == seq
        final = await stub.GetStatus(matcher_pb2.GetStatusRequest(symbol="BTC-USDT"))
        await channel.close()

        events = await read_events(kafka_bootstrap, kafka_topic, final.seq)
        ids = [envelope(ev).event_id for ev in events]
        assert len(ids) == len(set(ids)), "an event was published twice"
        seqs = sorted({envelope(ev).seq for ev in events})
        assert seqs == list(range(1, final.seq + 1)), "a gap in the published seqs"
        epochs = [envelope(ev).epoch for ev in events]
        assert epochs == sorted(epochs)
        started = [ev.epoch_started for ev in events if ev.WhichOneof("body") == "epoch_started"]
        assert [s.envelope.epoch for s in started] == [1, 2]
        assert started[1].previous_epoch == 1
    finally:
        matcher.stop()

    # The hash is continuous: an independent replay of the data directory reaches the
    # hash the restarted process reported.
    replayed = recovery.recover(MarketSpec("BTC-USDT", "BTC", "USDT"), matcher.data_dir)
    assert replayed.engine.seq == final.seq
    assert codec.hash_bytes(replayed.engine.state_hash) == final.state_hash


async def test_sigterm_stops_accepting_flushes_snapshots_and_exits_zero(run_dir: Path) -> None:
    matcher = MatcherProcess(run_dir / "graceful")
    matcher.start()
    channel = grpc.aio.insecure_channel(matcher.target)
    stub = matcher_pb2_grpc.MatcherStub(channel)
    reply = await stub.SubmitBatch(
        matcher_pb2.CommandBatch(commands=[fund("alice", "USDT"), order(0)])
    )
    assert [r.status for r in reply.replies] == [1, 1]
    status = await stub.GetStatus(matcher_pb2.GetStatusRequest(symbol="BTC-USDT"))
    await channel.close()
    assert matcher.process is not None and matcher.process.popen is not None
    matcher.process.popen.terminate()
    assert matcher.process.popen.wait(30) == 0
    snapshots = sorted((matcher.data_dir / "snapshots").glob("*.snap"))
    assert snapshots and int(snapshots[-1].stem) == status.seq
    with contextlib.suppress(Exception):
        matcher.stop()
