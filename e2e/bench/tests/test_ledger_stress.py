"""Exactly once under fire: one trade injected 10,000 times by 64 concurrent HTTP workers
while 10,000 copies of it arrive through Kafka, into a real ledger process."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.bench import ledger_stress as stress
from e2e.env.ledger import LedgerProcess
from e2e.env.pytest_plugin import Schema

pytestmark = pytest.mark.integration


async def test_one_trade_10000_times_by_64_workers_and_through_kafka_settles_once(
    run_dir: Path, pg_schema: Schema, kafka_bootstrap: str, kafka_topic: str
) -> None:
    ledger = LedgerProcess(
        run_dir / "exactly-once",
        pg_schema.dsn,
        kafka_bootstrap,
        kafka_topic,
        markets="STRESS-USD",
        group_id=f"ledger-{kafka_topic}",
        admin_tokens="stress:stress-token",
        extra_env={"LEDGER_RECONCILIATION_ENABLED": "false", "LEDGER_INVARIANT_INTERVAL_MS": "0"},
    )
    ledger.start()
    try:
        target = stress.Target(
            ledger.url, pg_schema.dsn, "stress-token", "STRESS-USD", kafka_bootstrap, kafka_topic
        )
        result = await stress.run(target, repeats=10_000, concurrency=64, kafka_repeats=10_000)
    finally:
        ledger.stop()
    assert result["errors"] == 0
    assert result["trade_transactions"] == 1
    assert result["applied"] <= 1 and result["applied"] + result["duplicates"] == 10_000
    assert result["balances_single_settlement"]
    assert result["exactly_once"], result
