"""Ledger benchmarks (`make bench BENCH=ledger`).

ledger.settle: a real ledger process settles a backlog from Kafka into PostgreSQL (fsync on,
`synchronous_commit=on`). The backlog is what a matcher publishes for a trade-heavy market,
made by the real engine: makers rest large orders, takers hit them with small IOC orders,
so every trade comes with its taker's OrderAccepted (2 events, about 8 postings per trade),
in outbox-like Kafka transactions. Timed from the first settlement transaction to the last
commit; `trades_per_s` counts trades settled exactly once (checked: one journal transaction
per trade id, nothing else).

ledger.dedup: the exactly-once stress (`e2e.bench.ledger_stress`): one trade injected over
HTTP by 64 concurrent workers into a real ledger process; `applied` must be 1.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from e2e.bench import ledger_stress as stress
from e2e.bench import simulate
from e2e.env import kafka, paths, postgres
from e2e.env.ledger import LedgerProcess
from e2e.env.process import free_port
from workloads.matcher.spec import MarketSpec

SETTLE_TRADES = 100_000
DEDUP_REPEATS = 20_000


def settle(durable: bool = True) -> dict[str, object]:
    spec = MarketSpec("BENCH-USD", "BENCH", "USD", maker_fee_bps=10, taker_fee_bps=20,
                      max_open_orders=100_000)  # fmt: skip
    events = simulate.trade_heavy(spec, makers=50, takers=2000, trades=SETTLE_TRADES)
    trades = sum(1 for ev in events if ev.WhichOneof("body") == "trade_executed")
    final = events[-1].trade_executed.envelope.seq if trades else 0
    run_dir = paths.new_run_dir("ledger-bench-")
    parts: list[Any] = []
    try:
        pg = postgres.PostgresServer(run_dir, free_port(), durable=durable)
        parts.append(pg)
        pg.start()
        broker = kafka.KafkaBroker(run_dir, free_port(), free_port())
        parts.append(broker)
        broker.start()
        asyncio.run(kafka.ensure_topic(broker.bootstrap, "core.events.v1"))
        asyncio.run(simulate.publish(broker.bootstrap, "core.events.v1", events, per_txn=2000))
        ledger = LedgerProcess(
            Path(run_dir), pg.dsn, broker.bootstrap, "core.events.v1", markets="BENCH-USD",
            extra_env={"LEDGER_RECONCILIATION_ENABLED": "false",
                       "LEDGER_INVARIANT_INTERVAL_MS": "0", "LOG_LEVEL": "WARNING"},
        )  # fmt: skip
        parts.append(ledger)
        ledger.start()
        result = asyncio.run(_measure(pg.dsn, final))
    finally:
        for part in reversed(parts):
            part.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    seconds = result["seconds"]
    return {
        "trades": trades,
        "events": len(events),
        "postings": result["postings"],
        "seconds": round(seconds, 2),
        "trades_per_s": round(trades / seconds),
        "events_per_s": round(len(events) / seconds),
        "postings_per_s": round(result["postings"] / seconds),
        "exactly_once": result["trade_transactions"] == trades and result["duplicates"] == 0,
        "target_trades_per_s": 20_000,
    }


async def _measure(dsn: str, final: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            applied = await conn.fetchval("SELECT coalesce(max(applied_seq), 0) FROM market_state")
            if applied >= final:
                done = await conn.fetchval("SELECT clock_timestamp()")
                break
            await asyncio.sleep(0.02)
        first = await conn.fetchval("SELECT min(recorded_at) FROM journal")
        return {
            "seconds": (done - first).total_seconds(),
            "postings": await conn.fetchval("SELECT count(*) FROM postings"),
            "trade_transactions": await conn.fetchval(
                "SELECT count(DISTINCT trade_id) FROM journal WHERE kind = 'trade'"
            ),
            "duplicates": await conn.fetchval(
                "SELECT count(*) - count(DISTINCT reference) FROM journal"
            ),
        }
    finally:
        await conn.close()


def dedup() -> dict[str, object]:
    result = stress.standalone(DEDUP_REPEATS, 64, 0, "STRESS-USD")
    return {
        "injections": result["repeats"],
        "concurrency": result["concurrency"],
        "applied": result["applied"],
        "duplicates": result["duplicates"],
        "errors": result["errors"],
        "trade_transactions": result["trade_transactions"],
        "injections_per_s": result["injections_per_s"],
        "seconds": result["seconds"],
        "note": "HTTP client shares the 2 cores with the ledger and PostgreSQL",
    }


BENCHMARKS: dict[str, Callable[[], dict[str, object]]] = {
    "ledger.settle": settle,
    "ledger.dedup": dedup,
}
