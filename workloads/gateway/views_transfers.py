"""Transfers between the trader's wallet and a market, through the ledger (see `wallet.py`).

`POST /v1/account/transfers` asks the ledger for the transfer and waits (`TRANSFER_WAIT_MS`)
for the market's matcher, so the usual answer is already accepted (or rejected) and booked;
a `pending` one is followed with `GET /v1/account/transfers/{transferId}`. Listing and reading
are the ledger's, filtered to the caller: another account's transfer is not found.
"""

from __future__ import annotations

from aiohttp import web

from workloads.gateway.errors import ApiError, Code
from workloads.gateway.guard import policy, principal
from workloads.gateway.jsonio import json_response
from workloads.gateway.keys import LEDGER, PROJECTION
from workloads.gateway.queryargs import bounded
from workloads.gateway.views_auth import json_object
from workloads.gateway.wallet import (
    LEDGER_ID,
    TRANSFER_WAIT_MS,
    ledger_cursor,
    page_cursor,
    parse_transfer,
    refusal,
    transfer_id,
    transfer_json,
)

MAX_TRANSFERS_PAGE = 100


@policy("user")
async def create(request: web.Request) -> web.Response:
    who = principal(request)
    markets = request.app[PROJECTION].markets
    wanted = parse_transfer(await json_object(request), markets)
    key = request.headers.get("Idempotency-Key", "")  # the guard has required it
    body = wanted.ledger_body(transfer_id(who.account, key), who.account, TRANSFER_WAIT_MS)
    status, answer = await request.app[LEDGER].transfer(body, TRANSFER_WAIT_MS)
    if status >= 400:
        raise refusal(status, answer)
    shown = transfer_json(answer, markets)
    if shown is None or answer.get("account") != who.account:
        raise ApiError(Code.INTERNAL, "the ledger answered for another transfer")
    return json_response(shown, status=202)


@policy("user")
async def get_one(request: web.Request) -> web.Response:
    who = principal(request)
    wanted = request.match_info["transferId"]
    found = None
    if LEDGER_ID.fullmatch(wanted):
        found = await request.app[LEDGER].get_transfer(wanted)
    shown = None
    if found is not None and found.get("account") == who.account:
        shown = transfer_json(found, request.app[PROJECTION].markets)
    if shown is None:  # another account's transfer is not revealed
        raise ApiError(Code.TRANSFER_NOT_FOUND, "no such transfer")
    return json_response(shown)


@policy("user")
async def list_mine(request: web.Request) -> web.Response:
    """The caller's transfers, newest first (`cursor`: a page's `next_cursor`)."""
    who = principal(request)
    limit = bounded(request, "limit", 50, MAX_TRANSFERS_PAGE)
    params = {"limit": str(limit)}
    if "cursor" in request.query:
        params["before"] = ledger_cursor(request.query["cursor"])
    page = await request.app[LEDGER].account_transfers(who.account, params)
    rows = page.get("transfers", [])
    markets = request.app[PROJECTION].markets
    mine = (transfer_json(r, markets) for r in rows if r.get("account") == who.account)
    shown = [t for t in mine if t is not None]
    following = page_cursor(str(rows[-1]["created_at"])) if len(rows) == limit else None
    return json_response({"transfers": shown, "next_cursor": following})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/account/transfers", create)
    router.add_get("/v1/account/transfers", list_mine)
    router.add_get("/v1/account/transfers/{transferId}", get_one)
