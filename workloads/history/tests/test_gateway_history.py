"""The gateway's trades and candles over more history than its memory holds: a real
history writer fills a real ClickHouse from the topic the gateway reads; candles at every
interval and trades paged by cursor come back whole and seamless (older ones from
ClickHouse, recent ones from memory); with ClickHouse gone, recent ranges still answer and
older ones answer `history_unavailable`."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from contracts.v1 import events_pb2
from e2e.bench import simulate
from e2e.env.clickhouse import ClickHouseServer
from e2e.env.gateway import GatewayProcess
from e2e.env.history import HistoryProcess
from e2e.env.pytest_plugin import Schema, unique_name
from workloads.gateway.candles import CandleSeries
from workloads.gateway.markets import Market, catalogue_json
from workloads.history.queries import INTERVALS, CandleRow, aggregate
from workloads.history.store import HistoryStore
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.integration

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT")
MARKET = Market("BTC-USDT", "BTC", "USDT")
ACCOUNTS = [f"acct-{i}" for i in range(4)]
MINUTES = 1_700  # more than the gateway keeps (1,500 one-minute candles, 1,000 trades)


def history_events() -> list[events_pb2.Event]:
    sim = simulate.Simulator(SPEC)
    rng = random.Random(21)
    events = sim.start_epoch(1) + sim.run(simulate.funding(ACCOUNTS, SPEC, 10**12))
    for _ in range(MINUTES):
        sim.ts += 60 * 10**9
        events += sim.run(list(simulate.random_commands(rng, ACCOUNTS, 6)))
    return events


def all_candles(events: list[events_pb2.Event]) -> list[CandleRow]:
    series = CandleSeries(MARKET, keep_minutes=10**6)
    for ev in events:
        if ev.WhichOneof("body") == "trade_executed":
            t = ev.trade_executed
            env = t.envelope
            series.add((env.seq, int(env.event_id.rsplit(":", 1)[-1])), env.occurred_at // 10**6,
                       t.price, t.quantity, t.quote_amount)  # fmt: skip
    return [CandleRow(c.start // 1000, c.open, c.high, c.low, c.close, c.volume, c.quote_volume,
                      c.trades) for c in series.candles.values()]  # fmt: skip


def as_rows(candles: list[dict[str, Any]]) -> list[CandleRow]:
    def minor(text: str, scale: int) -> int:
        whole, _, frac = text.partition(".")
        return int(whole + (frac + "0" * scale)[:scale])

    return [
        CandleRow(c["open_time"] // 1000, minor(c["open"], 2), minor(c["high"], 2),
                  minor(c["low"], 2), minor(c["close"], 2), minor(c["volume"], 8),
                  minor(c["quote_volume"], 6), c["trades"])
        for c in candles
    ]  # fmt: skip


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as answer:
        return answer.status, await answer.json()


async def test_candles_and_trades_beyond_memory_come_from_the_history_seamlessly(
    run_dir: Path, pg_schema: Schema, kafka_bootstrap: str, kafka_topic: str
) -> None:
    events = history_events()
    trades = [ev.trade_executed for ev in events if ev.WhichOneof("body") == "trade_executed"]
    assert len(trades) > 1_500
    await simulate.publish(kafka_bootstrap, kafka_topic, events, per_txn=2_000)
    clickhouse = ClickHouseServer(run_dir / unique_name("history-ch"))
    clickhouse.start()
    writer = HistoryProcess(run_dir / unique_name("history"), clickhouse.url, kafka_bootstrap,
                            kafka_topic)  # fmt: skip
    gateway = GatewayProcess(
        run_dir / unique_name("gateway"), pg_schema.dsn, catalogue_json((MARKET,)),
        kafka_bootstrap=kafka_bootstrap, events_topic=kafka_topic, schema=pg_schema.name,
        extra_env={"EDGE_HISTORY_CLICKHOUSE_URL": clickhouse.url, "EDGE_DISABLE_CORE": "true",
                   "EDGE_SEED_MARKET_DATA": "false", "EDGE_RATE_LIMIT_PER_MINUTE": "100000"},
    )  # fmt: skip
    store = HistoryStore(clickhouse.url)
    try:
        await asyncio.gather(asyncio.to_thread(writer.start), asyncio.to_thread(gateway.start))
        await store.open()
        for _ in range(600):
            stored = await store.execute("SELECT count() FROM trades FINAL")
            if int(stored[0][0]) == len(trades):
                break
            await asyncio.sleep(0.1)
        expected = all_candles(events)
        base = f"{gateway.url}/v1/markets/BTC-USDT"
        async with aiohttp.ClientSession() as http:
            for interval in INTERVALS:
                status, body = await get(http, f"{base}/candles?interval={interval}&limit=1500")
                assert status == 200, body
                assert as_rows(body["candles"]) == aggregate(expected, interval)[-1500:], interval
            # 1m candles older than memory holds, by `to`.
            oldest = expected[0].open_time * 1000
            status, body = await get(http, f"{base}/candles?interval=1m&from={oldest}"
                                           f"&to={oldest + 150 * 60_000}&limit=1000")  # fmt: skip
            window = [c for c in expected if c.open_time * 1000 < oldest + 150 * 60_000]
            assert (status, as_rows(body["candles"])) == (200, window)

            # Every trade once, newest first, across memory and ClickHouse.
            seen: list[str] = []
            url = f"{base}/trades?limit=700"
            while True:
                status, body = await get(http, url)
                assert status == 200, body
                seen += [t["trade_id"] for t in body["trades"]]
                if body["next_cursor"] is None:
                    break
                url = f"{base}/trades?limit=700&cursor={body['next_cursor']}"
            assert seen == [t.trade_id for t in reversed(trades)]

            # ClickHouse gone: what memory holds still answers; older ranges do not.
            clickhouse.stop()
            status, body = await get(http, f"{base}/candles?interval=1m&limit=100")
            assert status == 200 and len(body["candles"]) == 100
            status, body = await get(http, f"{base}/candles?interval=1d&limit=10")
            assert (status, body["code"]) == (503, "history_unavailable"), body
            status, body = await get(http, f"{base}/trades?limit=1000&cursor=1.0")
            assert status in (200, 503)
            status, body = await get(http, f"{base}/candles?interval=2h")
            assert (status, body["code"]) == (400, "validation_failed")
    finally:
        await store.close()
        gateway.stop()
        writer.stop()
        clickhouse.stop()
