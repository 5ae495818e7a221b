"""The settlement consumer: the core events topic into the applier, offsets after the DB.

- `read_committed`: only events of committed matcher outbox transactions are seen.
- Offsets are committed manually, and only after the batch's database transaction has
  committed. A crash in between redelivers the batch; the applier's dedup (cursor, unique
  event and trade ids) makes that harmless. So: at-least-once delivery, exactly-once effect.
- Two stages: fetching and decoding run while the previous batch is in the database, so
  Python's work overlaps PostgreSQL's.
- Pause stops applying at a batch boundary (the partitions are paused too, so the
  consumer stays in its group); resume continues where it stopped.
- A record that is not a decodable Event is counted and skipped: it cannot be an event, and
  if a real event were lost that way the next one would open a seq gap, which stalls the
  market and raises a mismatch (money is never skipped silently).
- Traces: with tracing on, the `traceparent` headers the matcher's outbox put on the events
  of sampled orders travel with the batch, and the applier's span joins those traces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import Counter

from workloads.common.tracing import TRACEPARENT_HEADER
from workloads.ledger import metrics, rules
from workloads.ledger.applier import Applier, ApplierStopped
from workloads.ledger.plan import Outcome
from workloads.ledger.rules import Incoming
from workloads.ledger.settings import KafkaSettings

log = logging.getLogger(__name__)

UNDECODABLE = Counter("ledger_undecodable_records_total", "Records that are not a valid Event")
IN_FLIGHT = 2
"""Batches submitted and not yet committed: one in the database, one being planned."""


@dataclass
class _Batch:
    items: list[Incoming]
    offsets: dict[TopicPartition, int]  # next offset to consume, per partition
    records: int
    parents: list[bytes] = field(default_factory=list)  # traceparent headers (sampled orders)


@dataclass
class SettlementConsumer:
    settings: KafkaSettings
    applier: Applier
    fee_account: str
    traced: bool = False
    """Read the records' traceparent headers (only when spans are exported)."""
    paused: bool = field(default=False, init=False)
    state: str = field(default="stopped", init=False)
    batches: int = field(default=0, init=False)
    events: int = field(default=0, init=False)
    last_batch_at: float | None = field(default=None, init=False)
    last_error: str | None = field(default=None, init=False)
    _consumer: AIOKafkaConsumer | None = field(default=None, init=False)
    _queue: asyncio.Queue[_Batch] = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _resumed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _committed: dict[TopicPartition, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(maxsize=2)
        self._resumed.set()
        self._idle.set()

    async def start(self) -> None:
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.brokers,
            group_id=s.group_id,
            group_instance_id=s.group_instance_id or None,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=min(3_000, s.session_timeout_ms // 3),
            client_id="exchange-ledger",
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_records=s.batch_max_events,
            fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=16 << 20,
        )
        self._consumer.subscribe([s.topic], listener=_Rebalance(self))
        await self._consumer.start()
        self.state = "running"
        self._tasks = [
            asyncio.create_task(self._fetch(), name="ledger-fetch"),
            asyncio.create_task(self._settle(), name="ledger-settle"),
        ]

    async def stop(self) -> None:
        """Stop fetching, finish the batch in the database, commit its offsets, leave."""
        self.state = "stopping"
        fetch, settle = self._tasks or (None, None)
        if fetch is not None:
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetch
        if settle is not None:
            await self._idle.wait()
            settle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settle
        if self._consumer is not None:
            with contextlib.suppress(KafkaError):
                await self._consumer.stop()
        self.state = "stopped"

    async def pause(self) -> None:
        """Stop settling at the next batch boundary; returns once nothing is in flight."""
        self.paused = True
        metrics.CONSUMER_PAUSED.set(1)
        self._resumed.clear()
        if self._consumer is not None:
            self._consumer.pause(*self._consumer.assignment())
        await self._idle.wait()

    def resume(self) -> None:
        self.paused = False
        metrics.CONSUMER_PAUSED.set(0)
        if self._consumer is not None:
            self._consumer.resume(*self._consumer.assignment())
        self._resumed.set()

    async def _fetch(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        fee_account = self.fee_account
        while True:
            await self._resumed.wait()
            try:
                fetched = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.batch_max_events
                )
            except KafkaError as exc:
                self.last_error = f"fetch: {exc!r}"
                log.warning("fetch failed; retrying", extra={"why": repr(exc)})
                await asyncio.sleep(1)
                continue
            if not fetched:
                continue
            # Fill the batch from what the fetcher has buffered already (no waiting): the
            # cost of a settlement transaction is mostly per batch, not per event.
            size = sum(len(b) for b in fetched.values())
            while size < self.settings.batch_max_events:
                more = await consumer.getmany(
                    timeout_ms=0, max_records=self.settings.batch_max_events - size
                )
                if not more:
                    break
                for tp, records in more.items():
                    fetched.setdefault(tp, []).extend(records)
                    size += len(records)
            offsets: dict[TopicPartition, int] = {}
            for tp, records in fetched.items():
                # The consumed position: past this batch and any transaction markers after
                # it, so a fully settled partition shows no lag.
                offsets[tp] = max(records[-1].offset + 1, await consumer.position(tp))
            values = [(tp.partition, r.offset, r.value) for tp, rs in fetched.items() for r in rs]
            # Decoding a big batch runs in a worker thread, for the same reason as planning.
            if len(values) >= 500:
                items = await asyncio.to_thread(_decode, values, fee_account)
            else:
                items = _decode(values, fee_account)
            parents = _traceparents(fetched) if self.traced else []
            await self._queue.put(_Batch(items, offsets, len(values), parents))

    async def _settle(self) -> None:
        """Submit batches in order, up to IN_FLIGHT at once (the applier plans the next
        while the current one is in the database); commit offsets strictly in order."""
        in_flight: deque[tuple[_Batch, asyncio.Future[list[Outcome]]]] = deque()
        while True:
            if in_flight and (len(in_flight) >= IN_FLIGHT or self._queue.empty() or self.paused):
                await self._finish(*in_flight.popleft())
                if not in_flight:
                    self._idle.set()
                continue
            batch = await self._queue.get()
            while not self._queue.empty() and len(batch.items) < self.settings.batch_max_events:
                batch = _merge(batch, self._queue.get_nowait())  # caught up with a backlog
            await self._resumed.wait()
            self._idle.clear()
            submitted = asyncio.ensure_future(self.applier.submit(batch.items, batch.parents))
            in_flight.append((batch, submitted))

    async def _finish(self, batch: _Batch, submitted: asyncio.Future[list[Outcome]]) -> None:
        assert self._consumer is not None
        while True:
            try:
                await submitted
                break
            except ApplierStopped:
                raise asyncio.CancelledError from None
            except Exception as exc:  # not transient: the applier retried those itself
                self.state = "failed"
                self.last_error = f"apply: {exc!r}"
                log.critical("settlement batch failed; retrying", extra={"why": repr(exc)})
                await asyncio.sleep(2)
                submitted = asyncio.ensure_future(self.applier.submit(batch.items, batch.parents))
        self.state = "running" if not self.paused else "paused"
        self.batches += 1
        self.events += len(batch.items)
        self.last_batch_at = time.time()
        commit = {tp: OffsetAndMetadata(offset, "") for tp, offset in batch.offsets.items()}
        try:
            await self._consumer.commit(commit)
            self._committed.update(batch.offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partitions: the next owner re-reads from the last
            # committed offset and the dedup absorbs the replay.
            log.warning("offset commit failed", extra={"why": repr(exc)})

    async def drain(self) -> None:
        """Drop fetched batches and wait for the one in flight (partitions are moving)."""
        while not self._queue.empty():
            self._queue.get_nowait()
        await self._idle.wait()

    def status(self) -> dict[str, Any]:
        partitions = []
        lag_total = 0
        consumer = self._consumer
        if consumer is not None:
            for tp in sorted(consumer.assignment(), key=lambda t: t.partition):
                end = consumer.last_stable_offset(tp) or consumer.highwater(tp)
                committed = self._committed.get(tp)
                lag = max(end - committed, 0) if end is not None and committed is not None else None
                lag_total += lag or 0
                partitions.append(
                    {"partition": tp.partition, "committed": committed, "end": end, "lag": lag}
                )
        metrics.CONSUMER_LAG.set(lag_total)
        return {
            "state": "paused" if self.paused and self.state == "running" else self.state,
            "paused": self.paused,
            "topic": self.settings.topic,
            "group_id": self.settings.group_id,
            "partitions": partitions,
            "batches": self.batches,
            "events": self.events,
            "last_batch_at": self.last_batch_at,
            "last_error": self.last_error,
        }


def _decode(values: list[tuple[int, int, bytes | None]], fee_account: str) -> list[Incoming]:
    items: list[Incoming] = []
    decode = rules.decode
    for partition, offset, value in values:
        try:
            items.append(decode(value or b"", fee_account))
        except Exception as exc:  # a protobuf DecodeError or a bad event id
            UNDECODABLE.inc()
            log.error(
                "undecodable record skipped",
                extra={"partition": partition, "offset": offset, "why": repr(exc)},
            )
    return items


def _merge(first: _Batch, second: _Batch) -> _Batch:
    offsets = dict(first.offsets)
    for tp, offset in second.offsets.items():
        offsets[tp] = max(offset, offsets.get(tp, 0))
    return _Batch(
        first.items + second.items,
        offsets,
        first.records + second.records,
        first.parents + second.parents,
    )


def _traceparents(fetched: dict[TopicPartition, list[Any]]) -> list[bytes]:
    """The traceparent headers of the fetched records: only sampled orders' events have one
    (besides their `type`), so most records cost one length test."""
    return [
        value
        for records in fetched.values()
        for record in records
        if len(record.headers) > 1
        for key, value in record.headers
        if key == TRACEPARENT_HEADER
    ]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: SettlementConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner.drain()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        consumer = self.owner._consumer
        if consumer is None:
            return
        for tp in assigned:
            committed = await consumer.committed(tp)
            if committed is None:  # a new group starts at the beginning
                committed = (await consumer.beginning_offsets([tp]))[tp]
            self.owner._committed[tp] = committed
        if self.owner.paused and assigned:
            consumer.pause(*assigned)
