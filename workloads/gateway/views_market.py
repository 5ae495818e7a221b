"""Public market data: recent trades, the order book, 1-minute candles, the 24h ticker."""

from __future__ import annotations

import time

from aiohttp import web

from workloads.gateway.errors import ApiError, Code
from workloads.gateway.guard import policy
from workloads.gateway.jsonio import json_response
from workloads.gateway.keys import CORE, PROJECTION, SETTINGS
from workloads.gateway.marketdata import MarketData


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


@policy("public")
async def trades(request: web.Request) -> web.Response:
    data = market_data(request)
    limit = bounded(request, "limit", 100, 1000)
    recent = list(data.trades)[-limit:]
    recent.reverse()
    return json_response({"symbol": data.market.symbol, "sample": data.sample, "trades": recent})


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
    data = market_data(request)
    limit = bounded(request, "limit", 100, 1500)
    interval = request.query.get("interval", "1m")
    if interval != "1m":
        raise ApiError(Code.VALIDATION_FAILED, "interval: only 1m")
    before = request.query.get("before")
    if before is not None and not before.isdigit():
        raise ApiError(Code.VALIDATION_FAILED, "before must be epoch milliseconds")
    items = data.candles.recent(limit, int(before) if before else None)
    return json_response(
        {
            "symbol": data.market.symbol,
            "interval": "1m",
            "sample": data.sample,
            "candles": [c.to_json(data.market) for c in items],
        }
    )


@policy("public")
async def ticker(request: web.Request) -> web.Response:
    data = market_data(request)
    return json_response({**data.candles.ticker(int(time.time() * 1000)), "sample": data.sample})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/markets/{symbol}/trades", trades)
    router.add_get("/v1/markets/{symbol}/orderbook", orderbook)
    router.add_get("/v1/markets/{symbol}/candles", candles)
    router.add_get("/v1/markets/{symbol}/ticker", ticker)
