"""The history writer: the core events topic into ClickHouse, at least once, idempotently.

A batch (up to `HISTORY_BATCH_MAX_EVENTS`, or what `HISTORY_BATCH_LINGER_MS` gathers) is
read with `read_committed`, its trades inserted, the one-minute candles of the minutes it
touched recomputed from the stored trades, and only then are its offsets committed; the
next batch is read and parsed while one is written (one in flight, commits in order). A
crash anywhere redelivers what was not committed; the tables collapse what they get twice
(`store.py`).

While ClickHouse does not answer, the same batch is retried with backoff and nothing new
is read: the writer pauses, its lag grows, `/readyz` says why, and nothing is lost or
skipped. Events of a deposed leader (an epoch below the newest the market has shown) are
dropped and counted; a record that is not an `Event` is counted and skipped with its
partition and offset in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Gauge

from contracts.v1 import events_pb2
from workloads.history.settings import HistorySettings
from workloads.history.store import HistoryStore, as_time

log = logging.getLogger(__name__)

TRADES = Counter("history_trades_written_total", "Trades written to ClickHouse (redeliveries too)")
STALE = Counter("history_stale_epoch_dropped_total", "Events of a deposed leader's epoch dropped")
MALFORMED = Counter("history_malformed_events_total", "Records that are not an Event, skipped")
FAILURES = Counter("history_clickhouse_failures_total", "Batches ClickHouse refused (retried)")
LAG_RECORDS = Gauge("history_lag_records", "Records of the topic not yet written")
BEHIND_SECONDS = Gauge(
    "history_behind_seconds", "Age of the newest written event while records wait (0: caught up)"
)


WANTED = (b"trade_executed", b"epoch_started")
"""The events the history needs (trades; epoch starts for fencing), by the outbox's `type`
header; a record without the header is parsed whatever it is."""


@dataclass
class Batch:
    """What one poll brought: rows to write and where each partition continues."""

    trades: list[tuple[object, ...]] = field(default_factory=list)
    minutes: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    newest_ns: int = 0


class HistoryWriter:
    def __init__(self, settings: HistorySettings, store: HistoryStore) -> None:
        self.settings = settings
        self.store = store
        self.epochs: dict[str, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.problem = "starting"
        self.written_ns = 0
        self.lag = 0

    def ready(self) -> tuple[bool, str]:
        if self.problem:
            return False, self.problem
        return True, f"lag {self.lag} records"

    async def run(self, stop: asyncio.Event) -> None:
        self.epochs = await self.store.epochs()
        s = self.settings
        self.consumer = consumer = AIOKafkaConsumer(
            s.topic,
            bootstrap_servers=s.brokers,
            group_id=s.group,
            client_id="exchange-history",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_records=s.batch_max_events,
            fetch_max_bytes=64 << 20,  # a backlog comes in few large fetches (the ledger's too)
            max_partition_fetch_bytes=16 << 20,
        )
        await consumer.start()
        writing: tuple[asyncio.Task[None], dict[TopicPartition, int]] | None = None
        try:
            self.problem = ""
            while not stop.is_set():
                polled = await consumer.getmany(
                    timeout_ms=int(s.batch_linger * 1000) or 1, max_records=s.batch_max_events
                )
                batch = self.batch([r for records in polled.values() for r in records])
                # One batch is written while the next is read; commits stay in order.
                if writing is not None:
                    await writing[0]
                    await consumer.commit(writing[1])
                    writing = None
                if batch.offsets:
                    writing = (asyncio.create_task(self.write(batch, stop)), batch.offsets)
                await self.measure()
            if writing is not None:
                await writing[0]
                await consumer.commit(writing[1])
        finally:
            if writing is not None and not writing[0].done():
                writing[0].cancel()
            await consumer.stop()

    def batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> Batch:
        batch = Batch()
        second, when = -1, as_time(0)  # consecutive trades mostly share their second
        for record in records:
            batch.offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            kind = next((v for k, v in record.headers if k == "type"), None)
            if kind is not None and kind not in WANTED:
                continue  # named by the outbox's header: no need to parse it
            try:
                event = events_pb2.Event.FromString(record.value or b"")
                body = event.WhichOneof("body")
                if body is None:
                    raise DecodeError("no body")
            except DecodeError as exc:
                MALFORMED.inc()
                where = {"partition": record.partition, "offset": record.offset}
                log.warning("malformed event skipped", extra={**where, "why": str(exc)})
                continue
            envelope = getattr(event, body).envelope
            symbol = envelope.symbol
            if envelope.epoch < self.epochs.get(symbol, 0):
                STALE.inc()
                continue
            self.epochs[symbol] = envelope.epoch
            if body != "trade_executed":
                continue
            trade = event.trade_executed
            if envelope.occurred_at // 1_000_000_000 != second:
                second, when = envelope.occurred_at // 1_000_000_000, as_time(envelope.occurred_at)
            index = int(envelope.event_id.rsplit(":", 1)[-1] or 0)
            batch.trades.append((
                symbol, when, envelope.occurred_at, envelope.seq, index, trade.trade_id,
                trade.price, trade.quantity, trade.quote_amount, trade.taker_side, envelope.epoch,
            ))  # fmt: skip
            first, last = batch.minutes.get(symbol, (when, when))
            batch.minutes[symbol] = (min(first, when), max(last, when))
            batch.newest_ns = max(batch.newest_ns, envelope.occurred_at)
        return batch

    async def write(self, batch: Batch, stop: asyncio.Event) -> None:
        """Insert the batch and recompute its candles, retrying (with backoff, nothing new
        read meanwhile) until ClickHouse takes it or the process stops."""
        pause = 0.2
        while True:
            try:
                await self.store.insert_trades(batch.trades)
                await self.store.recompute_candles(batch.minutes)
            except Exception as exc:
                FAILURES.inc()
                self.problem = f"ClickHouse does not take the batch: {type(exc).__name__}: {exc}"
                log.warning("batch not written; retrying", extra={"why": self.problem[:300]})
                if stop.is_set():
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            self.problem = ""
            TRADES.inc(len(batch.trades))
            self.written_ns = max(self.written_ns, batch.newest_ns)
            return

    async def measure(self) -> None:
        """Records between the committed position and the partitions' stable end."""
        consumer = self.consumer
        if consumer is None:
            return
        lag = 0
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp) or consumer.highwater(tp)
            if end is not None:
                lag += max(end - await consumer.position(tp), 0)
        self.lag = lag
        LAG_RECORDS.set(lag)
        behind = time.time() - self.written_ns / 1e9 if lag and self.written_ns else 0.0
        BEHIND_SECONDS.set(round(max(behind, 0.0), 3))
