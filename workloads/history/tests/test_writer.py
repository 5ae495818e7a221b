"""The history writer as a real process, between a real Kafka and a real ClickHouse: every
trade once and candles that agree with the gateway's live ones, also after a redelivery;
kill -9 mid-batch; a ClickHouse outage; a deposed leader's events and a malformed record."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from contracts.v1 import events_pb2
from e2e.bench import simulate
from e2e.env.clickhouse import ClickHouseServer
from e2e.env.history import HistoryProcess
from e2e.env.pytest_plugin import unique_name
from workloads.gateway.candles import CandleSeries
from workloads.gateway.markets import Market
from workloads.history.store import HistoryStore
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.integration

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT")
MARKET = Market("BTC-USDT", "BTC", "USDT")
ACCOUNTS = [f"acct-{i}" for i in range(6)]


def trading(minutes: int, per_minute: int, seed: int = 5, epoch: int = 1) -> list[events_pb2.Event]:
    """An epoch start, funding, then `minutes` minutes of the trading mix."""
    sim = simulate.Simulator(SPEC)
    rng = random.Random(seed)
    events = sim.start_epoch(epoch) + sim.run(simulate.funding(ACCOUNTS, SPEC, 10**12))
    for _ in range(minutes):
        sim.ts += 61 * 10**9
        events += sim.run(list(simulate.random_commands(rng, ACCOUNTS, per_minute)))
    return events


def trades_of(events: list[events_pb2.Event]) -> list[events_pb2.Event]:
    return [ev for ev in events if ev.WhichOneof("body") == "trade_executed"]


def live_candles(events: list[events_pb2.Event]) -> list[tuple[Any, ...]]:
    """The gateway's one-minute candles for the same trades."""
    series = CandleSeries(MARKET)
    for ev in trades_of(events):
        env, t = ev.trade_executed.envelope, ev.trade_executed
        index = int(env.event_id.rsplit(":", 1)[-1])
        series.add((env.seq, index), env.occurred_at // 1_000_000, t.price, t.quantity,
                   t.quote_amount)  # fmt: skip
    return [(c.start // 1000, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades)
            for c in series.candles.values()]  # fmt: skip


@pytest.fixture
async def store(clickhouse_server: ClickHouseServer) -> AsyncIterator[HistoryStore]:
    url = clickhouse_server.create_database(unique_name("history").replace("-", "_"))
    opened = HistoryStore(url)
    await opened.open()
    yield opened
    await opened.close()


async def stored_trades(store: HistoryStore) -> int:
    try:
        return int((await store.execute("SELECT count() FROM trades FINAL"))[0][0])
    except Exception:
        return 0


async def until_trades(store: HistoryStore, count: int, within: float = 60) -> None:
    for _ in range(int(within * 10)):
        if await stored_trades(store) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{await stored_trades(store)} trades stored, {count} expected")


async def stored_candles(store: HistoryStore) -> list[tuple[Any, ...]]:
    rows = await store.execute(
        "SELECT toUInt32(open_time), open, high, low, close, volume, quote_volume, trades "
        "FROM candles_1m FINAL WHERE symbol = 'BTC-USDT' ORDER BY open_time"
    )
    return [tuple(int(v) for v in row) for row in rows]


def writer(
    run_dir: Path, store: HistoryStore, kafka: str, topic: str, **env: str
) -> HistoryProcess:
    return HistoryProcess(run_dir / unique_name("history"), store.url, kafka, topic, extra_env=env)


async def test_every_trade_once_and_candles_as_the_gateway_makes_them_also_after_a_redelivery(
    run_dir: Path, store: HistoryStore, kafka_bootstrap: str, kafka_topic: str
) -> None:
    events = trading(minutes=6, per_minute=300)
    trades = trades_of(events)
    assert len(trades) > 300
    await simulate.publish(kafka_bootstrap, kafka_topic, events)
    first = writer(run_dir, store, kafka_bootstrap, kafka_topic)
    await asyncio.to_thread(first.start)
    try:
        await until_trades(store, len(trades))
    finally:
        first.stop()
    assert await stored_candles(store) == live_candles(events)
    ids = await store.execute("SELECT trade_id FROM trades FINAL ORDER BY seq, idx")
    assert [r[0] for r in ids] == [t.trade_executed.trade_id for t in trades]

    # Everything delivered again (another consumer group reads the topic from its start).
    again = writer(run_dir, store, kafka_bootstrap, kafka_topic, HISTORY_KAFKA_GROUP_ID="again")
    await asyncio.to_thread(again.start)
    try:
        for _ in range(300):
            written = await store.execute("SELECT count() FROM trades")  # duplicates included
            if int(written[0][0]) >= 2 * len(trades):
                break
            await asyncio.sleep(0.1)
    finally:
        again.stop()
    assert await stored_trades(store) == len(trades)
    assert await stored_candles(store) == live_candles(events)


async def test_kill_9_mid_batch_leaves_every_trade_once(
    run_dir: Path, store: HistoryStore, kafka_bootstrap: str, kafka_topic: str
) -> None:
    events = trading(minutes=3, per_minute=4_000, seed=9)
    trades = trades_of(events)
    await simulate.publish(kafka_bootstrap, kafka_topic, events, per_txn=2_000)
    process = writer(run_dir, store, kafka_bootstrap, kafka_topic, HISTORY_BATCH_MAX_EVENTS="300")
    await asyncio.to_thread(process.start)
    try:
        for _ in range(600):
            if await stored_trades(store) > 0:
                break
            await asyncio.sleep(0.01)
        process.kill()  # kill -9 mid-stream: the batch in hand is not committed
        assert 0 < await stored_trades(store) < len(trades)
        await asyncio.to_thread(process.start)
        await until_trades(store, len(trades))
    finally:
        process.stop()
    assert await stored_trades(store) == len(trades)
    distinct = await store.execute("SELECT count(DISTINCT trade_id) FROM trades")
    assert int(distinct[0][0]) == len(trades)
    assert await stored_candles(store) == live_candles(events)


async def test_a_clickhouse_outage_pauses_the_writer_which_resumes_without_loss(
    run_dir: Path, kafka_bootstrap: str, kafka_topic: str
) -> None:
    server = ClickHouseServer(run_dir / unique_name("outage"))
    server.start()
    url = server.database_url("a_venue")  # not there yet: the writer creates it, as in a venue
    store = HistoryStore(url)
    process = HistoryProcess(run_dir / unique_name("history"), url, kafka_bootstrap, kafka_topic)
    try:
        events = trading(minutes=4, per_minute=300, seed=11)
        half = len(events) // 2
        await simulate.publish(kafka_bootstrap, kafka_topic, events[:half])
        await asyncio.to_thread(process.start)
        await store.open()
        await until_trades(store, len(trades_of(events[:half])))
        server.stop()  # ClickHouse is gone
        await simulate.publish(kafka_bootstrap, kafka_topic, events[half:])
        for _ in range(100):
            if not process.ready():
                break
            await asyncio.sleep(0.1)
        assert not process.ready()
        detail = await asyncio.to_thread(_readyz, process)
        assert "ClickHouse" in detail, detail
        await asyncio.sleep(2)
        server.start()  # back, on the same data
        await store.close()
        store = HistoryStore(url)
        await store.open()
        await until_trades(store, len(trades_of(events)))
        assert await stored_trades(store) == len(trades_of(events))
        assert await stored_candles(store) == live_candles(events)
    finally:
        process.stop()
        await store.close()
        server.stop()


def _readyz(process: HistoryProcess) -> str:
    try:
        with urllib.request.urlopen(f"{process.ops_url}/readyz", timeout=2) as answer:
            return str(json.loads(answer.read())["detail"])
    except urllib.error.HTTPError as refused:
        return str(json.loads(refused.read())["detail"])


async def test_a_deposed_leaders_events_and_a_malformed_record_are_dropped_and_counted(
    run_dir: Path, store: HistoryStore, kafka_bootstrap: str, kafka_topic: str
) -> None:
    current = trading(minutes=1, per_minute=200, seed=3, epoch=2)
    zombie = trades_of(trading(minutes=1, per_minute=200, seed=4, epoch=1))  # an old epoch
    await simulate.publish(kafka_bootstrap, kafka_topic, current + zombie)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await producer.send_and_wait(kafka_topic, b"\xff\xfenot an event", key=b"BTC-USDT")
    await producer.stop()
    tail = trades_of(trading(minutes=2, per_minute=200, seed=3, epoch=2))[-5:]
    await simulate.publish(kafka_bootstrap, kafka_topic, tail)
    process = writer(run_dir, store, kafka_bootstrap, kafka_topic)
    await asyncio.to_thread(process.start)
    try:
        await until_trades(store, len(trades_of(current)) + len(tail))
        metrics = await asyncio.to_thread(process.metrics)
    finally:
        process.stop()
    epochs = await store.execute("SELECT DISTINCT epoch FROM trades")
    assert epochs == [(2,)]
    assert f"history_stale_epoch_dropped_total {float(len(zombie))}" in metrics
    assert "history_malformed_events_total 1.0" in metrics
    assert process.process is not None
    assert "malformed event skipped" in process.process.log_path.read_text()
