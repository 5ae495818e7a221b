"""Candles at every interval and trades by range: recent ones from the gateway's memory
(live, no seam with the WebSocket), older ones from the market history in ClickHouse
(`workloads/history`, EDGE_HISTORY_CLICKHOUSE_URL).

Where the two meet: memory is authoritative from the first whole bucket after its oldest
minute (a replica that started late, or after the topic's retention, may hold only part of
that minute); ClickHouse answers everything before it. A page that memory fills alone never
asks ClickHouse, so recent charts and trades answer while ClickHouse is down; an older range
then answers `history_unavailable` (503), never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from workloads.gateway.errors import ApiError, Code
from workloads.gateway.marketdata import MarketData
from workloads.history import queries
from workloads.history.queries import INTERVALS, CandleRow, aggregate, bucket_start
from workloads.history.store import HistoryStore

log = logging.getLogger(__name__)
FOREVER = 1 << 40
"""An end beyond any real time (epoch seconds)."""


class History:
    """The ClickHouse side, opened on first use and again after a failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: HistoryStore | None = None

    @property
    def configured(self) -> bool:
        return bool(self.url)

    async def _opened(self) -> HistoryStore:
        if self._store is None:
            store = HistoryStore(self.url)
            await store.open()
            self._store = store
        return self._store

    async def candles(
        self, symbol: str, interval: str, start: int, end: int, limit: int
    ) -> list[CandleRow]:
        try:
            return await queries.candles(await self._opened(), symbol, interval, start, end, limit)
        except Exception as exc:
            raise await self._unavailable(exc) from None

    async def trades(
        self, symbol: str, start_ns: int, end_ns: int, before: tuple[int, int] | None, limit: int
    ) -> list[queries.TradeRow]:
        try:
            return await queries.trades(
                await self._opened(), symbol, start_ns, end_ns, before, limit
            )
        except Exception as exc:
            raise await self._unavailable(exc) from None

    async def _unavailable(self, exc: Exception) -> ApiError:
        log.warning("history query failed", extra={"why": f"{type(exc).__name__}: {exc}"[:300]})
        await self.close()  # a fresh pool next time
        return ApiError(Code.HISTORY_UNAVAILABLE, "the market history is unavailable; "
                        "recent data still answers")  # fmt: skip

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                await store.close()
            except Exception:
                log.debug("closing the history pool failed")


def _live_minutes(data: MarketData) -> list[CandleRow]:
    return [
        CandleRow(c.start // 1000, c.open, c.high, c.low, c.close, c.volume, c.quote_volume,
                  c.trades)
        for c in data.candles.candles.values()
    ]  # fmt: skip


def _bucket_end(start: int, interval: str) -> int:
    return start + INTERVALS[interval]


def candle_json(data: MarketData, interval: str, row: CandleRow, now_s: int) -> dict[str, Any]:
    m = data.market
    end = _bucket_end(row.open_time, interval)
    return {
        "symbol": m.symbol,
        "interval": interval,
        "open_time": row.open_time * 1000,
        "close_time": end * 1000 - 1,
        "open": m.format_price(row.open),
        "high": m.format_price(row.high),
        "low": m.format_price(row.low),
        "close": m.format_price(row.close),
        "volume": m.format_quantity(row.volume),
        "quote_volume": m.format_amount(m.quote_asset, row.quote_volume),
        "trades": row.trades,
        "final": end <= now_s,
        "revision": 0,
    }


async def candle_page(
    data: MarketData,
    history: History,
    interval: str,
    start: int,
    end: int,
    limit: int,
    now_s: int,
) -> list[dict[str, Any]]:
    """The newest `limit` candles of buckets starting in [start, end) (epoch seconds)."""
    minutes = _live_minutes(data)
    if history.configured and minutes:
        split = bucket_start(minutes[0].open_time, interval) + INTERVALS[interval]
    elif history.configured:
        split = end  # nothing in memory: all of it is history
    else:
        split = 0  # memory only, as much as it has
    live = [c for c in aggregate((m for m in minutes if m.open_time >= split), interval)
            if start <= c.open_time < end]  # fmt: skip
    stored: list[CandleRow] = []
    if history.configured and len(live) < limit and start < split:
        first = bucket_start(start, interval)
        first = first if first == start else first + INTERVALS[interval]
        last = min(split, bucket_start(end - 1, interval) + INTERVALS[interval])
        if first < last:
            stored = await history.candles(data.market.symbol, interval, first, last, limit)
    rows = queries.merge_candles(stored, live, limit)
    if interval == "1m":
        by_start = data.candles.candles
        return [
            by_start[r.open_time * 1000].to_json(data.market)
            if r.open_time >= split and r.open_time * 1000 in by_start
            else candle_json(data, interval, r, now_s)
            for r in rows
        ]
    return [candle_json(data, interval, r, now_s) for r in rows]


def trade_json(data: MarketData, row: queries.TradeRow) -> dict[str, Any]:
    m = data.market
    return {
        "trade_id": row.trade_id,
        "symbol": m.symbol,
        "price": m.format_price(row.price),
        "quantity": m.format_quantity(row.quantity),
        "taker_side": "BUY" if row.taker_side == 1 else "SELL",
        "seq": row.seq,
        "index": row.idx,
        "time": row.ts_ns // 1_000_000,
    }


async def trade_page(
    data: MarketData,
    history: History,
    start_ms: int,
    end_ms: int,
    before: tuple[int, int] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Trades with `start_ms <= time < end_ms`, before the (seq, index) cursor, newest first."""
    live = list(data.trades)
    page = [
        t for t in reversed(live)
        if start_ms <= t["time"] < end_ms
        and (before is None or (t["seq"], t.get("index", 0)) < before)
    ][:limit]  # fmt: skip
    if len(page) < limit and history.configured:
        oldest = (live[0]["seq"], live[0].get("index", 0)) if live else None
        bounds = [c for c in (before, oldest) if c is not None]
        below = min(bounds) if bounds else None
        rows = await history.trades(data.market.symbol, start_ms * 1_000_000, end_ms * 1_000_000,
                                    below, limit - len(page))  # fmt: skip
        page += [trade_json(data, r) for r in rows]
    return page
