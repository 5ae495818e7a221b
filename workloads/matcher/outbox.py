"""The durable outbox: publishes the events of fsynced WAL records to Kafka, exactly once.

- The WAL is the commit line. The outbox tails it and never goes past `durable_seq()`, so
  a Kafka outage never blocks matching: it only grows `lag` until Kafka is back.
- One Kafka transaction per chunk of commands carries the chunk's events *and* the publish
  cursor: the chunk's last seq, committed with `send_offsets_to_transaction` as the offset
  of a consumer group nobody consumes with (`matcher-outbox-<topic>-<symbol>`). Events and
  cursor become visible together or not at all, so after a crash anywhere a read_committed
  consumer sees no gap and no duplicate.
- `transactional_id = matcher-<topic>-<symbol>`: a newer leader's producer bumps the producer
  epoch and Kafka fences ours. The topic is the venue's own, so venues sharing a Kafka (dev
  and staging, two namespaces) never fence each other's markets of the same symbol.
  Starting a producer (InitProducerId) also aborts or completes any transaction an earlier
  incarnation left open, so the cursor read right after it is final.
- Traces: the events of a command whose correlation is a sampled traceparent carry, in a
  `traceparent` record header, the context of the transaction's `matcher.outbox_publish`
  span (`tracing.py`); consumers continue the order's trace from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from opentelemetry.trace import Span
from prometheus_client import Counter, Gauge, Histogram

from contracts.v1 import events_pb2
from workloads.common.tracing import SAMPLED_LAST_DIGITS, TRACEPARENT_HEADER
from workloads.matcher import codec, wal
from workloads.matcher.spec import MarketSpec
from workloads.matcher.tracing import MatcherTracing

log = logging.getLogger(__name__)

PUBLISHED_EVENTS = Counter("matcher_outbox_published_events", "Events committed to Kafka")
PUBLISHED_SEQ = Gauge("matcher_outbox_published_seq", "Last command whose events are committed")
LAG = Gauge("matcher_outbox_lag", "Durable commands not yet published (durable - published)")
PUBLISH_ERRORS = Counter("matcher_outbox_publish_errors", "Failed Kafka sessions or transactions")
TXN_SECONDS = Histogram(
    "matcher_outbox_transaction_seconds",
    "Duration of one outbox transaction (events + cursor + commit)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

_BATCH_BYTES = 512 << 10  # one produce request carries many events; below message.max.bytes
_BODY = events_pb2.Event.DESCRIPTOR.oneofs_by_name["body"]
_TYPE = {field.number: field.name.encode() for field in _BODY.fields}  # E_* -> header value


class WalGap(RuntimeError):
    """The WAL no longer holds commands the cursor still needs: publishing would lose events."""


class PublishedAhead(RuntimeError):
    """Kafka holds a seq of this market beyond the matcher's durable log: the log went
    backwards (lost or truncated, a wrong volume, an old snapshot). Sequencing on from it
    would reuse published seqs, so the matcher must not serve."""

    def __init__(self, durable_seq: int, published_seq: int, topic: str) -> None:
        super().__init__(
            f"the matcher's log ends at seq {durable_seq} but seq {published_seq} of its market"
            f" is already published to {topic}: its WAL or snapshot is behind what traders and"
            " the ledger have seen; restore the volume that has it (or the archive) instead"
        )
        self.durable_seq = durable_seq
        self.published_seq = published_seq


class EncodedEvents:
    """Events the reply path has already serialized, by seq, for the outbox to publish as
    they are instead of encoding them a second time (the same encoder on the same WAL
    entry gives the same bytes). Bounded: while the outbox lags (Kafka down), new entries
    are not kept and the outbox encodes from the WAL; published seqs are dropped.
    Thread-safe: the WAL tail takes entries in a worker thread."""

    def __init__(self, limit: int = 50_000) -> None:
        self._by_seq: OrderedDict[int, list[bytes]] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_seq)

    def put(self, seq: int, events: list[bytes]) -> None:
        with self._lock:
            if len(self._by_seq) < self._limit:
                self._by_seq[seq] = events

    def take(self, seq: int) -> list[bytes] | None:
        with self._lock:
            return self._by_seq.pop(seq, None)

    def drop_through(self, seq: int) -> None:
        """Forget everything up to `seq` (published, or skipped by the cursor)."""
        by_seq = self._by_seq
        with self._lock:
            while by_seq:
                first = next(iter(by_seq))
                if first > seq:
                    return
                del by_seq[first]


@dataclass(frozen=True, slots=True)
class _Command:
    seq: int
    events: list[tuple[bytes, bytes]]  # (type header, serialized Event) in index order
    trace: str = ""  # the correlation, when it is a sampled traceparent and tracing is on


class _WalTail:
    """Reads commands from `next_seq` on, remembering segment and byte offset.

    `wal.read` rescans a whole segment per call; tailing that way would cost O(segment) per
    group commit. This reads only new bytes, in bounded slices, and is run in a thread.
    Events are serialized by `codec.EventEncoder` (no protobuf objects), and a slice is
    small (256 KiB by default), so one read holds the GIL, and with it the event loop
    serving replies, only briefly.
    """

    def __init__(
        self,
        directory: Path,
        spec: MarketSpec,
        next_seq: int,
        encoded: EncodedEvents | None = None,
        traced: bool = False,
    ) -> None:
        """`traced`: note which commands belong to a sampled order's trace."""
        self.directory = directory
        self.spec = spec
        self.encoder = codec.EventEncoder(spec)
        self.encoded = encoded
        self.traced = traced
        self.next_seq = next_seq
        self.path: Path | None = None
        self.offset = 0

    def read(self, limit: int, through_seq: int | None = None) -> list[_Command]:
        """Commands of whole records after the last read (about `limit` bytes); [] at the end.
        With `through_seq`, a record starting after it is left for a later read: records
        are written before their fsync returns, and those not yet durable have no reply
        (hence no `encoded` events) yet."""
        while True:
            files = wal.segments(self.directory)
            if self.path is None:
                starts = [p for p in files if int(p.stem) <= self.next_seq]
                if not starts:
                    if files:
                        raise WalGap(f"WAL starts at {files[0].name}, need seq {self.next_seq}")
                    return []
                self.path = starts[-1]
            if self.path not in files:
                raise WalGap(f"{self.path} was removed before seq {self.next_seq} was published")
            newest = self.path == files[-1]  # listed before reading: a sealed file is complete
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(limit)
                whole = wal.whole_records(data)
                if whole == 0 and len(data) >= wal.HEADER.size:  # one record above `limit`
                    limit = wal.HEADER.size + wal.HEADER.unpack_from(data)[0]
                    handle.seek(self.offset)
                    data = handle.read(limit)
                    whole = wal.whole_records(data)
            if not newest and len(data) < limit:
                whole = len(data)  # the end of a sealed segment: wal.scan reports any damage
            commands: list[_Command] = []
            consumed = 0
            held = False
            for offset, record in wal.scan(self.path, data[:whole], last_segment=newest):
                if record is None:
                    break
                if through_seq is not None and record.first_seq > through_seq:
                    held = True
                    break
                commands.extend(self._commands(record))
                consumed = offset + wal.HEADER.size + wal.HEADER.unpack_from(data, offset)[0]
            self.offset += consumed
            if commands or held:
                return commands
            if consumed:
                continue  # only records before `next_seq` so far: keep skipping
            if newest:
                return []  # nothing new yet, or a record still being written
            following = files[files.index(self.path) + 1]
            if int(following.stem) != self.next_seq:
                raise WalGap(f"{following.name} does not continue at seq {self.next_seq}")
            self.path, self.offset = following, 0

    def _commands(self, record: wal.Record) -> list[_Command]:
        if record.first_seq > self.next_seq:
            raise WalGap(f"WAL jumps from seq {self.next_seq - 1} to {record.first_seq}")
        encode, epoch, commands = self.encoder.command_events, record.epoch, []
        take = self.encoded.take if self.encoded is not None else None
        traced, sampled = self.traced, SAMPLED_LAST_DIGITS
        for seq, entry in enumerate(record.entries, record.first_seq):
            if seq < self.next_seq:
                continue
            ts, command, events, correlation_id, _hash = entry
            values = take(seq) if take is not None else None
            if values is None or len(values) != len(events):
                values = encode(events, seq, epoch, ts, correlation_id, command[0])
            commands.append(
                _Command(
                    seq,
                    [(_TYPE[event[0]], value) for event, value in zip(events, values, strict=True)],
                    correlation_id
                    if traced and len(correlation_id) == 55 and correlation_id[54] in sampled
                    else "",
                )
            )
            self.next_seq = seq + 1
        return commands


class Outbox:
    """Publishes a market's durable events in seq order; resumes from the cursor in Kafka.

    The outbox owns `durable_changed`: it clears the event before waiting on it, so the
    sequencer only ever sets it.
    """

    def __init__(
        self,
        spec: MarketSpec,
        wal_dir: Path,
        bootstrap: str,
        topic: str,
        *,
        durable_seq: Callable[[], int],
        durable_changed: asyncio.Event,
        max_batch_commands: int = 500,
        linger: float = 0.0,
        retry_backoff: float = 0.5,
        max_retry_backoff: float = 30.0,
        transaction_timeout: float = 30.0,
        read_bytes: int = 256 << 10,
        may_connect: Callable[[], bool] = lambda: True,
        encoded: EncodedEvents | None = None,
        tracing: MatcherTracing | None = None,
    ) -> None:
        """`transaction_timeout` (s) bounds one connect or transaction on our side; the
        broker's is twice that, so our own abandoned transaction is never what fences us.
        `may_connect` (e.g. "still holds the lease") is asked before every (re)connect and
        every transaction: a stale leader that re-initialised the transactional id would
        fence the new leader, and one that lost its lease publishes nothing more.
        `encoded`: events the replies already serialized (see `EncodedEvents`).
        `tracing`: a publish span for each command of a sampled order (see `tracing.py`).
        `linger` (s): least time between two transactions' starts. A transaction costs the
        broker far more than its records (markers, the transaction log, every
        read_committed fetch it completes), so under a steady trickle of commands fewer,
        larger transactions spare the broker's CPU for the price of this much latency (none
        while a backlog of `max_batch_commands` or more waits: a catch-up goes at full speed)."""
        self.spec = spec
        self.topic = topic
        self.transactional_id = f"matcher-{topic}-{spec.symbol}"
        self.group_id = outbox_group(topic, spec.symbol)
        self.published_seq = 0
        self.fenced = False
        self._wal_dir = wal_dir
        self._bootstrap = bootstrap
        self._durable_seq = durable_seq
        self._durable_changed = durable_changed
        self._max_batch = max_batch_commands
        self._linger = linger
        self._last_publish = 0.0
        self._backoff = (retry_backoff, max_retry_backoff)
        self._txn_timeout = transaction_timeout
        self._read_bytes = read_bytes
        self._may_connect = may_connect
        self._encoded = encoded
        self._tracing = tracing
        self._connected = False
        self._key = spec.symbol.encode()
        self._tail: _WalTail | None = None
        self._pending: deque[_Command] = deque()
        self._inflight: list[_Command] = []
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        LAG.set_function(lambda: self.lag)

    @property
    def lag(self) -> int:
        return max(self._durable_seq() - self.published_seq, 0)

    async def run(self) -> None:
        """Publish until stopped, cancelled or fenced. Broker trouble is logged and retried
        with capped backoff, never raised; a WAL that cannot supply the events is raised."""
        self._task = asyncio.current_task()
        delay = self._backoff[0]
        while not self._stopping.is_set():
            if not self._may_connect():
                self._fence("no longer the leader: not reconnecting, that would fence the new one")
                return
            self._connected = False
            try:
                await self._session()
                return
            except asyncio.CancelledError:
                self._tail = None  # a read may have been cut short: re-read from the cursor
                raise
            except ProducerFenced:
                self._fence("fenced: a newer leader's producer took the transactional id")
                return
            except (KafkaError, OSError, TimeoutError) as exc:
                PUBLISH_ERRORS.inc()
                if self._connected:
                    delay = self._backoff[0]
                log.warning(
                    "publishing failed, retrying in %.1fs: %r",
                    delay,
                    exc,
                    extra={"symbol": self.spec.symbol, "lag": self.lag},
                )
            await _first(self._stopping, within=delay)
            delay = min(delay * 2, self._backoff[1])

    def _fence(self, why: str) -> None:
        self.fenced = True
        log.error(why, extra={"symbol": self.spec.symbol, "published_seq": self.published_seq})

    async def stop(self, grace: float = 10.0) -> None:
        """Let the transaction in flight finish, then end `run()`; cancel it after `grace` s."""
        self._stopping.set()
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            await asyncio.wait({task})

    async def _session(self) -> None:
        """One producer's life: connect, read the cursor, publish chunks until stopped."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            transactional_id=self.transactional_id,
            enable_idempotence=True,
            acks="all",
            transaction_timeout_ms=int(self._txn_timeout * 2000),
            request_timeout_ms=int(self._txn_timeout * 1000),
            max_batch_size=_BATCH_BYTES,
        )
        try:
            async with asyncio.timeout(self._txn_timeout):
                await producer.start()  # InitProducerId: settles what a predecessor left open
                partitions = sorted(await producer.partitions_for(self.topic))
                partition = DefaultPartitioner()(self._key, partitions, partitions)
                cursor = max(
                    await group_cursor(
                        self._bootstrap, self.group_id, self.topic, self._txn_timeout
                    ),
                    await seen_in_topic(
                        self._bootstrap, self.topic, partition, self._key, self._txn_timeout
                    ),
                )
            if cursor > self._durable_seq():
                raise PublishedAhead(self._durable_seq(), cursor, self.topic)
            self._connected = True
            self._resume_at(cursor)
            log.info("publishing", extra={"symbol": self.spec.symbol, "from_seq": cursor + 1})
            while chunk := await self._next_chunk():
                if not self._may_connect():  # lost the lease meanwhile: not one more
                    self._fence("no longer the leader: not publishing")
                    return
                async with asyncio.timeout(self._txn_timeout):
                    await self._publish(producer, partition, chunk)
        finally:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(producer.stop(), 5)
            await producer.client.close()  # stop() skips it when the sender died (fenced)

    def _resume_at(self, cursor: int) -> None:
        """Go on from Kafka's cursor: the truth, also about a commit whose reply was lost."""
        if self._tail is not None and cursor == self.published_seq:
            self._pending.extendleft(reversed(self._inflight))  # it did not land: resend
        elif not (self._tail and self._inflight and cursor == self._inflight[-1].seq):
            if cursor < self.published_seq:
                log.warning("cursor went back", extra={"cursor": cursor, "was": self.published_seq})
            self._tail = _WalTail(
                self._wal_dir, self.spec, cursor + 1, self._encoded, self._tracing is not None
            )
            self._pending.clear()
        self._inflight = []
        self._set_published(cursor)

    async def _next_chunk(self) -> list[_Command]:
        """Up to `max_batch_commands` durable, unpublished commands; [] once stopping."""
        assert self._tail is not None
        loop = asyncio.get_running_loop()
        wait = self._last_publish + self._linger - loop.time()
        if wait > 0 and self.lag < self._max_batch:  # a backlog fills transactions anyway
            await _first(self._stopping, within=wait)
        while not self._stopping.is_set():
            self._durable_changed.clear()  # before reading durable_seq: no wakeup is lost
            durable = self._durable_seq()
            target = min(durable, self.published_seq + self._max_batch)
            while target > self.published_seq and (
                not self._pending or self._pending[-1].seq < target
            ):
                more = await asyncio.to_thread(self._tail.read, self._read_bytes, durable)
                if not more:
                    break
                self._pending.extend(more)
            chunk: list[_Command] = []
            while (
                self._pending and len(chunk) < self._max_batch and self._pending[0].seq <= durable
            ):
                chunk.append(self._pending.popleft())
            if chunk:
                self._last_publish = loop.time()
                return chunk
            # Durable beyond what the WAL shows yet should not last: then look again soon.
            timeout = None if durable <= self.published_seq else 0.1
            await _first(self._durable_changed, self._stopping, within=timeout)
        return []

    async def _publish(
        self, producer: AIOKafkaProducer, partition: int, chunk: list[_Command]
    ) -> None:
        """One transaction: the chunk's events (in whole record batches), the cursor, commit."""
        self._inflight = chunk
        started = asyncio.get_running_loop().time()
        traced = self._traced(chunk, partition)
        try:
            await self._transaction(producer, partition, chunk, traced)
        except BaseException as exc:
            if traced:
                MatcherTracing.end_publish([span for span, _ in traced.values()], exc)
            raise
        if traced:
            MatcherTracing.end_publish([span for span, _ in traced.values()])
        TXN_SECONDS.observe(asyncio.get_running_loop().time() - started)
        self._inflight = []
        self._set_published(chunk[-1].seq)

    def _traced(self, chunk: list[_Command], partition: int) -> dict[int, tuple[Span, bytes]]:
        """Started publish spans and their traceparents, by seq, for the sampled commands."""
        tracing = self._tracing
        if tracing is None:
            return {}
        traced: dict[int, tuple[Span, bytes]] = {}
        for command in chunk:
            if command.trace:
                started = tracing.start_publish(
                    command.trace, command.seq, self.topic, partition, len(chunk)
                )
                if started is not None:
                    traced[command.seq] = started
        return traced

    async def _transaction(
        self,
        producer: AIOKafkaProducer,
        partition: int,
        chunk: list[_Command],
        traced: dict[int, tuple[Span, bytes]],
    ) -> None:
        await producer.begin_transaction()
        sent: list[asyncio.Future[object]] = []
        batch, events = producer.create_batch(), 0
        for command in chunk:
            context = traced.get(command.seq) if command.trace else None
            for kind, value in command.events:
                events += 1
                headers = [("type", kind)]
                if context is not None:
                    headers.append((TRACEPARENT_HEADER, context[1]))
                appended = batch.append(timestamp=None, key=self._key, value=value, headers=headers)
                if appended is not None:
                    continue
                sent.append(await producer.send_batch(batch, self.topic, partition=partition))
                batch = producer.create_batch()  # the full one is queued: start the next
                if (
                    batch.append(timestamp=None, key=self._key, value=value, headers=headers)
                    is None
                ):
                    raise ValueError(f"an event of seq {command.seq} exceeds a record batch")
        if batch.record_count():
            sent.append(await producer.send_batch(batch, self.topic, partition=partition))
        for future in sent:
            future.add_done_callback(_retrieve)  # after a failure, one error is enough
        await asyncio.gather(*sent)
        last = chunk[-1].seq
        await producer.send_offsets_to_transaction(
            {TopicPartition(self.topic, partition): last}, self.group_id
        )
        await producer.commit_transaction()
        PUBLISHED_EVENTS.inc(events)

    def _set_published(self, seq: int) -> None:
        self.published_seq = seq
        PUBLISHED_SEQ.set(seq)
        if self._encoded is not None:
            self._encoded.drop_through(seq)


def outbox_group(topic: str, symbol: str) -> str:
    """The consumer group whose offset is the market's publish cursor (nobody consumes)."""
    return f"matcher-outbox-{topic}-{symbol}"


async def group_cursor(bootstrap: str, group_id: str, topic: str, within: float) -> int:
    """The publish cursor the outbox commits with its transactions (0: none yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(within * 1000))
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return max((o.offset for tp, o in offsets.items() if tp.topic == topic), default=0)


async def seen_in_topic(
    bootstrap: str, topic: str, partition: int, key: bytes, within: float, window: int = 5_000
) -> int:
    """The highest seq of the market (`key`) a read_committed reader sees near the end of its
    partition: a second witness for the cursor. Right after a broker restart the group
    offset can lag behind what was committed; trusting it alone would publish again.

    An event whose epoch is lower than one before it in the partition is not counted: every
    consumer drops it as a stale leader's (the ledger counts it), so it published nothing."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        request_timeout_ms=int(within * 1000),
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]  # the last stable offset
        consumer.seek(tp, max(0, end - window))
        seen = epoch = 0
        deadline = asyncio.get_running_loop().time() + within
        while await consumer.position(tp) < end:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("reading the partition's tail took too long")
            batch = await consumer.getmany(tp, timeout_ms=500)
            for record in batch.get(tp, []):
                if record.key == key and record.value:
                    event = events_pb2.Event.FromString(record.value)
                    body = event.WhichOneof("body")
                    if body is None:
                        continue
                    envelope = getattr(event, body).envelope
                    if envelope.epoch >= epoch:
                        epoch = envelope.epoch
                        seen = max(seen, envelope.seq)
        return seen
    finally:
        await consumer.stop()


async def topic_partitions(bootstrap: str, topic: str, within: float = 30.0) -> list[int]:
    """The topic's partition numbers, from the cluster's metadata ([]: no such topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(within * 1000))
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        p["partition"] for t in described if t["error_code"] == 0 for p in t["partitions"]
    )


async def published_seq(bootstrap: str, topic: str, symbol: str, within: float = 30.0) -> int:
    """The highest seq of `symbol` already published to `topic`, read without producing
    (a matcher that does not lead must not touch the transactional id): what a starting
    matcher's recovered seq must reach. 0 when the topic does not exist yet."""
    partitions = await topic_partitions(bootstrap, topic, within)
    if not partitions:
        return 0
    key = symbol.encode()
    partition = DefaultPartitioner()(key, partitions, partitions)
    return max(
        await group_cursor(bootstrap, outbox_group(topic, symbol), topic, within),
        await seen_in_topic(bootstrap, topic, partition, key, within),
    )


async def _first(*events: asyncio.Event, within: float | None) -> None:
    """Wait until any of `events` is set, or `within` seconds pass."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _retrieve(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()
