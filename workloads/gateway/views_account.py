"""Balances and portfolio, from the balance projection of the events topic and the wallet at
the ledger; the trader's own fills from the ledger (the book of record)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from workloads.gateway.errors import ApiError, Code
from workloads.gateway.guard import policy, principal
from workloads.gateway.jsonio import json_response
from workloads.gateway.keys import LEDGER, PROJECTION
from workloads.gateway.ledger import fill_json
from workloads.gateway.queryargs import bounded, time_range
from workloads.gateway.wallet import wallet_market, with_wallet

MAX_FILLS_PAGE = 500


def as_of(request: web.Request) -> dict[str, int]:
    """Per market, the seq the balances reflect: the last event applied, or the matcher's
    snapshot when no event above it has come yet."""
    projection = request.app[PROJECTION]
    snapshots = projection.balances.snapshot_seq
    return {s: max(d.seq, snapshots.get(s, 0)) for s, d in projection.data.items() if not d.sample}


@policy("user")
async def balances(request: web.Request) -> web.Response:
    """Per asset: the wallet (the ledger's; null when it cannot be read), available and hold
    in the markets (the projection's, with the per-market split) and their total."""
    who = principal(request)
    projection = request.app[PROJECTION]
    rows = projection.balances.of(who.account)
    wallet = await request.app[LEDGER].wallet(who.account)
    rows = with_wallet(rows, wallet, projection.markets)
    return json_response({"account": who.account, "balances": rows, "as_of_seq": as_of(request)})


@policy("user")
async def portfolio(request: web.Request) -> web.Response:
    """Each asset valued in the quote asset of a market that trades it, at the last price:
    what the markets hold (available and hold) and the wallet (valued through
    `wallet_market`; left out, and `wallet_included` false, when the ledger cannot be read)."""
    who = principal(request)
    projection = request.app[PROJECTION]
    raw = projection.balances.raw(who.account)
    wallet = await request.app[LEDGER].wallet(who.account)
    holdings = [
        (projection.markets[symbol], asset, available + hold)
        for (symbol, asset), (available, hold) in sorted(raw.items())
    ]
    for asset, units in sorted((wallet or {}).items()):
        market = wallet_market(projection.markets, asset)
        if market is not None and units:
            holdings.append((market, asset, units))
    assets: dict[str, dict[str, Any]] = {}
    totals: dict[str, int] = {}
    for market, asset, amount in holdings:
        data = projection.data[market.symbol]
        entry = assets.setdefault(asset, {"asset": asset, "units": 0, "market": market})
        entry["units"] += amount
        if asset == market.quote_asset:
            value, currency, price = amount, market.quote_asset, None
        else:
            last = data.trades[-1] if data.trades else None
            if last is None:
                continue
            price_units = market.price_units(last["price"])
            value = amount * price_units // market.lot_size
            currency, price = market.quote_asset, last["price"]
        entry.setdefault("values", {}).setdefault(currency, 0)
        entry["values"][currency] += value
        entry["price"] = price
        totals[currency] = totals.get(currency, 0) + value
    out = []
    markets = projection.markets
    for asset, entry in sorted(assets.items()):
        market = entry["market"]
        out.append(
            {
                "asset": asset,
                "total": market.format_amount(asset, entry["units"]),
                "price": entry.get("price"),
                "values": {
                    cur: _fmt(markets, cur, v) for cur, v in sorted(entry.get("values", {}).items())
                },
            }
        )
    return json_response(
        {
            "account": who.account,
            "assets": out,
            "totals": {cur: _fmt(markets, cur, v) for cur, v in sorted(totals.items())},
            "wallet_included": wallet is not None,
            "as_of_seq": as_of(request),
        }
    )


def _fmt(markets: dict[str, Any], asset: str, units: int) -> str:
    for market in markets.values():
        if asset in (market.base_asset, market.quote_asset):
            return str(market.format_amount(asset, units))
    return str(units)


@policy("user")
async def account_trades(request: web.Request) -> web.Response:
    """The caller's fills, newest first, as the ledger settled them (`from`/`to` epoch ms;
    `cursor`: a page's `next_cursor`)."""
    who = principal(request)
    projection = request.app[PROJECTION]
    params = {"limit": str(bounded(request, "limit", 100, MAX_FILLS_PAGE))}
    symbol = request.query.get("symbol")
    if symbol is not None:
        if symbol not in projection.markets:
            raise ApiError(Code.UNKNOWN_MARKET, f"unknown market {symbol!r}")
        params["symbol"] = symbol
    start, end = time_range(request)
    params["from"], params["to"] = str(start), str(min(end, MAX_LEDGER_MS))
    cursor = request.query.get("cursor")
    if cursor is not None:
        if not cursor.isdigit() or len(cursor) > 19 or int(cursor) < 1:
            raise ApiError(Code.VALIDATION_FAILED, "cursor is not one this API gave")
        params["before"] = cursor
    page = await request.app[LEDGER].account_trades(who.account, params)
    orders = projection.orders.fill_orders(who.account)
    fills = [
        fill_json(projection.markets[t["symbol"]], who.account, t, orders)
        for t in page["trades"]
        if t["symbol"] in projection.markets
    ]
    following = page.get("next_before")
    return json_response(
        {"trades": fills, "next_cursor": str(following) if following is not None else None}
    )


MAX_LEDGER_MS = 1 << 43
"""The ledger's bound on epoch milliseconds."""


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/account/trades", account_trades)
    router.add_get("/v1/account/balances", balances)
    router.add_get("/v1/account/portfolio", portfolio)
