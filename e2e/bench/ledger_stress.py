"""`python -m e2e.bench.ledger_stress`: the seed's exactly_once_stress.sh, in Python.

The same trade is injected REPEATS times by CONCURRENCY concurrent workers through the HTTP
path (`POST /v1/internal/trades/executed`) and, with KAFKA_REPEATS > 0, that many more
copies are published to the events topic for the settlement consumer, at the same time.
It then checks that the ledger applied it exactly once (`applied: true` in exactly one
reply, one journal transaction for the trade id) and that the balances show one settlement.

    REPEATS=1000000 CONCURRENCY=64 python -m e2e.bench.ledger_stress

Without LEDGER_URL it brings its own PostgreSQL (and Kafka, when KAFKA_REPEATS > 0) and a
ledger process, on free 127.0.0.1 ports, and stops them at the end. With LEDGER_URL and
LEDGER_DB_DSN it runs against that ledger, whose LEDGER_MARKETS must list STRESS_SYMBOL
(default STRESS-USD: a market no matcher feeds), and LEDGER_ADMIN_TOKEN must be a token.
Prints one JSON line; exits 1 if exactly-once did not hold.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from google.protobuf import json_format

from contracts.v1 import events_pb2
from e2e.bench import simulate
from workloads.ledger import rules
from workloads.ledger.applier import Applier
from workloads.matcher import engine as e
from workloads.matcher.spec import MarketSpec


@dataclass(frozen=True)
class Target:
    url: str
    dsn: str
    token: str
    symbol: str
    kafka_bootstrap: str = ""
    topic: str = ""


@dataclass(frozen=True)
class Seeded:
    trade: events_pb2.Event
    expected: dict[tuple[str, str], tuple[int, int]]


async def seed(target: Target) -> Seeded:
    """Fund a buyer and a seller, rest the seller's order, accept the buyer's: everything up
    to the trade, through the settlement path itself. Returns the trade event (not applied)."""
    base, _, quote = target.symbol.partition("-")
    spec = MarketSpec(target.symbol, base, quote, maker_fee_bps=10, taker_fee_bps=20)
    run = uuid.uuid4().hex[:8]
    buyer, seller = f"buyer-{run}", f"seller-{run}"
    sim = simulate.Simulator(spec)
    conn = await asyncpg.connect(target.dsn)
    try:
        applied = await conn.fetchval(
            "SELECT applied_seq FROM market_state WHERE market = $1", target.symbol
        )
    finally:
        await conn.close()
    sim.engine.seq = applied or 0  # continue the market's stream where the ledger is
    events = sim.start_epoch(1) + sim.run(simulate.funding([buyer, seller], spec, 10**9))
    events += sim.run([(e.C_PLACE, seller, "s", e.SELL, e.LIMIT, e.GTC, 1000, 50, False, 0)])
    taker = sim.run([(e.C_PLACE, buyer, "b", e.BUY, e.LIMIT, e.GTC, 1010, 50, False, 0)])
    accepted, trade = taker
    assert trade.WhichOneof("body") == "trade_executed"
    applier = Applier(target.dsn, "fees")
    await applier.start()
    try:
        await applier.submit([rules.decode(ev.SerializeToString(), "fees") for ev in events])
        await applier.submit([rules.decode(accepted.SerializeToString(), "fees")])
    finally:
        await applier.stop()
    expected = {k: v for k, v in sim.balances().items() if k[0] in (buyer, seller)}
    return Seeded(trade, expected)


async def inject(
    target: Target, trade: events_pb2.Event, repeats: int, concurrency: int
) -> dict[str, int]:
    body = json.dumps(
        json_format.MessageToDict(trade.trade_executed, preserving_proto_field_name=True)
    ).encode()
    headers = {"Content-Type": "application/json", "X-Admin-Token": target.token}
    counts = {"applied": 0, "duplicate": 0, "other": 0}
    remaining = repeats
    url = f"{target.url}/v1/internal/trades/executed"

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, data=body, headers=headers) as response:
                reply = await response.json()
            if response.status == 200 and reply.get("applied") is True:
                counts["applied"] += 1
            elif response.status == 200 and reply.get("outcome") == "duplicate":
                counts["duplicate"] += 1
            else:
                counts["other"] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return counts


async def publish(target: Target, trade: events_pb2.Event, copies: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=target.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        value = trade.SerializeToString()
        key = target.symbol.encode()
        for start in range(0, copies, 1000):
            batch = [
                await producer.send(target.topic, value, key=key)
                for _ in range(min(1000, copies - start))
            ]
            await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def verify(target: Target, seeded: Seeded) -> dict[str, Any]:
    conn = await asyncpg.connect(target.dsn)
    try:
        trade = seeded.trade.trade_executed
        transactions = await conn.fetchval(
            "SELECT count(*) FROM journal WHERE market = $1 AND trade_id = $2",
            target.symbol,
            trade.trade_id,
        )
        rows = await conn.fetch(
            """SELECT a.owner, a.asset, b.available, b.hold FROM balances b
                 JOIN accounts a ON a.id = b.account_id WHERE a.owner = ANY($1::text[])""",
            list({k[0] for k in seeded.expected}),
        )
    finally:
        await conn.close()
    balances = {(r["owner"], r["asset"]): (r["available"], r["hold"]) for r in rows}
    return {"transactions": transactions, "balances_ok": balances == seeded.expected}


async def run(target: Target, repeats: int, concurrency: int, kafka_repeats: int) -> dict[str, Any]:
    seeded = await seed(target)
    started = time.perf_counter()
    jobs: list[Any] = [inject(target, seeded.trade, repeats, concurrency)]
    if kafka_repeats:
        jobs.append(publish(target, seeded.trade, kafka_repeats))
    counts = (await asyncio.gather(*jobs))[0]
    seconds = time.perf_counter() - started
    if kafka_repeats:
        await consumed(target, kafka_repeats)
    checked = await verify(target, seeded)
    # With Kafka copies racing, the consumer may be the one that applies it (then no HTTP
    # reply says applied); either way exactly one transaction and one settlement.
    ok = (
        checked["transactions"] == 1
        and counts["applied"] <= 1
        and (counts["applied"] == 1 or kafka_repeats > 0)
        and counts["other"] == 0
        and checked["balances_ok"]
    )
    return {
        "repeats": repeats,
        "concurrency": concurrency,
        "kafka_repeats": kafka_repeats,
        "applied": counts["applied"],
        "duplicates": counts["duplicate"],
        "errors": counts["other"],
        "trade_transactions": checked["transactions"],
        "balances_single_settlement": checked["balances_ok"],
        "seconds": round(seconds, 2),
        "injections_per_s": round(repeats / seconds),
        "exactly_once": ok,
    }


async def consumed(target: Target, copies: int, within: float = 300) -> None:
    """Wait until the consumer has committed past every published copy."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(
                f"{target.url}/v1/admin/consumers/settlement/status",
                headers={"X-Admin-Token": target.token},
            ) as response:
                status = await response.json()
            parts = status.get("partitions") or []
            if parts and all(p["lag"] == 0 for p in parts) and status["events"] >= copies:
                return
            await asyncio.sleep(0.1)
    raise TimeoutError("the settlement consumer did not catch up")


def main() -> None:
    env = os.environ
    repeats = int(env.get("REPEATS", "10000"))
    concurrency = int(env.get("CONCURRENCY", "64"))
    kafka_repeats = int(env.get("KAFKA_REPEATS", "0"))
    symbol = env.get("STRESS_SYMBOL", "STRESS-USD")
    if env.get("LEDGER_URL"):
        target = Target(
            env["LEDGER_URL"], env["LEDGER_DB_DSN"], env.get("LEDGER_ADMIN_TOKEN", ""), symbol
        )
        result = asyncio.run(run(target, repeats, concurrency, 0))
    else:
        result = standalone(repeats, concurrency, kafka_repeats, symbol)
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["exactly_once"] else 1)


def standalone(repeats: int, concurrency: int, kafka_repeats: int, symbol: str) -> dict[str, Any]:
    """Run against a PostgreSQL (and Kafka) and a ledger process of our own."""
    import shutil

    from e2e.env import kafka, paths, postgres
    from e2e.env.ledger import LedgerProcess
    from e2e.env.process import free_port

    run_dir = paths.new_run_dir("ledger-stress-")
    parts: list[Any] = []
    try:
        pg = postgres.PostgresServer(run_dir, free_port(), durable=True)
        parts.append(pg)
        pg.start()
        bootstrap, topic = "", "core.events.v1"
        if kafka_repeats:
            broker = kafka.KafkaBroker(run_dir, free_port(), free_port())
            parts.append(broker)
            broker.start()
            bootstrap = broker.bootstrap
            asyncio.run(kafka.ensure_topic(bootstrap, topic))
        quiet = {"LEDGER_RECONCILIATION_ENABLED": "false", "LEDGER_INVARIANT_INTERVAL_MS": "0"}
        ledger = LedgerProcess(
            Path(run_dir), pg.dsn, bootstrap, topic, markets=symbol,
            admin_tokens="stress:stress-token", extra_env=quiet,
        )  # fmt: skip
        parts.append(ledger)
        ledger.start()
        target = Target(ledger.url, pg.dsn, "stress-token", symbol, bootstrap, topic)
        return asyncio.run(run(target, repeats, concurrency, kafka_repeats))
    finally:
        for part in reversed(parts):
            part.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
