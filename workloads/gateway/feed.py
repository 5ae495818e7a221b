"""The core events topic, read by every replica in full (no consumer group).

Every replica serves every market's data and every account's private updates, so each
reads all partitions itself, `read_committed` (the matcher's outbox is transactional).
From `earliest` it rebuilds balances, order history, candles and the book; the replica
reports ready once it has caught up with the end offsets it saw at start.
A book that met an order older than the topic is resynced from a matcher snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import Counter

from contracts.v1 import events_pb2
from workloads.gateway.core import Core
from workloads.gateway.errors import ApiError
from workloads.gateway.marketdata import Projection
from workloads.gateway.settings import KafkaSettings

log = logging.getLogger(__name__)
UNDECODABLE = Counter(
    "gateway_events_undecodable_total", "Records on the topic that are not Events"
)
FAILED = Counter("gateway_events_failed_total", "Events whose application raised (a bug)")
RESYNCS = Counter("gateway_book_resyncs_total", "Books replaced by a matcher snapshot", ["symbol"])
_YIELD_EVERY = 64  # records applied between yields to the event loop


class Feed:
    def __init__(
        self, settings: KafkaSettings, projection: Projection, core: Core, client_id: str
    ) -> None:
        self.settings = settings
        self.projection = projection
        self.core = core
        self.client_id = client_id
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()
        self.on_resync: list[Callable[[str], None]] = []
        self._targets: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Event()
        self._resync_tried: dict[str, float] = {}
        if not settings.brokers:
            self.ready.set()
        if settings.start == "latest":
            for data in projection.data.values():
                data.book.needs_resync = data.market.live

    async def run(self) -> None:
        """Connect (retrying), then apply records until cancelled."""
        if not self.settings.brokers:
            return
        delay = 0.2
        while True:
            try:
                await self._connect()
                break
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("events topic unavailable", extra={"why": repr(exc), "retry_s": delay})
                await self._stop_consumer()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        assert self.consumer is not None
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=200, max_records=500)
                received = time.time()
                applied = 0
                for tp, records in batch.items():
                    for record in records:
                        self._apply(record.value, received)
                        self._positions[tp] = record.offset + 1
                        applied += 1
                        if applied % _YIELD_EVERY == 0:
                            await asyncio.sleep(0)  # a burst must not stall the order path
                if batch:
                    self._advance()
                if not self.ready.is_set() and await self._caught_up():
                    log.info("events topic caught up", extra={"positions": len(self._positions)})
                    self.ready.set()
                await self._resync_books()
        finally:
            await self._stop_consumer()

    async def _connect(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            s.topic,
            bootstrap_servers=s.brokers,
            client_id=self.client_id,
            group_id=None,  # no group: this consumer is assigned every partition
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset=s.start,
            fetch_max_wait_ms=20,
        )
        self.consumer = consumer
        await consumer.start()
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {s.topic} has no partitions")
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        self._targets = dict(ends)

    async def _stop_consumer(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            self.consumer = None

    def _apply(self, value: bytes | None, received: float) -> None:
        if not value:
            return
        try:
            event = events_pb2.Event.FromString(value)
        except Exception:  # a foreign record must not stop the feed
            UNDECODABLE.inc()
            return
        try:
            self.projection.apply_feed(event, received)
        except Exception:  # one bad event must not stop every market's data
            FAILED.inc()
            log.exception("event not applied", extra={"event": str(event)[:500]})

    async def _caught_up(self) -> bool:
        """Positions, not record offsets: transaction markers take offsets too."""
        assert self.consumer is not None
        for tp, end in self._targets.items():
            if self._positions.get(tp, 0) < end:
                self._positions[tp] = await self.consumer.position(tp)
        return all(self._positions.get(tp, 0) >= end for tp, end in self._targets.items())

    def _advance(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def wait_seq(self, symbol: str, seq: int, wait: float) -> bool:
        """Wait (bounded) until this replica has applied `seq` of `symbol`."""
        data = self.projection.data.get(symbol)
        if data is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while data.seq < seq:
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)
        return True

    async def _resync_books(self) -> None:
        now = time.monotonic()
        for symbol, data in self.projection.data.items():
            if not data.book.needs_resync or symbol not in self.core.markets:
                continue
            if now - self._resync_tried.get(symbol, -10.0) < 1.0:
                continue  # at most one snapshot request per market and second
            self._resync_tried[symbol] = now
            try:
                snapshot = await self.core.of(symbol).book(depth=1000)
            except ApiError as exc:
                log.warning("book resync failed", extra={"symbol": symbol, "why": exc.message})
                continue
            data.book.load(snapshot)
            RESYNCS.labels(symbol).inc()
            sink = self.projection.sink
            if sink is not None:
                sink.book_changed(symbol)
            for callback in self.on_resync:
                callback(symbol)
