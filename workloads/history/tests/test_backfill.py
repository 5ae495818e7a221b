"""Backfill from the ledger: a real matcher and ledger settle a crossing load; an empty
ClickHouse is filled from the ledger's trades alone, with the prices, quantities, quote
amounts, seqs and trade ids the matcher published; a second run writes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from e2e.drills.load import CrossingLoad
from e2e.drills.venue import Venue
from e2e.drills.verify import read_topic
from e2e.env.clickhouse import ClickHouseServer
from e2e.env.pytest_plugin import Schema, unique_name
from workloads.history.store import HistoryStore

pytestmark = pytest.mark.integration


def backfill_cli(url: str, dsn: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-m", "workloads.history", "backfill", "--ledger-dsn", dsn,
         "--symbol", "BTC-USDT", "--lot-size", "1"],  # the test venue matcher's spec
        env={**os.environ, "HISTORY_CLICKHOUSE_URL": url},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(done.stdout)
    return result


async def test_the_history_is_filled_from_the_ledgers_trades_once(
    run_dir: Path, pg_schema: Schema, kafka_bootstrap: str, clickhouse_server: ClickHouseServer
) -> None:
    topic = unique_name("backfill")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    await admin.close()
    venue = Venue(run_dir / topic, pg_schema.dsn, kafka_bootstrap, topic)
    await asyncio.to_thread(venue.start)
    try:
        load = CrossingLoad(venue.matcher.target, venue.symbol, traders=4, rate=80)
        await venue.fund(load.accounts)
        await load.run_for(3)
        await asyncio.sleep(1)  # the outbox's last transaction
        for _ in range(200):  # the ledger has settled everything the matcher published
            if (await venue.reconciliation()).get("lag") == 0:
                break
            await asyncio.sleep(0.1)
        published = [e.trade_executed for e in await read_topic(kafka_bootstrap, topic)
                     if e.WhichOneof("body") == "trade_executed"]  # fmt: skip
        assert len(published) > 50
    finally:
        await asyncio.to_thread(venue.stop)

    url = clickhouse_server.create_database(topic.replace("-", "_"))
    assert await asyncio.to_thread(backfill_cli, url, pg_schema.dsn) == {
        "symbol": "BTC-USDT", "settled": len(published), "written": len(published)}  # fmt: skip
    store = HistoryStore(url)
    await store.open()
    try:
        rows = await store.execute(
            "SELECT seq, idx, trade_id, price, quantity, quote_amount, ts_ns FROM trades FINAL "
            "ORDER BY seq, idx"
        )
        expected = [
            (t.envelope.seq, int(t.envelope.event_id.rsplit(":", 1)[-1]), t.trade_id, t.price,
             t.quantity, t.quote_amount, t.envelope.occurred_at)
            for t in published
        ]  # fmt: skip
        assert [tuple(r) for r in rows] == expected
        candles = await store.execute("SELECT sum(trades) FROM candles_1m FINAL")
        assert int(candles[0][0]) == len(published)
    finally:
        await store.close()
    again = await asyncio.to_thread(backfill_cli, url, pg_schema.dsn)
    assert again["written"] == 0
