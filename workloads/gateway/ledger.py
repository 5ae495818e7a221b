"""The ledger (the book of record, not this replica's memory): a trader's own fills, wallet
and transfers, through its admin API.

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
    """The ledger's admin API with the gateway's token. `_call` answers what the ledger said
    (a JSON object below 500); anything else (no ledger configured, unreachable, a 5xx, our
    token refused, not JSON) is 503 `ledger_unavailable`, logged."""

    def __init__(self, url: str, token: str, timeout: float = 5.0) -> None:
        self.url = url
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> tuple[int, dict[str, Any]]:
        if not self.url:
            raise ApiError(Code.LEDGER_UNAVAILABLE, "this gateway has no ledger to ask")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.request(
                method,
                f"{self.url}{path}",
                params=params,
                json=body,
                headers={"X-Admin-Token": self.token},
                timeout=aiohttp.ClientTimeout(total=seconds) if seconds else self.timeout,
            ) as answer:
                found = await answer.json(content_type=None)
                if (
                    answer.status < 500
                    and answer.status not in (401, 403)
                    and isinstance(found, dict)
                ):
                    return answer.status, found
                why = f"HTTP {answer.status} {str(found)[:200]}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        log.warning("ledger call failed", extra={"path": path, "why": why[:300]})
        raise ApiError(Code.LEDGER_UNAVAILABLE, "the ledger is unavailable; try again")

    async def account_trades(self, account: str, params: dict[str, str]) -> dict[str, Any]:
        """The ledger's page of `account`'s trades (params: symbol, from, to, before, limit)."""
        status, body = await self._call(
            "GET", f"/v1/admin/accounts/{account}/trades", params=params
        )
        if status != 200:
            log.warning("ledger read failed", extra={"why": f"HTTP {status} {body.get('code')}"})
            raise ApiError(Code.LEDGER_UNAVAILABLE, "the ledger is unavailable; try again")
        return body

    async def wallet(self, account: str, seconds: float = 2.0) -> dict[str, int] | None:
        """What `account` holds in its wallet per asset (minor units); None when the ledger
        cannot say (not configured, unreachable, or without wallets): balances are then
        shown without it, never refused."""
        if not self.url:
            return None
        try:
            status, body = await self._call(
                "GET", "/v1/admin/balances", params={"account": account}, seconds=seconds
            )
        except ApiError:
            return None
        if body.get("code") == "unknown_account":
            return {}  # no ledger account yet: nothing deposited
        if status != 200:
            log.warning("ledger balances refused", extra={"why": f"HTTP {status} {body}"[:300]})
            return None
        held: dict[str, int] = {}
        try:
            for row in body["balances"]:
                if row["account"] == account and not row.get("system"):
                    held[row["asset"]] = held.get(row["asset"], 0) + int(row["wallet"])
        except (KeyError, TypeError, ValueError):
            log.warning("ledger balances without wallets", extra={"why": str(body)[:300]})
            return None
        return held

    async def transfer(self, body: dict[str, Any], wait_ms: int) -> tuple[int, dict[str, Any]]:
        """Asks the ledger for a transfer (`POST /v1/admin/transfers`, waiting up to `wait_ms`
        for the matcher): its status and answer, a 202 transfer or a 4xx refusal."""
        return await self._call(
            "POST", "/v1/admin/transfers", body=body, seconds=wait_ms / 1000 + 5
        )

    async def get_transfer(self, transfer_id: str) -> dict[str, Any] | None:
        status, body = await self._call("GET", f"/v1/admin/transfers/{transfer_id}")
        if status == 404:
            return None
        if status != 200:
            log.warning("ledger transfer read refused", extra={"why": f"HTTP {status} {body}"})
            raise ApiError(Code.LEDGER_UNAVAILABLE, "the ledger is unavailable; try again")
        return body

    async def account_transfers(self, account: str, params: dict[str, str]) -> dict[str, Any]:
        """A page of `account`'s transfers, newest first (params: limit, before)."""
        status, body = await self._call(
            "GET", f"/v1/admin/accounts/{account}/transfers", params=params
        )
        if body.get("code") == "unknown_account":
            return {"transfers": []}
        if status != 200:
            log.warning("ledger transfers read refused", extra={"why": f"HTTP {status} {body}"})
            raise ApiError(Code.LEDGER_UNAVAILABLE, "the ledger is unavailable; try again")
        return body

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
