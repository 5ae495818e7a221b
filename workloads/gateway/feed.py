"""The core events topic, read by every replica in full (no consumer group).

Every replica serves every market's data and every account's private updates, so each
reads all partitions itself, `read_committed` (the matcher's outbox is transactional).
From `earliest` it rebuilds order history, candles and the book; balances start from each
market's matcher snapshot at a committed seq (the topic may have lost its early records to
retention), and the events above it. The replica reports ready once it has caught up with
the end offsets it saw at start and holds every market's balance snapshot (or has waited
`BALANCES_GRACE_S` for a matcher that does not answer: that market's balances are then the
topic's alone until it does). A book that met an order older than the topic is resynced
from a matcher snapshot.
With spans exported, each fetched batch that holds events of sampled orders (a
`traceparent` header, set by the matcher's outbox) adds a `gateway.feed` span to each of
their traces: when the order's events reached this replica's projection and sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import Counter, Gauge

from contracts.v1 import events_pb2, matcher_pb2
from workloads.common.tracing import TRACEPARENT_HEADER, parent_of, span_after
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
LAG = Gauge(
    "gateway_feed_lag_records",
    "Records of the events topic this replica has not applied yet (its consumer lag)",
)
SNAPSHOT_SEQ = Gauge(
    "gateway_balances_snapshot_seq",
    "Seq of the matcher's balance snapshot this replica started the market's balances from"
    " (0: none yet)",
    ["symbol"],
)
BALANCES_GRACE_S = 10.0  # how long readiness waits for a matcher's balance snapshot
LAG_EVERY_S = 1.0  # the lag is measured at most this often: a few dict lookups per partition
_YIELD_EVERY = 64  # records applied between yields to the event loop


class Feed:
    def __init__(
        self,
        settings: KafkaSettings,
        projection: Projection,
        core: Core,
        client_id: str,
        tracer: Tracer | None = None,
    ) -> None:
        """`tracer`: where `gateway.feed` spans go (None: spans are not exported)."""
        self.settings = settings
        self.tracer = tracer
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
        self._snapshot_due: dict[str, tuple[float, float]] = {  # symbol -> (when, back-off)
            symbol: (0.0, 1.0) for symbol in core.markets
        }
        self._snapshots: dict[str, matcher_pb2.BalancesSnapshot] = {}  # arrived, not installed
        self._fetching: asyncio.Task[None] | None = None
        self._connected_at = 0.0
        self._lag_measured = float("-inf")
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
        self._connected_at = time.monotonic()
        try:
            while True:
                self._install_balance_snapshots()
                batch = await self.consumer.getmany(timeout_ms=200, max_records=500)
                received = time.time()
                started_ns = time.time_ns() if self.tracer is not None else 0
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
                    if self.tracer is not None:
                        self._trace(batch, started_ns, applied)
                await self._measure_lag()
                if not self.ready.is_set() and await self._caught_up() and self._balances_settled():
                    log.info("events topic caught up", extra={"positions": len(self._positions)})
                    self.ready.set()
                await self._resync_books()
        finally:
            if self._fetching is not None:
                self._fetching.cancel()
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

    def _trace(self, batch: dict[TopicPartition, list[Any]], started_ns: int, count: int) -> None:
        """A `gateway.feed` span in the trace of each sampled order the batch holds."""
        assert self.tracer is not None
        parents = {
            value: None
            for records in batch.values()
            for record in records
            if len(record.headers) > 1
            for key, value in record.headers
            if key == TRACEPARENT_HEADER
        }
        if not parents:
            return
        ended = time.time_ns()
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": self.settings.topic,
            "messaging.batch.message_count": count,
            "gateway.feed.client_id": self.client_id,
        }
        for parent in parents:
            context = parent_of(parent)
            if context is None:
                continue
            span_after(
                self.tracer,
                "gateway.feed",
                context,
                started_ns,
                ended,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
            )

    async def _caught_up(self) -> bool:
        """Positions, not record offsets: transaction markers take offsets too."""
        assert self.consumer is not None
        for tp, end in self._targets.items():
            if self._positions.get(tp, 0) < end:
                self._positions[tp] = await self.consumer.position(tp)
        return all(self._positions.get(tp, 0) >= end for tp, end in self._targets.items())

    def _install_balance_snapshots(self) -> None:
        """Start each market's balances from its matcher's committed snapshot.

        The snapshots are fetched beside the feed (`_fetch_snapshots`: a matcher that is
        down or switching must not stall the events of every market) and installed here,
        between two batches, when no event above the snapshot's seq has been applied yet;
        otherwise the snapshot is fetched again. The matcher answers at a seq it has
        committed, which is at least any seq it has published, so that is the usual case."""
        for symbol, snapshot in self._snapshots.items():
            if snapshot.seq < self.projection.data[symbol].seq:
                continue  # the feed got ahead of it: fetch another
            self.projection.balances.install(snapshot)
            SNAPSHOT_SEQ.labels(symbol).set(snapshot.seq)
            del self._snapshot_due[symbol]
            log.info(
                "balances from the matcher's snapshot",
                extra={"symbol": symbol, "seq": snapshot.seq, "accounts": len(snapshot.accounts)},
            )
        self._snapshots.clear()
        if self._snapshot_due and (self._fetching is None or self._fetching.done()):
            self._fetching = asyncio.create_task(self._fetch_snapshots(), name="balance-snapshots")

    async def _fetch_snapshots(self) -> None:
        """Fetch the snapshots that are due (each market retried with back-off)."""
        now = time.monotonic()
        for symbol, (due, backoff) in list(self._snapshot_due.items()):
            if now < due:
                continue
            self._snapshot_due[symbol] = (now + backoff, min(backoff * 2, 30.0))
            try:
                self._snapshots[symbol] = await self.core.of(symbol).balances()
            except ApiError as exc:
                log.warning(
                    "balance snapshot failed",
                    extra={"symbol": symbol, "why": exc.message, "retry_s": backoff},
                )

    def _balances_settled(self) -> bool:
        if not self._snapshot_due:
            return True
        if time.monotonic() - self._connected_at < BALANCES_GRACE_S:
            return False
        log.warning(
            "ready without a balance snapshot: those markets' balances are the topic's alone",
            extra={"symbols": sorted(self._snapshot_due)},
        )
        return True

    async def _measure_lag(self) -> None:
        """Set `gateway_feed_lag_records`: the last stable offsets the fetches reported minus
        the positions (positions, like `_caught_up`: transaction markers take offsets)."""
        now = time.monotonic()
        if self.consumer is None or now - self._lag_measured < LAG_EVERY_S:
            return
        self._lag_measured = now
        lag = 0
        for tp in self.consumer.assignment():
            end = self.consumer.last_stable_offset(tp)
            if end is not None:
                lag += max(end - await self.consumer.position(tp), 0)
        LAG.set(lag)

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
