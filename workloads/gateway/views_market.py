"""Public market data: trades and candles (recent from memory, older from the market history;
see `history.py`), the order book, the 24h ticker."""

from __future__ import annotations

import time

from aiohttp import web

from workloads.gateway.errors import ApiError, Code
from workloads.gateway.guard import policy
from workloads.gateway.history import FOREVER, candle_page, trade_page
from workloads.gateway.jsonio import json_response
from workloads.gateway.keys import CORE, HISTORY, PROJECTION, SETTINGS
from workloads.gateway.marketdata import MarketData
from workloads.history.queries import INTERVALS


def market_data(request: web.Request) -> MarketData:
    symbol = request.match_info["symbol"]
    data: MarketData | None = request.app[PROJECTION].data.get(symbol)
    if data is None:
        raise ApiError(Code.UNKNOWN_MARKET, f"unknown market {symbol!r}")
    return data


def bounded(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name, str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise ApiError(Code.VALIDATION_FAILED, f"{name} must be an integer in 1..{high}")
    return int(raw)


def millis(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 15:
        raise ApiError(Code.VALIDATION_FAILED, f"{name} must be epoch milliseconds")
    return int(raw)


def time_range(request: web.Request) -> tuple[int, int]:
    """`from` (inclusive) and `to` (exclusive; alias `before`) in epoch milliseconds."""
    start = millis(request, "from") or 0
    end = millis(request, "to")
    end = millis(request, "before") if end is None else end
    end = FOREVER * 1000 if end is None else end
    if start >= end:
        raise ApiError(Code.VALIDATION_FAILED, "from must be before to")
    return start, end


def cursor(request: web.Request) -> tuple[int, int] | None:
    raw = request.query.get("cursor")
    if raw is None:
        return None
    seq, _, index = raw.partition(".")
    if not (seq.isdigit() and index.isdigit() and len(raw) <= 32):
        raise ApiError(Code.VALIDATION_FAILED, "cursor is not one this API gave")
    return int(seq), int(index)


@policy("public")
async def trades(request: web.Request) -> web.Response:
    """Newest first; `from`/`to` bound the time, `cursor` (a page's `next_cursor`) pages on."""
    data = market_data(request)
    limit = bounded(request, "limit", 100, 1000)
    start, end = time_range(request)
    page = await trade_page(data, request.app[HISTORY], start, end, cursor(request), limit)
    last = page[-1] if len(page) == limit else None
    return json_response({
        "symbol": data.market.symbol, "sample": data.sample, "trades": page,
        "next_cursor": f"{last['seq']}.{last.get('index', 0)}" if last else None,
    })  # fmt: skip


@policy("public")
async def orderbook(request: web.Request) -> web.Response:
    data = market_data(request)
    depth = bounded(request, "depth", 50, 1000)
    symbol = data.market.symbol
    if not request.app[SETTINGS].kafka.brokers and symbol in request.app[CORE].markets:
        # No events topic: the book is the matcher's snapshot, as of its seq.
        snap = await request.app[CORE].of(symbol).book(depth)
        data.book.load(snap)
    return json_response({**data.book.snapshot(depth), "sample": data.sample})


@policy("public")
async def candles(request: web.Request) -> web.Response:
    """The newest `limit` candles of `interval` whose open time is in [from, to), oldest first."""
    data = market_data(request)
    limit = bounded(request, "limit", 100, 1500)
    interval = request.query.get("interval", "1m")
    if interval not in INTERVALS:
        raise ApiError(Code.VALIDATION_FAILED, f"interval must be one of {', '.join(INTERVALS)}")
    start, end = time_range(request)
    start_s, end_s = -(-start // 1000), -(-end // 1000)
    items = await candle_page(data, request.app[HISTORY], interval, start_s, end_s, limit,
                              int(time.time()))  # fmt: skip
    return json_response(
        {"symbol": data.market.symbol, "interval": interval, "sample": data.sample,
         "candles": items}
    )  # fmt: skip


@policy("public")
async def ticker(request: web.Request) -> web.Response:
    data = market_data(request)
    return json_response({**data.candles.ticker(int(time.time() * 1000)), "sample": data.sample})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/markets/{symbol}/trades", trades)
    router.add_get("/v1/markets/{symbol}/orderbook", orderbook)
    router.add_get("/v1/markets/{symbol}/candles", candles)
    router.add_get("/v1/markets/{symbol}/ticker", ticker)
