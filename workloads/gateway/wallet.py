"""One balance per asset: the trader's wallet at the ledger, and transfers between it and a
market. Pure functions; the ledger's I/O is in `ledger.py`, the routes in `views_transfers.py`.

A deposit lands in the account's wallet at the ledger (the book of record) and stays there
until the trader moves it into a market (`to_market`) or back (`to_wallet`); the ledger
carries the move to the market's matcher exactly once (its funding path). Deposits are not
allocated to a market by themselves: an allocation is exposed to its market (a halt or the
ledger's latch freezes it, funding it needs that market's matcher up), while the wallet needs
no matcher at all, so funds rest there until the trader chooses a market.

The ledger's transfer id is derived from the account and the request's Idempotency-Key, so a
retry is the same transfer at the ledger even after the gateway's own replay store has
forgotten the key; the same key with other terms is refused there as it is here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from workloads.gateway.errors import ApiError, Code
from workloads.gateway.markets import Market, NotRepresentable

DIRECTIONS = ("to_market", "to_wallet")
TRANSFER_FIELDS = frozenset(("symbol", "asset", "amount", "direction"))
TRANSFER_WAIT_MS = 5_000
"""How long the ledger waits for the matcher's answer before it replies: long enough that a
transfer is usually accepted (or rejected) and booked in the reply, short of client timeouts."""
LEDGER_ID = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.:-]{1,48}")
"""A transfer id the ledger can hold (`.` and `..` would be path segments in its URL)."""
LEDGER_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def transfer_id(account: str, key: str) -> str:
    """The ledger's transfer id of `account`'s request with Idempotency-Key `key`."""
    return "t" + hashlib.sha256(f"{account}\n{key}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class TransferRequest:
    market: Market
    asset: str
    amount: int
    """Minor units of `asset`."""
    direction: str

    def ledger_body(self, transfer: str, account: str, wait_ms: int) -> dict[str, Any]:
        return {
            "transfer_id": transfer,
            "account": account,
            "symbol": self.market.symbol,
            "asset": self.asset,
            "amount": str(self.amount),
            "direction": self.direction,
            "wait_ms": wait_ms,
        }


def parse_transfer(body: dict[str, Any], markets: dict[str, Market]) -> TransferRequest:
    """The trader's request, checked against the catalogue; every refusal is typed."""
    unknown = set(body) - TRANSFER_FIELDS
    if unknown:
        raise ApiError(Code.VALIDATION_FAILED, f"unknown fields {sorted(unknown)}")
    symbol = body.get("symbol")
    market = markets.get(symbol) if isinstance(symbol, str) else None
    if market is None:
        raise ApiError(Code.UNKNOWN_MARKET, f"unknown market {symbol!r}")
    asset = body.get("asset")
    if asset not in (market.base_asset, market.quote_asset):
        raise ApiError(
            "unknown_asset",
            f"asset must be {market.base_asset} or {market.quote_asset} in {market.symbol}",
        )
    direction = body.get("direction")
    if direction not in DIRECTIONS:
        raise ApiError(Code.VALIDATION_FAILED, "direction must be to_market or to_wallet")
    try:
        amount = market.amount_units(str(asset), body.get("amount"))
    except NotRepresentable as exc:
        raise ApiError(exc.code, str(exc)) from None
    return TransferRequest(market, str(asset), amount, str(direction))


def asset_places(markets: dict[str, Market], asset: str) -> int | None:
    """Decimal places of `asset` in the catalogue; None when no market trades it."""
    for market in markets.values():
        if asset in (market.base_asset, market.quote_asset):
            return market.asset_decimals(asset)
    return None


def wallet_market(markets: dict[str, Market], asset: str) -> Market | None:
    """The market a wallet's `asset` is valued through (it is in none): one quoting in it
    (at par), else the first that trades it as its base (at that market's last price)."""
    trading = sorted((m for m in markets.values() if asset in (m.base_asset, m.quote_asset)),
                     key=lambda m: (m.base_asset == asset, m.symbol))  # fmt: skip
    return trading[0] if trading else None


def amount_text(units: int, places: int) -> str:
    """Minor units as a decimal string with exactly `places` decimals."""
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}" if places else f"{sign}{digits}"


def epoch_ms(stamp: str) -> int:
    return int(_utc(stamp).timestamp() * 1000)


def reject_name(reason: object) -> str | None:
    """The matcher's reason as the ledger names it (`REJECT_REASON_INSUFFICIENT_FUNDS`), as
    the gateway's code for it (`insufficient_funds`)."""
    if not reason:
        return None
    return str(reason).removeprefix("REJECT_REASON_").lower()


def transfer_json(row: dict[str, Any], markets: dict[str, Market]) -> dict[str, Any] | None:
    """The ledger's transfer as its trader sees it (None for an asset no market here trades):
    the amount as a decimal string, the refusal as a gateway code, no ledger internals
    (journal id, the matcher's seq and epoch)."""
    places = asset_places(markets, str(row["asset"]))
    if places is None:
        return None
    return {
        "transfer_id": row["transfer_id"],
        "symbol": row["symbol"],
        "asset": row["asset"],
        "amount": amount_text(int(row["amount"]), places),
        "direction": row["direction"],
        "status": row["status"],
        "reject_reason": reject_name(row.get("reject_reason")),
        "booked": bool(row.get("booked")),
        "created_at": epoch_ms(str(row["created_at"])),
    }


def refusal(status: int, body: dict[str, Any]) -> ApiError:
    """The gateway's error for the ledger's refusal of a transfer (a 4xx)."""
    code = body.get("code")
    message = str(body.get("message") or code)
    if code == "insufficient_funds":
        return ApiError("insufficient_funds", f"the wallet holds too little: {message}", 409)
    if code == "idempotency_conflict":
        return ApiError(
            Code.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was used for a transfer with other terms",
        )
    if code == "unknown_market":
        return ApiError(Code.UNKNOWN_MARKET, message)
    if code == "unknown_asset":
        return ApiError("unknown_asset", message)
    if code == "market_has_no_matcher":
        return ApiError(
            Code.CORE_UNAVAILABLE, f"{message}; try again", headers={"Retry-After": "1"}
        )
    if isinstance(code, str) and LEDGER_CODE.fullmatch(code):
        return ApiError(code, message, 409 if status == 409 else 400)
    return ApiError(Code.BAD_REQUEST, f"the ledger refused the transfer (HTTP {status})")


def _utc(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def page_cursor(created_at: str) -> str:
    """The `next_cursor` after a transfer: its `created_at` in UTC, written with `Z` (a `+`
    in a query string would read as a space)."""
    return _utc(created_at).isoformat().replace("+00:00", "Z")


def ledger_cursor(cursor: str) -> str:
    """A page's `next_cursor` checked, and written the one way the ledger reads it."""
    try:
        if len(cursor) > 40:
            raise ValueError(cursor)
        moment = _utc(cursor)
    except ValueError:
        raise ApiError(Code.VALIDATION_FAILED, "cursor is not one this API gave") from None
    return moment.isoformat()


def with_wallet(
    rows: list[dict[str, Any]], wallet: dict[str, int] | None, markets: dict[str, Market]
) -> list[dict[str, Any]]:
    """The projection's rows per asset (available and hold summed over markets, `markets`
    the split) with the wallet added: `total` = wallet + available + hold. `wallet` None
    (the ledger unreadable): `"wallet": null` and the total as the markets alone make it.
    An asset held only in the wallet gets a row of its own."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out[row["asset"]] = {
            "asset": row["asset"],
            "wallet": None,
            **{k: v for k, v in row.items() if k != "asset"},
        }
    for asset, units in (wallet or {}).items():
        places = asset_places(markets, asset)
        if places is None or (asset not in out and not units):
            continue
        zero = amount_text(0, places)
        entry = out.setdefault(
            asset,
            {"asset": asset, "wallet": None, "available": zero, "hold": zero, "total": zero,
             "markets": []},
        )  # fmt: skip
        entry["wallet"] = amount_text(units, places)
    for asset, entry in out.items():
        places = asset_places(markets, asset)
        if wallet is None or places is None:
            continue
        if entry["wallet"] is None:
            entry["wallet"] = amount_text(0, places)
        units = sum(int(Decimal(entry[k]).scaleb(places)) for k in ("wallet", "available", "hold"))
        entry["total"] = amount_text(units, places)
    return [out[asset] for asset in sorted(out)]
