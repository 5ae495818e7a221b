"""History benchmarks (`make bench BENCH=history`), each on a real Kafka and ClickHouse.

history.ingest: trades/s from the topic into ClickHouse: 200,000 trade events published
first, then the writer process started; from the first trade queryable until the last one
(the process start and its consumer group's join are reported apart). Target >= 50,000.

history.lag: seconds from a trade's event (its `occurred_at`, stamped when published) to
its visibility in a history query, at 1,000 trades/s for 20 s; p50, p99. Target p99 <= 2.

history.candles: ms of a 1,000-candle 1h query over 60 days of one market (86,400 one-minute
candles; 10M trades in the trades table, made by ClickHouse itself), 50 queries; p50, p99.
Target p99 <= 100.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts.v1 import common_pb2, events_pb2
from e2e.bench import percentile, simulate
from e2e.env import kafka
from e2e.env.clickhouse import ClickHouseServer
from e2e.env.history import HistoryProcess
from e2e.env.process import free_port
from workloads.history import queries
from workloads.history.store import HistoryStore
from workloads.matcher.spec import MarketSpec

BENCHMARKS: dict[str, Callable[[], dict[str, object]]] = {}
SPEC = MarketSpec("BTC-USDT", "BTC", "USDT")
DAY = 86_400


class Parts:
    """A Kafka broker, a ClickHouse, a topic: what each benchmark runs on."""

    def __init__(self, tmp: Path) -> None:
        self.broker = kafka.KafkaBroker(tmp, free_port(), free_port())
        self.clickhouse = ClickHouseServer(tmp)
        self.topic = "core.events.v1"

    def __enter__(self) -> Parts:
        self.broker.start()
        self.clickhouse.start()
        asyncio.run(self._topic())
        return self

    async def _topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self.topic, 3, 1)])
        finally:
            await admin.close()

    def __exit__(self, *_: object) -> None:
        self.clickhouse.stop()
        self.broker.stop()


async def _count(store: HistoryStore) -> int:
    try:
        return int((await store.execute("SELECT count() FROM trades FINAL"))[0][0])
    except Exception:
        return 0


# ---------------------------------------------------------------------- history.ingest


def ingest_benchmark(count: int = 200_000) -> dict[str, object]:
    events = simulate.trade_heavy(SPEC, makers=50, takers=2000, trades=count)
    trades = sum(1 for ev in events if ev.WhichOneof("body") == "trade_executed")
    with (
        tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR")) as tmp,
        Parts(Path(tmp)) as parts,
    ):
        asyncio.run(simulate.publish(parts.broker.bootstrap, parts.topic, events, per_txn=5_000))
        writer = HistoryProcess(Path(tmp), parts.clickhouse.url, parts.broker.bootstrap,
                                parts.topic)  # fmt: skip
        begin = time.monotonic()
        writer.start()
        try:
            first_at, first_count, end = asyncio.run(_ingest(parts.clickhouse.url, trades))
        finally:
            writer.stop()
    seconds = end - first_at
    return {"trades": trades, "seconds": round(seconds, 2),
            "trades_per_s": round((trades - first_count) / seconds),
            "start_seconds": round(first_at - begin, 2), "target_per_s": 50_000}  # fmt: skip


async def _ingest(url: str, trades: int) -> tuple[float, int, float]:
    """(when the first trades were queryable, how many, when all were)."""
    store = HistoryStore(url)
    await store.open()
    try:
        first: tuple[float, int] | None = None
        while (count := await _count(store)) < trades:
            if count and first is None:
                first = (time.monotonic(), count)
            await asyncio.sleep(0.05)
        end = time.monotonic()
        return (*(first or (end, 0)), end)
    finally:
        await store.close()


BENCHMARKS["history.ingest"] = ingest_benchmark


# ---------------------------------------------------------------------- history.lag


def lag_benchmark(rate: int = 1_000, seconds: int = 20) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR")) as tmp,
        Parts(Path(tmp)) as parts,
    ):
        writer = HistoryProcess(Path(tmp), parts.clickhouse.url, parts.broker.bootstrap,
                                parts.topic)  # fmt: skip
        writer.start()
        try:
            lags = asyncio.run(_lag_run(parts, rate, seconds))
        finally:
            writer.stop()
    return {"trades_per_s": rate, "trades": len(lags),
            "p50_seconds": round(percentile(lags, 0.5), 3),
            "p99_seconds": round(percentile(lags, 0.99), 3), "target_p99_seconds": 2}  # fmt: skip


def _trade(seq: int, now_ns: int) -> events_pb2.Event:
    envelope = common_pb2.EventEnvelope(
        event_id=f"BTC-USDT:{seq}:0", event_version=1, symbol="BTC-USDT", seq=seq,
        occurred_at=now_ns, epoch=1,
    )  # fmt: skip
    return events_pb2.Event(
        trade_executed=events_pb2.TradeExecuted(
            envelope=envelope, trade_id=f"BTC-USDT:{seq}", price=60_000_00, quantity=10_000,
            taker_side=common_pb2.SIDE_BUY, quote_amount=60_000_00,
        )
    )  # fmt: skip


async def _lag_run(parts: Parts, rate: int, seconds: int) -> list[float]:
    producer = AIOKafkaProducer(bootstrap_servers=parts.broker.bootstrap, linger_ms=5)
    store = HistoryStore(parts.clickhouse.url)
    await producer.start()
    await store.open()
    sent: dict[int, float] = {}
    visible: dict[int, float] = {}
    done = asyncio.Event()

    async def publish() -> None:
        start = time.monotonic()
        for seq in range(1, rate * seconds + 1):
            due = start + seq / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sent[seq] = time.time()
            await producer.send(parts.topic, _trade(seq, time.time_ns()).SerializeToString(),
                                key=b"BTC-USDT")  # fmt: skip
        done.set()

    async def watch() -> None:
        seen = 0
        while not done.is_set() or seen < len(sent):
            try:
                rows = await store.execute("SELECT max(seq) FROM trades FINAL")
                newest = int(rows[0][0] or 0)
            except Exception:
                newest = 0
            now = time.time()
            for seq in range(seen + 1, newest + 1):
                visible[seq] = now
            seen = max(seen, newest)
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(publish(), watch())
    finally:
        await producer.stop()
        await store.close()
    return [visible[s] - sent[s] for s in sent if s in visible]


BENCHMARKS["history.lag"] = lag_benchmark


# ---------------------------------------------------------------------- history.candles


def candles_benchmark(queries_run: int = 50) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR")) as tmp:
        server = ClickHouseServer(Path(tmp))
        server.start()
        try:
            return asyncio.run(_candles_run(server.url, queries_run))
        finally:
            server.stop()


async def _candles_run(url: str, runs: int) -> dict[str, object]:
    store = HistoryStore(url)
    await store.open()
    try:
        await store.migrate()
        start = 1_791_417_600  # 2026-10-08 00:00 UTC: 60 days before 2026-12-07
        # 10M trades over the 60 days, and the 86,400 one-minute candles, made by ClickHouse.
        await store.execute(
            f"""INSERT INTO trades SELECT 'BTC-USDT', toDateTime({start} + intDiv(number, 116)),
                   ({start} + intDiv(number, 116)) * 1000000000, number + 1, 0,
                   concat('BTC-USDT:', toString(number + 1)), 6000000 + number % 1000, 10000,
                   6000000 + number % 1000, 1, 1
                FROM system.numbers LIMIT 10000000"""
        )
        await store.execute(
            f"""INSERT INTO candles_1m SELECT 'BTC-USDT', toDateTime({start} + number * 60),
                   6000000 + number % 500, 6001000, 5999000, 6000000 + number % 700, 1160000,
                   1160000, 116, 1
                FROM system.numbers LIMIT 86400"""
        )
        timings = []
        end = start + 60 * DAY
        for _ in range(runs):
            begin = time.perf_counter()
            rows = await queries.candles(store, "BTC-USDT", "1h", start, end, 1000)
            timings.append((time.perf_counter() - begin) * 1000)
            assert len(rows) == 1000
    finally:
        await store.close()
    return {"candles": 1000, "one_minute_candles": 86_400, "trades": 10_000_000,
            "p50_ms": round(percentile(timings, 0.5), 1),
            "p99_ms": round(percentile(timings, 0.99), 1), "target_p99_ms": 100}  # fmt: skip


BENCHMARKS["history.candles"] = candles_benchmark
