"""The ledger, read for a trader's own fills: the book of record, not this replica's memory.

`GET /v1/admin/accounts/{account}/trades` on the ledger (EDGE_LEDGER_URL) with the gateway's
admin token (EDGE_LEDGER_ADMIN_TOKEN) gives each settled trade with its postings; `fill_json`
turns one into the trader's fill (`workloads/common/booked.py` reads the postings). What the
ledger does not hold is never shown: a fill appears once it is settled.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from workloads.common.booked import booked_trade
from workloads.gateway.errors import ApiError, Code
from workloads.gateway.markets import Market

log = logging.getLogger("workloads.gateway.ledger")


class LedgerReader:
    def __init__(self, url: str, token: str, timeout: float = 5.0) -> None:
        self.url = url
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def account_trades(self, account: str, params: dict[str, str]) -> dict[str, Any]:
        """The ledger's page of `account`'s trades (params: symbol, from, to, before, limit)."""
        if not self.url:
            raise ApiError(Code.LEDGER_UNAVAILABLE, "this gateway has no ledger to read fills from")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.get(
                f"{self.url}/v1/admin/accounts/{account}/trades",
                params=params,
                headers={"X-Admin-Token": self.token},
            ) as answer:
                body: dict[str, Any] = await answer.json(content_type=None)
                if answer.status == 200:
                    return body
                why = f"HTTP {answer.status} {body.get('code')}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        log.warning("ledger read failed", extra={"why": why[:300]})
        raise ApiError(Code.LEDGER_UNAVAILABLE, "the ledger is unavailable; try again")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def fill_json(
    market: Market, account: str, trade: dict[str, Any], orders: dict[str, str]
) -> dict[str, Any]:
    """A settled trade as `account`'s fill. The taker's order is the one its command placed
    (`<symbol>:<seq>`); the maker's comes from `orders` (trade id -> order id, this replica's
    cache), else it is null, as is the liquidity when the ledger has no taker for the trade."""
    postings = [(p["account"], p["asset"], p["bucket"], int(p["amount"]))
                for p in trade["postings"]]  # fmt: skip
    booked = booked_trade(market.base_asset, market.quote_asset, postings)
    buyer = booked.buyer == account
    taker = trade.get("taker")
    liquidity = None if taker is None else "TAKER" if taker == account else "MAKER"
    order_id = (
        f"{market.symbol}:{trade['seq']}" if liquidity == "TAKER" else orders.get(trade["trade_id"])
    )
    fee_asset = market.base_asset if buyer else market.quote_asset
    return {
        "trade_id": trade["trade_id"],
        "order_id": order_id,
        "symbol": market.symbol,
        "side": "BUY" if buyer else "SELL",
        "liquidity": liquidity,
        "price": market.format_price(booked.price(market.lot_size)),
        "quantity": market.format_quantity(booked.quantity),
        "quote_amount": market.format_amount(market.quote_asset, booked.quote_amount),
        "fee": market.format_amount(fee_asset, booked.buyer_fee if buyer else booked.seller_fee),
        "fee_asset": fee_asset,
        "seq": trade["seq"],
        "time": trade["occurred_at"] // 1_000_000,
    }
