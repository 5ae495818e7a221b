"""History queries against a real ClickHouse: candles at every interval from the stored
one-minute candles agree exactly with the gateway's live one-minute candles of the same
trades, aggregated by the same buckets (a property test); trades page by cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e.env.clickhouse import ClickHouseServer
from e2e.env.pytest_plugin import unique_name
from workloads.gateway.candles import CandleSeries
from workloads.gateway.markets import Market
from workloads.history import queries
from workloads.history.queries import INTERVALS, CandleRow, aggregate, bucket_start
from workloads.history.store import HistoryStore, as_time

pytestmark = pytest.mark.integration

MARKET = Market("BTC-USDT", "BTC", "USDT")
START = 1_796_601_600  # Monday 2026-12-07 00:00 UTC


def test_buckets_start_where_clickhouse_starts_them() -> None:
    assert bucket_start(START + 3 * 86_400 + 5, "1w") == START  # Thursday -> that Monday
    assert bucket_start(START - 1, "1w") == START - 7 * 86_400
    assert bucket_start(START + 4 * 3_600 + 59, "4h") == START + 4 * 3_600
    assert datetime.fromtimestamp(START, tz=UTC).weekday() == 0


@pytest.fixture
async def store(clickhouse_server: ClickHouseServer) -> AsyncIterator[HistoryStore]:
    url = clickhouse_server.create_database(unique_name("queries").replace("-", "_"))
    opened = HistoryStore(url)
    await opened.open()
    await opened.migrate()
    yield opened
    await opened.close()


trade_lists = st.lists(
    st.tuples(
        st.integers(0, 9 * 24 * 60),  # minute of nine days
        st.integers(0, 59),  # second
        st.integers(1, 10**6),  # price
        st.integers(1, 10**4),  # quantity
    ),
    min_size=1,
    max_size=60,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(trades=trade_lists)
async def test_candles_at_every_interval_agree_with_the_gateways_live_candles(
    store: HistoryStore, trades: list[tuple[int, int, int, int]]
) -> None:
    symbol = unique_name("P").upper().replace("-", "")[:16] + "-USDT"
    series = CandleSeries(MARKET, keep_minutes=100_000)
    rows = []
    for seq, (minute, second, price, qty) in enumerate(sorted(trades), 1):
        ts_ns = (START + minute * 60 + second) * 1_000_000_000
        quote = price * qty // MARKET.lot_size
        series.add((seq, 0), ts_ns // 1_000_000, price, qty, quote)
        rows.append((symbol, as_time(ts_ns), ts_ns, seq, 0, f"{symbol}:{seq}", price, qty, quote,
                     1, 1))  # fmt: skip
    await store.insert_trades(rows)
    await store.insert_trades(rows[: len(rows) // 2])  # some delivered twice
    await store.recompute_candles({symbol: (rows[0][1], rows[-1][1])})
    live = [CandleRow(c.start // 1000, c.open, c.high, c.low, c.close, c.volume,
                      c.quote_volume, c.trades) for c in series.candles.values()]  # fmt: skip
    end = START + 10 * 86_400
    for interval in INTERVALS:
        stored = await queries.candles(store, symbol, interval, START - 7 * 86_400, end, 10_000)
        assert stored == aggregate(live, interval), interval


async def test_trades_page_newest_first_by_cursor(store: HistoryStore) -> None:
    symbol = "PAGE-USDT"
    rows = [
        (symbol, as_time(ts), ts, seq, idx, f"{symbol}:{seq}.{idx}", 100 + seq, 1, 1, 1, 1)
        for seq in range(1, 51)
        for idx in (0, 1)
        for ts in [(START + seq) * 1_000_000_000]
    ]
    await store.insert_trades(rows)
    await store.insert_trades(rows)  # redelivered: still once each
    start, end = START * 1_000_000_000, (START + 100) * 1_000_000_000
    seen, cursor = [], None
    while True:
        page = await queries.trades(store, symbol, start, end, cursor, 7)
        seen += [(t.seq, t.idx) for t in page]
        if len(page) < 7:
            break
        cursor = (page[-1].seq, page[-1].idx)
    assert seen == sorted(((seq, idx) for seq in range(1, 51) for idx in (0, 1)), reverse=True)
    window = await queries.trades(
        store, symbol, (START + 10) * 1_000_000_000, (START + 20) * 1_000_000_000, None, 100
    )
    assert [t.seq for t in window] == [s for s in range(19, 9, -1) for _ in (0, 1)]
