"""The durable outbox against a real Kafka: exactly once, in order, across crashes,
outages and fencing. The WAL is written by the real engine; a read_committed consumer
is the judge."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError, KafkaConnectionError
from aiokafka.structs import TopicPartition
from prometheus_client import REGISTRY

from contracts.v1 import common_pb2, events_pb2
from e2e.env.kafka import KafkaBroker
from workloads.matcher import codec, wal
from workloads.matcher import engine as e
from workloads.matcher import outbox as ob
from workloads.matcher.outbox import Outbox, published_seq
from workloads.matcher.spec import MarketSpec

EPOCH = 3
ACCOUNTS = ("alice", "bob", "carol", "dave")
REPO = Path(__file__).resolve().parents[3]
# The broker gets SIGKILL when the *thread* that started it exits (PR_SET_PDEATHSIG), and
# asyncio.to_thread's workers exit with each test's loop: restart it from a thread that
# lives as long as the session.
_KEEPER = ThreadPoolExecutor(1, thread_name_prefix="kafka-keeper")
FAST = {"retry_backoff": 0.1, "max_retry_backoff": 1.0, "transaction_timeout": 5.0}


# ---------------------------------------------------------------------------- helpers


@dataclass
class Market:
    """A real engine writing a real WAL; `expected` is every Event the outbox owes Kafka."""

    directory: Path
    segment_bytes: int = 64 << 20
    symbol: str = ""
    """Default: a symbol of its own, so that tests sharing a Kafka never meet."""
    spec: MarketSpec = field(init=False)
    durable: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.spec = MarketSpec(self.symbol or f"M{uuid.uuid4().hex[:8]}-USDT", "BTC", "USDT")
        self.engine = e.Engine(self.spec)
        self.writer = wal.WalWriter(self.directory, 1, self.segment_bytes)
        self.rng = random.Random(7)
        self.seq = 0
        self.resting: list[tuple[str, str]] = []
        self.expected: list[events_pb2.Event] = []
        self.seq_of_event: list[int] = []

    def append(self, count: int, per_record: int = 20) -> int:
        """Execute `count` commands and write them, `per_record` per WAL record, fsynced."""
        for start in range(0, count, per_record):
            first, entries = self.seq + 1, []
            for _ in range(min(per_record, count - start)):
                self.seq += 1
                ts, correlation_id, command = self.seq * 1_000_000, f"corr-{self.seq}", self._next()
                events = self.engine.execute(command, self.seq, ts)
                entries.append((ts, command, events, correlation_id, self.engine.state_hash))
                for index, event in enumerate(events):
                    self.expected.append(
                        codec.event_proto(
                            self.spec,
                            event,
                            self.seq,
                            index,
                            EPOCH,
                            ts,
                            correlation_id,
                            command[0],
                        )
                    )
                    self.seq_of_event.append(self.seq)
            self.writer.write(wal.encode(first, EPOCH, self.engine.state_hash, entries), first)
        self.writer.sync()
        return self.seq

    def make_durable(self, seq: int) -> None:
        self.durable = seq
        self.changed.set()

    def events_through(self, seq: int) -> list[events_pb2.Event]:
        return [ev for ev, s in zip(self.expected, self.seq_of_event, strict=True) if s <= seq]

    def outbox(self, bootstrap: str, topic: str, **overrides: Any) -> Outbox:
        """An outbox on this WAL with quick retries; `durable_changed` may be overridden."""
        kwargs: dict[str, Any] = {"durable_changed": self.changed, **FAST, **overrides}
        return Outbox(
            self.spec, self.directory, bootstrap, topic, durable_seq=lambda: self.durable, **kwargs
        )

    def _next(self) -> tuple[Any, ...]:
        n, rng = self.seq, self.rng
        if n <= 2 * len(ACCOUNTS):
            asset = "BTC" if n % 2 else "USDT"
            return (e.C_FUNDING, f"fund-{n}", ACCOUNTS[(n - 1) // 2], asset, 10**12, e.CREDIT)
        account, roll = rng.choice(ACCOUNTS), rng.random()
        side = rng.choice((e.BUY, e.SELL))
        if roll < 0.15 and self.resting:
            owner, client_id = self.resting.pop(rng.randrange(len(self.resting)))
            return (e.C_CANCEL, owner, 0, client_id)
        if roll < 0.25:
            return (
                e.C_PLACE,
                account,
                f"o{n}",
                side,
                e.MARKET,
                e.IOC,
                0,
                rng.randint(1, 9),
                False,
                0,
            )
        self.resting.append((account, f"o{n}"))
        tif = e.IOC if roll < 0.35 else e.GTC
        price = rng.randint(95, 105)
        return (
            e.C_PLACE,
            account,
            f"o{n}",
            side,
            e.LIMIT,
            tif,
            price,
            rng.randint(1, 20),
            False,
            0,
        )


@dataclass(frozen=True)
class Seen:
    key: bytes | None
    type: bytes
    event: events_pb2.Event


async def consume(
    bootstrap: str, topic: str, expect: int, *, committed: bool = True, within: float = 30.0
) -> list[Seen]:
    """Everything on the topic: at least `expect` records, then on to the end offset (the
    last stable offset for read_committed), so duplicates after them are seen too."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed" if committed else "read_uncommitted",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[Seen] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    tp = TopicPartition(topic, 0)
    try:
        while len(seen) < expect and loop.time() < deadline:
            _collect(seen, await consumer.getmany(timeout_ms=300))
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end and loop.time() < deadline:
            _collect(seen, await consumer.getmany(timeout_ms=300))
    finally:
        await consumer.stop()
    return seen


def _collect(seen: list[Seen], batch: dict[Any, list[Any]]) -> None:
    for records in batch.values():
        for r in records:
            seen.append(Seen(r.key, dict(r.headers)["type"], events_pb2.Event.FromString(r.value)))


def seq_of(event: events_pb2.Event) -> int:
    body = event.WhichOneof("body")
    assert body is not None
    return int(getattr(event, body).envelope.seq)


def assert_exactly_once(seen: list[Seen], market: Market, through: int) -> None:
    expected = market.events_through(through)
    ids = [getattr(s.event, str(s.event.WhichOneof("body"))).envelope.event_id for s in seen]
    assert len(ids) == len(set(ids)), "duplicate events visible"
    assert [s.event for s in seen] == expected  # every event once, in seq and index order
    assert sorted({seq_of(s.event) for s in seen}) == list(range(1, through + 1))  # no gap
    assert {s.key for s in seen} == {market.spec.symbol.encode()}
    assert all(s.type == str(s.event.WhichOneof("body")).encode() for s in seen)


async def assert_published_exactly_once(
    bootstrap: str, topic: str, market: Market, through: int
) -> None:
    """What a read_committed consumer sees on the topic: every event through `through` once."""
    assert_exactly_once(await consume(bootstrap, topic, len(market.expected)), market, through)


async def until(what: str, ready: Callable[[], bool], *tasks: asyncio.Task[None]) -> None:
    """Poll `ready` with a deadline; fail early if an outbox task ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not ready():
        for task in tasks:
            if task.done():
                task.result()  # raises what ended it
                raise AssertionError(f"outbox ended while waiting for {what}")
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(outbox: Outbox) -> AsyncIterator[asyncio.Task[None]]:
    """`outbox.run()` as a task, stopped on the way out whatever happened (even on a failure,
    so no producer outlives its test)."""
    task = asyncio.create_task(outbox.run())
    try:
        yield task
    finally:
        await outbox.stop(grace=10)
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def metric(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


# ---------------------------------------------------------------------------- WAL tail (unit)


@pytest.mark.unit
def test_tail_reads_across_segments_in_small_slices_and_waits_at_a_torn_tail(
    tmp_path: Path,
) -> None:
    market = Market(tmp_path, segment_bytes=3_000)
    last = market.append(120, per_record=7)
    assert len(wal.segments(tmp_path)) > 3  # rotation happened
    tail = ob._WalTail(tmp_path, market.spec, 30)
    seqs: list[int] = []
    while chunk := tail.read(400):  # smaller than some records: the oversize path
        seqs.extend(c.seq for c in chunk)
    assert seqs == list(range(30, last + 1))

    # A half-written record at the end is not an error, just not there yet.
    entries = [(1, (e.C_CANCEL_ALL, "alice"), [(e.E_MASS_CANCELED, "alice", 0)], "x", 0)]
    record = wal.encode(last + 1, EPOCH, 0, entries)
    with open(wal.segments(tmp_path)[-1], "ab") as handle:
        handle.write(record[:-5])
        handle.flush()
        assert tail.read(400) == []
        handle.write(record[-5:])
    (command,) = tail.read(400)
    assert command.seq == last + 1
    assert command.events[0][0] == b"mass_cancel_completed"


@pytest.mark.unit
def test_tail_refuses_a_wal_that_no_longer_holds_the_cursor(tmp_path: Path) -> None:
    market = Market(tmp_path, segment_bytes=2_000)
    market.append(80, per_record=5)
    market.writer.remove_before(60)
    with pytest.raises(ob.WalGap):
        ob._WalTail(tmp_path, market.spec, 2).read(1 << 20)


@pytest.mark.unit
async def test_a_deposed_leader_does_not_reconnect(tmp_path: Path) -> None:
    """Re-initialising the transactional id would fence the new leader's producer."""
    market = Market(tmp_path)
    market.make_durable(market.append(10))
    outbox = market.outbox("127.0.0.1:9", "events", may_connect=lambda: False)
    await asyncio.wait_for(outbox.run(), 5)
    assert outbox.fenced
    assert outbox.published_seq == 0
    assert outbox.lag == 10


# ---------------------------------------------------------------------------- Kafka


@pytest.mark.integration
async def test_publishes_every_durable_event_once_in_order(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    market = Market(tmp_path)
    last = market.append(300)
    market.make_durable(last)
    events_before = metric("matcher_outbox_published_events_total")
    outbox = market.outbox(kafka_bootstrap, kafka_topic, max_batch_commands=50)
    async with running(outbox) as task:
        await until("all published", lambda: outbox.published_seq == last, task)
        assert outbox.lag == 0
        assert metric("matcher_outbox_lag") == 0
        assert metric("matcher_outbox_published_seq") == last

    await assert_published_exactly_once(kafka_bootstrap, kafka_topic, market, last)
    published = metric("matcher_outbox_published_events_total") - events_before
    assert published == len(market.expected)
    assert metric("matcher_outbox_transaction_seconds_count") >= last // 50


@pytest.mark.integration
async def test_resumes_after_cancel_mid_stream_without_gap_or_duplicate(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    market = Market(tmp_path)
    last = market.append(300)
    market.make_durable(last)
    first = market.outbox(kafka_bootstrap, kafka_topic, max_batch_commands=10)
    async with running(first) as task:
        await until("some published", lambda: first.published_seq >= 60, task)
        task.cancel()  # no stop(): a transaction in flight is left open on the broker
        await asyncio.wait({task})
    assert task.cancelled()
    assert first.published_seq < last

    second = market.outbox(kafka_bootstrap, kafka_topic, max_batch_commands=10)
    async with running(second) as task:
        await until("all published", lambda: second.published_seq == last, task)
    await assert_published_exactly_once(kafka_bootstrap, kafka_topic, market, last)


_CRASHING_CHILD = """
import asyncio, sys
from pathlib import Path
from aiokafka import AIOKafkaProducer
from workloads.matcher.outbox import Outbox
from workloads.matcher.spec import MarketSpec

symbol, wal_dir, bootstrap, topic, durable, marker, hook = sys.argv[1:]
original = getattr(AIOKafkaProducer, hook)
calls = 0

async def hang_on_third(self, *args):
    global calls
    calls += 1
    if calls == 3:  # the events of chunk 3 are acknowledged; its commit never comes
        Path(marker).write_text("in doubt")
        await asyncio.Event().wait()
    return await original(self, *args)

setattr(AIOKafkaProducer, hook, hang_on_third)
outbox = Outbox(MarketSpec(symbol, "BTC", "USDT"), Path(wal_dir), bootstrap, topic,
                durable_seq=lambda: int(durable), durable_changed=asyncio.Event(),
                max_batch_commands=40)
asyncio.run(outbox.run())
"""


def _spawn(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", _CRASHING_CHILD, *args],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize("hook", ["send_offsets_to_transaction", "commit_transaction"])
async def test_kill_9_inside_a_transaction_leaves_no_gap_and_no_duplicate(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, hook: str
) -> None:
    """kill -9 after chunk 3's events are in the log, before its cursor (or its commit)."""
    market = Market(tmp_path / "wal")
    last = market.append(200)
    marker = tmp_path / "in-doubt"
    child = _spawn(tmp_path / "child.log", market.spec.symbol, str(market.directory),
                   kafka_bootstrap, kafka_topic, str(last), str(marker), hook)  # fmt: skip
    try:
        hung_or_gone = lambda: marker.exists() or child.poll() is not None  # noqa: E731
        await until("the child to hang in chunk 3", hung_or_gone)
        assert marker.exists(), (tmp_path / "child.log").read_text()[-3000:]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.to_thread(child.wait)
    # The crash left chunk 3 (seqs 81..120) in the log, uncommitted: the scenario is real.
    in_doubt = await consume(kafka_bootstrap, kafka_topic, 1, committed=False, within=10)
    assert {seq_of(s.event) for s in in_doubt} == set(range(1, 121))

    market.make_durable(last)
    outbox = market.outbox(kafka_bootstrap, kafka_topic, max_batch_commands=40)
    async with running(outbox) as task:
        await until("all published", lambda: outbox.published_seq == last, task)
    await assert_published_exactly_once(kafka_bootstrap, kafka_topic, market, last)


@pytest.mark.integration
async def test_nothing_beyond_durable_seq_is_published_until_it_advances(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    market = Market(tmp_path)
    last = market.append(300)  # all written, only the first 100 durable
    market.make_durable(100)
    outbox = market.outbox(kafka_bootstrap, kafka_topic)  # one chunk could hold all 300
    async with running(outbox) as task:
        await until("the durable part published", lambda: outbox.published_seq == 100, task)
        assert outbox.lag == 0
        seen = await consume(kafka_bootstrap, kafka_topic, len(market.events_through(100)))
        assert_exactly_once(seen, market, 100)
        assert outbox.published_seq == 100

        market.durable = 250  # advanced, not signalled yet: lag shows it at once
        assert outbox.lag == 150
        assert metric("matcher_outbox_lag") == 150
        market.make_durable(250)
        await until("the advance published", lambda: outbox.published_seq == 250, task)
        market.make_durable(last)
        await until("all published", lambda: outbox.published_seq == last, task)
    await assert_published_exactly_once(kafka_bootstrap, kafka_topic, market, last)


@pytest.mark.integration
async def test_linger_gathers_a_trickle_of_commands_into_few_transactions(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    market = Market(tmp_path)
    last = market.append(300)
    outbox = market.outbox(kafka_bootstrap, kafka_topic, linger=1.0)
    async with running(outbox) as task:
        market.make_durable(30)
        await until("the first advance published", lambda: outbox.published_seq == 30, task)
        transactions = metric("matcher_outbox_transaction_seconds_count")
        for durable in range(60, last + 1, 30):  # nine more advances within about 0.2 s
            market.make_durable(durable)
            await asyncio.sleep(0.02)
        await until("all published", lambda: outbox.published_seq == last, task)
    # They wait out the linger since the first transaction, and go out together.
    assert metric("matcher_outbox_transaction_seconds_count") - transactions == 1
    await assert_published_exactly_once(kafka_bootstrap, kafka_topic, market, last)


@pytest.mark.integration
async def test_a_backlog_is_published_without_lingering(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    market = Market(tmp_path)
    last = market.append(300)
    market.make_durable(last)
    # Six full transactions: with the linger between each, this would take minutes.
    outbox = market.outbox(kafka_bootstrap, kafka_topic, linger=30.0, max_batch_commands=50)
    async with running(outbox) as task:
        await until("the backlog published", lambda: outbox.published_seq == last, task)
    await assert_published_exactly_once(kafka_bootstrap, kafka_topic, market, last)


@pytest.mark.integration
async def test_kafka_outage_grows_lag_then_catches_up_exactly_once(
    kafka_broker: KafkaBroker, kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    market = Market(tmp_path)
    market.make_durable(market.append(100))
    outbox = market.outbox(kafka_bootstrap, kafka_topic, max_batch_commands=50)
    async with running(outbox) as task:
        await until("the first part published", lambda: outbox.published_seq == 100, task)
        errors = metric("matcher_outbox_publish_errors_total")
        await asyncio.to_thread(kafka_broker.stop)
        try:
            market.make_durable(market.append(100))  # matching goes on: the WAL is the line
            noticed = lambda: metric("matcher_outbox_publish_errors_total") > errors  # noqa: E731
            await until("the outbox to notice the outage", noticed, task)
            market.make_durable(market.append(100))
            assert outbox.published_seq == 100
            assert outbox.lag == 200
            assert metric("matcher_outbox_lag") == 200
        finally:
            await asyncio.get_running_loop().run_in_executor(_KEEPER, kafka_broker.start)
        await until("caught up", lambda: outbox.published_seq == 300, task)
        assert outbox.lag == 0
    await assert_published_exactly_once(kafka_bootstrap, kafka_topic, market, 300)


@pytest.mark.integration
async def test_a_second_outbox_for_the_market_fences_the_first(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    market = Market(tmp_path)
    last = market.append(200)
    market.make_durable(100)
    old = market.outbox(kafka_bootstrap, kafka_topic)
    new_changed = asyncio.Event()  # the new leader is woken separately, after the old one
    new = market.outbox(kafka_bootstrap, kafka_topic, durable_changed=new_changed)
    async with running(old) as old_task:
        await until("the old leader published", lambda: old.published_seq == 100, old_task)
        async with running(new) as new_task:
            await until("the new leader connected", lambda: new.published_seq == 100, new_task)
            assert not old.fenced  # it cannot know before it talks to Kafka again

            market.make_durable(last)  # wakes the old leader only
            await until("the old leader fenced", old_task.done)
            assert old_task.result() is None  # fencing ends run() quietly
            assert old.fenced
            assert old.published_seq == 100
            new_changed.set()
            await until("the new leader published", lambda: new.published_seq == last, new_task)
            assert not new.fenced
    await assert_published_exactly_once(kafka_bootstrap, kafka_topic, market, last)


@pytest.mark.integration
async def test_the_same_market_of_two_venues_on_one_kafka_does_not_fence_the_other(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two venues (dev and staging, two namespaces) share a Kafka, each with its own topic:
    their BTC-USDT outboxes have their own transactional ids and cursors."""
    symbol = f"M{uuid.uuid4().hex[:8]}-USDT"  # one market, in both venues
    venues = [
        (Market(tmp_path / name, symbol=symbol), f"{kafka_topic}-{name}")
        for name in ("dev", "staging")
    ]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)
                                   for _m, t in venues])  # fmt: skip
    finally:
        await admin.close()
    for market, _topic in venues:
        market.make_durable(market.append(50))
    outboxes = [market.outbox(kafka_bootstrap, topic) for market, topic in venues]
    async with running(outboxes[0]) as first, running(outboxes[1]) as second:
        await until(
            "both published", lambda: all(o.published_seq == 50 for o in outboxes), first, second
        )
        for market, _topic in venues:
            market.make_durable(market.append(20))
        await until(
            "both published on", lambda: all(o.published_seq == 70 for o in outboxes), first, second
        )
        assert not any(o.fenced for o in outboxes)
    # Not even for a moment: no producer of one was fenced by the other's.
    ours = [r.getMessage().lower() for r in caplog.records if r.name == "workloads.matcher.outbox"]
    fenced = [m for m in ours if "fenced" in m or "epoch" in m]
    assert fenced == []
    for market, topic in venues:
        await assert_published_exactly_once(kafka_bootstrap, topic, market, 70)


@pytest.mark.integration
@pytest.mark.parametrize("landed", [True, False], ids=["reply-lost", "request-lost"])
async def test_an_uncertain_commit_is_settled_by_the_cursor_in_kafka(
    kafka_bootstrap: str,
    kafka_topic: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    landed: bool,
) -> None:
    """The 2nd commit fails from the outbox's point of view; whether it landed or not, the
    cursor read on reconnect decides what comes next."""
    original = AIOKafkaProducer.commit_transaction
    calls = 0

    async def flaky_commit(self: AIOKafkaProducer) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            if landed:
                await original(self)
            raise KafkaConnectionError("connection lost around EndTxn")
        await original(self)

    monkeypatch.setattr(AIOKafkaProducer, "commit_transaction", flaky_commit)
    market = Market(tmp_path)
    last = market.append(200)
    market.make_durable(last)
    errors = metric("matcher_outbox_publish_errors_total")
    outbox = market.outbox(kafka_bootstrap, kafka_topic, max_batch_commands=40)
    async with running(outbox) as task:
        await until("all published", lambda: outbox.published_seq == last, task)
    assert calls > 2
    assert metric("matcher_outbox_publish_errors_total") > errors
    await assert_published_exactly_once(kafka_bootstrap, kafka_topic, market, last)


def _envelope_event(seq: int, epoch: int) -> bytes:
    return events_pb2.Event(
        epoch_started=events_pb2.EpochStarted(
            envelope=common_pb2.EventEnvelope(
                event_id=f"BTC-USDT:{seq}:0", symbol="BTC-USDT", seq=seq, epoch=epoch
            )
        )
    ).SerializeToString()


@pytest.mark.integration
async def test_a_stale_leaders_event_in_the_topic_does_not_count_as_published(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    """What the ledger drops (an epoch lower than one before it) published nothing: a
    matcher starting up must not refuse to serve because of it."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for seq, epoch in ((1, 1), (2, 1), (3, 2), (4, 2), (1_000_000, 1), (5, 2)):
            await producer.send_and_wait(kafka_topic, _envelope_event(seq, epoch), key=b"BTC-USDT")
    finally:
        await producer.stop()
    for _ in range(50):  # a fresh broker creates its offsets topic on the first group call
        with contextlib.suppress(GroupCoordinatorNotAvailableError):
            assert await published_seq(kafka_bootstrap, kafka_topic, "BTC-USDT") == 5
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the group coordinator never became available")
