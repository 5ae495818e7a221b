"""One short fault at a time under a crossing load, with the reconciliation defaults: the
market must not latch, must trade after the fault, must settle back to lag 0, and must lose
nothing. And the one fault that must latch at once: a matcher whose log went backwards.

The reconciliation runs every second here (the default is 5 s), so that evaluations land
inside every restart and freeze; the threshold, the grace and the staleness bound are the
defaults. PostgreSQL and Kafka are this module's own: its tests freeze them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts.v1 import matcher_pb2, matcher_pb2_grpc
from e2e.drills.load import CrossingLoad
from e2e.drills.venue import Venue
from e2e.drills.verify import breaches, nothing_lost
from e2e.env import kafka, postgres
from e2e.env.process import ManagedProcess, free_port
from e2e.env.pytest_plugin import unique_name

pytestmark = pytest.mark.integration

LEDGER_ENV = {"LEDGER_RECONCILIATION_INTERVAL_MS": "1000", "LEDGER_INVARIANT_INTERVAL_MS": "10000"}


@dataclass
class Servers:
    pg: postgres.PostgresServer
    broker: kafka.KafkaBroker

    @staticmethod
    def process(server: postgres.PostgresServer | kafka.KafkaBroker) -> ManagedProcess:
        assert server.process is not None
        return server.process


@pytest.fixture(scope="module")
def servers(run_dir: Path) -> Iterator[Servers]:
    """A PostgreSQL and a Kafka of this module's own: its tests freeze them."""
    pg = postgres.PostgresServer(run_dir / "faults", free_port())
    broker = kafka.KafkaBroker(run_dir / "faults", free_port(), free_port())
    try:
        pg.start()
        broker.start()
        yield Servers(pg, broker)
    finally:
        broker.stop()
        pg.stop()


@pytest.fixture
async def venue(servers: Servers, run_dir: Path) -> AsyncIterator[Venue]:
    name = unique_name("faults")
    schema = name.replace("-", "_")
    conn = await asyncpg.connect(servers.pg.dsn)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=servers.broker.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    await admin.close()
    venue = Venue(
        run_dir / name,
        f"{servers.pg.dsn}?options=-csearch_path%3D{schema}",
        servers.broker.bootstrap,
        name,
        ledger_env=LEDGER_ENV,
    )
    await asyncio.to_thread(venue.start)
    try:
        yield venue
    finally:
        await asyncio.to_thread(venue.stop)


@dataclass
class Watch:
    """The ledger's reconciliation as seen every 0.25 s during the run."""

    max_lag: int = 0
    max_behind: float = 0.0
    polls: int = 0
    unanswered: int = 0

    async def run(self, venue: Venue, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                market = await venue.reconciliation()
            except (aiohttp.ClientError, OSError, TimeoutError, KeyError, ValueError):
                self.unanswered += 1  # the ledger is down (a kill drill)
            else:
                self.polls += 1
                self.max_lag = max(self.max_lag, market["lag"] or 0)
                self.max_behind = max(self.max_behind, market["behind_seconds"] or 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


Fault = Callable[[Venue], Awaitable[None]]


async def survive(venue: Venue, name: str, fault: Fault) -> None:
    """Trade, inject `fault`, trade on, then check from the outside."""
    load = CrossingLoad(venue.matcher.target, venue.symbol)
    await venue.fund(load.accounts, base=10**9, quote=10**12)
    stop, watch = asyncio.Event(), Watch()
    tasks = [asyncio.create_task(load.run(stop)), asyncio.create_task(watch.run(venue, stop))]
    try:
        await asyncio.sleep(3)
        await fault(venue)
        fault_over = asyncio.get_running_loop().time()
        await asyncio.sleep(5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    # Lag 0 of a matcher sample taken before the last acknowledgements is not the end: the
    # ledger must have applied the last acknowledged seq (seen: one order short in the topic).
    last = max((ack.seq for ack in load.acked), default=0)

    async def settled() -> dict[str, Any] | None:
        market = await venue.reconciliation()
        caught_up = market["lag"] == 0 and (market["applied_seq"] or 0) >= last
        return market if caught_up and market["engine_seq"] else None

    market = await until(settled, "the lag back to 0", within=90)
    findings = await nothing_lost(venue, load)
    summary = {
        "fault": name,
        "sent": load.sent,
        "acked": len(load.acked),
        "acked_after_fault": load.acked_after(fault_over),
        "refused_by_mode": load.refused_by_mode,
        "unavailable": dict(load.failed),
        "rejected": dict(load.rejected),
        "trades": findings.trades,
        "max_lag": watch.max_lag,
        "max_behind_seconds": watch.max_behind,
        "latched": market["latched"],
    }
    print(json.dumps(summary), file=sys.stderr)
    assert findings.problems == ()
    assert await breaches(venue) == []
    assert not market["latched"] and not market["breach"] and market["reason_codes"] == []
    assert load.refused_by_mode == 0 and not load.rejected
    assert load.acked_after(fault_over) > 100  # trading goes on
    assert findings.trades > len(load.acked) // 3


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while loop.time() < deadline:
        with contextlib.suppress(aiohttp.ClientError, grpc.aio.AioRpcError, OSError, TimeoutError):
            last = await check()
            if last:
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not reached within {within:.0f}s (last: {last!r})")


async def test_ten_matcher_kills_some_kept_down_past_the_interval_do_not_latch(
    venue: Venue,
) -> None:
    async def kill_ten_times(venue: Venue) -> None:
        for n in range(10):
            venue.matcher.kill()
            if n % 3 == 2:
                await asyncio.sleep(2.5)  # down through two evaluations
            await asyncio.to_thread(venue.matcher.start)
            await asyncio.sleep(1.5)

    await survive(venue, "matcher kill -9 x10", kill_ten_times)


async def test_a_ledger_kill_does_not_latch_and_settles_nothing_twice(venue: Venue) -> None:
    async def kill_ledger(venue: Venue) -> None:
        venue.ledger.kill()
        await asyncio.to_thread(venue.ledger.start)

    await survive(venue, "ledger kill -9", kill_ledger)


def frozen(process: ManagedProcess, seconds: float) -> Fault:
    """SIGSTOP of every process of `process`'s group for `seconds`, then SIGCONT."""

    async def freeze(_: Venue) -> None:
        process.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            process.signal(signal.SIGCONT)

    return freeze


async def test_kafka_frozen_for_15_seconds_does_not_latch(venue: Venue, servers: Servers) -> None:
    await survive(venue, "Kafka SIGSTOP 15 s", frozen(Servers.process(servers.broker), 15))


async def test_postgresql_frozen_for_10_seconds_does_not_latch(
    venue: Venue, servers: Servers
) -> None:
    await survive(venue, "PostgreSQL SIGSTOP 10 s", frozen(Servers.process(servers.pg), 10))


async def test_a_matcher_whose_wal_lost_its_tail_refuses_to_serve_and_the_market_latches(
    venue: Venue,
) -> None:
    load = CrossingLoad(venue.matcher.target, venue.symbol)
    await venue.fund(load.accounts, base=10**9, quote=10**12)
    async with grpc.aio.insecure_channel(venue.matcher.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        for n in range(300):  # one by one: one WAL record each
            await load.place(stub, n)
    assert len(load.acked) == 300

    async def published() -> dict[str, Any] | None:
        market = await venue.reconciliation()
        settled = market["applied_seq"] or 0
        return market if settled >= max(ack.seq for ack in load.acked) else None

    before = await until(published, "everything settled")
    applied = before["applied_seq"]

    venue.matcher.kill()
    segments = sorted((venue.matcher.data_dir / "wal").glob("*.wal"))
    assert segments, list((venue.matcher.data_dir / "wal").iterdir())
    last = segments[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a torn, shorter log
    process = await asyncio.to_thread(venue.matcher.launch)

    async with grpc.aio.insecure_channel(venue.matcher.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)

        async def refusing() -> matcher_pb2.MatcherStatus | None:
            status = await stub.GetStatus(matcher_pb2.GetStatusRequest(), timeout=2)
            return status if status.refusal else None

        status = await until(refusing, "the restarted matcher's refusal")
        assert status.seq < applied <= status.last_published_seq and not status.leader
        assert f"ends at seq {status.seq} but seq {status.last_published_seq}" in status.refusal
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PlaceOrder(
                matcher_pb2.PlaceOrderRequest(symbol=venue.symbol, account="trader-0"), timeout=2
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (refused.value.details() or "").startswith("REFUSING: ")

    async def latched() -> dict[str, Any] | None:
        market = await venue.reconciliation()
        return market if market["latched"] else None

    market = await until(latched, "the latch")
    assert market["breach"] and "seq_regression" in market["reason_codes"]
    assert market["engine_refusal"] == status.refusal
    assert process.alive()  # kept for inspection, not crash-looping
    assert "refusing to serve" in process.log_tail(20)
