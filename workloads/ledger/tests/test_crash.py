"""kill -9 the ledger in the middle of a settlement transaction, restart it, and compare the
database with the event stream: no posting duplicated, none missing."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from e2e.bench import simulate
from e2e.env.ledger import LedgerProcess
from e2e.env.pytest_plugin import Schema
from workloads.ledger.tests.conftest import (
    applied_seq,
    balances,
    decode_all,
    engine_view,
    user_view,
    wait_for,
)
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.integration

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT", maker_fee_bps=10, taker_fee_bps=20)

# A settlement statement of the ledger's writer, running inside its transaction.
IN_BATCH = """
SELECT count(*) FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND state = 'active' AND xact_start IS NOT NULL
   AND (query LIKE 'COPY%postings%' OR query LIKE 'COPY%journal%'
        OR query LIKE '%UPDATE balances%' OR query LIKE '%market_holds%')
"""


async def test_kill_9_mid_batch_then_restart_loses_and_duplicates_nothing(
    run_dir: Path, pg_schema: Schema, kafka_bootstrap: str, kafka_topic: str
) -> None:
    accounts = [f"c{i}" for i in range(40)]
    sim = simulate.Simulator(SPEC)
    events = sim.start_epoch(1) + sim.run(simulate.funding(accounts, SPEC, 10**9))
    events += sim.run(list(simulate.random_commands(random.Random(4), accounts, 30_000)))
    await simulate.publish(kafka_bootstrap, kafka_topic, events, per_txn=500)
    final = sim.engine.seq

    ledger = LedgerProcess(
        run_dir / "crash",
        pg_schema.dsn,
        kafka_bootstrap,
        kafka_topic,
        markets="BTC-USDT",
        group_id=f"ledger-{kafka_topic}",
        extra_env={
            "LEDGER_BATCH_MAX_EVENTS": "400",
            "LEDGER_RECONCILIATION_ENABLED": "false",
            "LEDGER_INVARIANT_INTERVAL_MS": "0",
        },
    )
    watcher = await asyncpg.connect(pg_schema.dsn)
    ledger.start()
    try:

        async def mid_batch() -> bool:
            seq = await applied_seq(pg_schema.dsn, "BTC-USDT")
            return final * 0.15 < seq < final * 0.8 and bool(await watcher.fetchval(IN_BATCH))

        await wait_for(mid_batch, what="a settlement transaction in flight", within=60)
        ledger.kill()
        at_kill = await applied_seq(pg_schema.dsn, "BTC-USDT")
        assert 0 < at_kill < final
        # The transaction in flight is gone; what committed is consistent.
        assert not await watcher.fetchval(
            "SELECT count(*) FROM postings GROUP BY asset HAVING sum(amount) <> 0"
        )

        ledger.start()

        async def caught_up() -> bool:
            return await applied_seq(pg_schema.dsn, "BTC-USDT") == final

        await wait_for(caught_up, what="settlement after the restart", within=120)

        expected: Counter[tuple[str, str, str, str, int]] = Counter()
        for item in decode_all(events):
            if item.entry is not None:
                for owner, asset, bucket, amount in item.entry.postings:
                    expected[(item.event_id, owner, asset, bucket, amount)] += 1
        rows = await watcher.fetch(
            """SELECT j.reference, a.owner, p.asset, p.bucket, p.amount
                 FROM postings p JOIN journal j ON j.id = p.tx_id
                 JOIN accounts a ON a.id = p.account_id"""
        )
        written = Counter(
            (r["reference"], r["owner"], r["asset"], r["bucket"], r["amount"]) for r in rows
        )
        assert written == expected  # none missing, none twice
        references = [r["reference"] for r in await watcher.fetch("SELECT reference FROM journal")]
        assert len(references) == len(set(references)) == len({k[0] for k in expected})
        assert user_view(await balances(pg_schema.dsn)) == engine_view(sim)

        # Graceful shutdown: SIGTERM finishes the batch in flight and exits 0.
        assert ledger.process is not None and ledger.process.popen is not None
        ledger.process.popen.terminate()
        assert ledger.process.popen.wait(30) == 0
        assert '"msg": "stopped"' in ledger.process.log_tail(5)
    finally:
        ledger.stop()
        await watcher.close()
