"""Public market data: trades and candles (recent from memory, older from the market history;
see `history.py`), the order book, the 24h ticker."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from contracts.v1 import common_pb2
from workloads.gateway.errors import ApiError, Code
from workloads.gateway.guard import policy
from workloads.gateway.history import candle_page, trade_page
from workloads.gateway.jsonio import json_response
from workloads.gateway.keys import CORE, HISTORY, PROJECTION, SETTINGS
from workloads.gateway.marketdata import MarketData
from workloads.gateway.markets import Market
from workloads.gateway.queryargs import bounded, time_range
from workloads.history.queries import INTERVALS


def market_data(request: web.Request) -> MarketData:
    symbol = request.match_info["symbol"]
    data: MarketData | None = request.app[PROJECTION].data.get(symbol)
    if data is None:
        raise ApiError(Code.UNKNOWN_MARKET, f"unknown market {symbol!r}")
    return data


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


def mode_name(mode: int) -> str:
    """`SYMBOL_MODE_CANCEL_ONLY` -> `CANCEL_ONLY`."""
    name = common_pb2.SymbolMode.Name(common_pb2.SymbolMode.ValueType(mode))
    return name.removeprefix("SYMBOL_MODE_")


def price_band(market: Market, last: int) -> dict[str, str] | None:
    """The limit prices the matcher's band admits around the last trade's price (per-lot
    units), whole ticks inside it: low rounded up, high rounded down."""
    bps, tick = market.price_band_bps, market.tick_size
    if not bps or not last:
        return None
    low = -(-last * (10_000 - bps) // 10_000)
    high = min(last * (10_000 + bps) // 10_000, market.max_price)
    return {
        "low": market.format_price(max(tick, -(-low // tick) * tick)),
        "high": market.format_price(high // tick * tick),
    }


def market_json(data: MarketData) -> dict[str, Any]:
    m = data.market
    last = data.trades[-1]["price"] if data.trades else None
    return {
        "symbol": m.symbol,
        "base_asset": m.base_asset,
        "quote_asset": m.quote_asset,
        "base_decimals": m.base_decimals,
        "quote_decimals": m.quote_decimals,
        "tick_size": m.format_price(m.tick_size),
        "lot_size": m.format_quantity(m.lot_size),
        "min_price": m.format_price(m.tick_size),
        "max_price": m.format_price(m.max_price),
        "min_quantity": m.format_quantity(m.lot_size),
        "max_quantity": m.format_quantity(m.max_lots * m.lot_size),
        "price_band_bps": m.price_band_bps,
        "price_band": price_band(m, m.price_units(last)) if last is not None else None,
        "mode": mode_name(data.mode),
        "last_price": last,
        "trading": m.live,
        "sample": data.sample,
    }


@policy("public")
async def markets(request: web.Request) -> web.Response:
    """The catalogue: what a client needs to round an order and to know whether it may trade."""
    projection = request.app[PROJECTION]
    return json_response({"markets": [market_json(d) for d in projection.data.values()]})


@policy("public")
async def server_time(request: web.Request) -> web.Response:
    """The gateway's clock, for a client's X-TS (signatures are refused beyond the skew)."""
    return json_response({"server_time": int(time.time() * 1000)})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/markets", markets)
    router.add_get("/v1/time", server_time)
    router.add_get("/v1/markets/{symbol}/trades", trades)
    router.add_get("/v1/markets/{symbol}/orderbook", orderbook)
    router.add_get("/v1/markets/{symbol}/candles", candles)
    router.add_get("/v1/markets/{symbol}/ticker", ticker)
