"""Admin endpoints of the wallets: deposits and withdrawals (the wallet alone, no matcher),
transfers between a wallet and a market, and their state. Thin: parse, call, reply."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from workloads.ledger import payloads
from workloads.ledger.appkeys import ADMIN, LEDGER
from workloads.ledger.errors import ApiError, Code
from workloads.ledger.views_admin import query_int, read_body, wait_seconds
from workloads.ledger.wallets import TO_MARKET, TO_WALLET, Transfer

MAX_TRANSFERS_PAGE = 500


def _asset(request: web.Request, asset: str) -> str:
    if not any(asset in m.assets for m in request.app[LEDGER].settings.markets):
        raise ApiError(Code.UNKNOWN_ASSET, f"{asset!r} is not an asset of any market")
    return asset


async def _wallet_entry(request: web.Request, kind: str) -> web.Response:
    body = await read_body(request)
    id_field = f"{kind}_id"
    payloads.only(body, {id_field, "account", "asset", "amount"})
    ident = payloads.text(body, id_field, payloads.ID)
    account = payloads.text(body, "account", payloads.USER)
    asset = _asset(request, payloads.text(body, "asset", payloads.ASSET))
    amount = payloads.amount(body, "amount")
    wallets = request.app[LEDGER].wallets
    book = wallets.deposit if kind == "deposit" else wallets.withdraw
    journal_id, new = await book(ident, account, asset, amount)
    return web.json_response(
        {
            id_field: ident,
            "account": account,
            "asset": asset,
            "amount": str(amount),
            "journal_id": journal_id,
            "duplicate": not new,
        },
        status=201 if new else 200,
    )


async def deposit(request: web.Request) -> web.Response:
    """Credit an account's wallet (from `@external`): no market, no matcher."""
    return await _wallet_entry(request, "deposit")


async def withdrawal(request: web.Request) -> web.Response:
    """Debit an account's wallet (to `@external`); insufficient_funds if it holds less."""
    return await _wallet_entry(request, "withdrawal")


async def transfer(request: web.Request) -> web.Response:
    """Move funds between an account's wallet and a market (ApplyFunding, exactly once).

    202 with the state; with `wait_ms`, once the matcher has answered, the reply waits
    until the ledger has booked its event (`booked`)."""
    ledger = request.app[LEDGER]
    body = await read_body(request)
    payloads.only(
        body, {"transfer_id", "account", "symbol", "asset", "amount", "direction", "wait_ms"}
    )
    transfer_id = payloads.text(body, "transfer_id", payloads.ID)
    market = payloads.market(ledger.settings.markets, payloads.text(body, "symbol", payloads.ID))
    direction = body.get("direction")
    if direction not in (TO_MARKET, TO_WALLET):
        raise ApiError(Code.INVALID_FIELD, f"direction must be {TO_MARKET} or {TO_WALLET}")
    wanted = Transfer(
        transfer_id,
        payloads.text(body, "account", payloads.USER),
        market.symbol,
        payloads.asset_of(market, payloads.text(body, "asset", payloads.ASSET)),
        payloads.amount(body, "amount"),
        direction,
        request.get(ADMIN) or "anonymous",
    )
    wait = wait_seconds(body)
    if not ledger.matchers.has(market.symbol):
        raise ApiError(Code.NO_MATCHER, f"{market.symbol} has no matcher to transfer through")
    result = await ledger.wallets.transfer(wanted)
    if result.status == "accepted" and result.seq is not None and wait:
        await ledger.funding.booked(market.symbol, result.seq, wait)
    state = await ledger.wallets.get(transfer_id)
    return web.json_response(state, status=202)


async def transfer_get(request: web.Request) -> web.Response:
    state = await request.app[LEDGER].wallets.get(request.match_info["transfer_id"])
    if state is None:
        raise ApiError(Code.NOT_FOUND, "no such transfer")
    return web.json_response(state)


async def account_transfers(request: web.Request) -> web.Response:
    """An account's transfers, newest first; `before`: the created_at the last page ended at."""
    account = request.match_info["account"]
    if not payloads.NAME.match(account):
        raise ApiError(Code.INVALID_FIELD, "account is not a valid account name")
    limit = query_int(request, "limit", 100, 1, MAX_TRANSFERS_PAGE)
    before = None
    if "before" in request.query:
        try:
            before = datetime.fromisoformat(request.query["before"])
        except ValueError:
            raise ApiError(Code.INVALID_FIELD, "before must be an ISO 8601 timestamp") from None
        if before.tzinfo is None:
            raise ApiError(Code.INVALID_FIELD, "before must carry its time zone")
    transfers = await request.app[LEDGER].wallets.of(account, limit, before)
    return web.json_response({"transfers": transfers})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/admin/deposits", deposit)
    router.add_post("/v1/admin/withdrawals", withdrawal)
    router.add_post("/v1/admin/transfers", transfer)
    router.add_get("/v1/admin/transfers/{transfer_id}", transfer_get)
    router.add_get("/v1/admin/accounts/{account}/transfers", account_transfers)
