"""Admin endpoints: balances, adjustments, rebuild, invariants, reconciliation and latch,
the settlement consumer, corrections, trade lookup. Thin: parse, call the part, reply."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from workloads.ledger import payloads, rules
from workloads.ledger.appkeys import ADMIN, LEDGER, admin_name
from workloads.ledger.errors import ApiError, Code
from workloads.ledger.funding import FundingRequest
from workloads.ledger.reconciler import LatchRefused

MAX_WAIT_MS = 30_000


async def read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    return payloads.parse_json(raw) if raw.strip() else {}


def wait_seconds(body: dict[str, Any]) -> float:
    value = body.get("wait_ms", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WAIT_MS:
        raise ApiError(Code.INVALID_FIELD, f"wait_ms must be an integer from 0 to {MAX_WAIT_MS}")
    return value / 1000


# ---------------------------------------------------------------------- balances


async def balances(request: web.Request) -> web.Response:
    account = request.query.get("account")
    asset = request.query.get("asset")
    if account is not None and not payloads.NAME.match(account):
        raise ApiError(Code.INVALID_FIELD, "account is not a valid account name")
    if asset is not None and not payloads.ASSET.match(asset):
        raise ApiError(Code.INVALID_FIELD, "asset is not a valid asset code")
    rows = await request.app[LEDGER].pool.fetch(
        """SELECT a.owner, a.asset, a.system, b.available, b.hold, b.wallet, b.version
             FROM balances b JOIN accounts a ON a.id = b.account_id
            WHERE ($1::text IS NULL OR a.owner = $1) AND ($2::text IS NULL OR a.asset = $2)
            ORDER BY a.owner, a.asset LIMIT 10000""",
        account,
        asset,
    )
    if account is not None and not rows:
        raise ApiError(Code.UNKNOWN_ACCOUNT, f"no account {account}")
    headers = {"Deprecation": "true"} if request.path == "/v1/balances" else None
    return web.json_response(
        {
            "balances": [
                {
                    "account": r["owner"],
                    "asset": r["asset"],
                    "available": str(r["available"]),
                    "hold": str(r["hold"]),
                    "wallet": str(r["wallet"]),
                    "version": r["version"],
                    "system": r["system"],
                }
                for r in rows
            ]
        },
        headers=headers,
    )


async def adjustment(request: web.Request) -> web.Response:
    """A deposit (credit) or withdrawal (debit) through the market's matcher.

    202 with the matcher's answer; with `wait_ms`, the reply waits until the ledger has
    booked it (`booked` and `journal_id`)."""
    ledger = request.app[LEDGER]
    body = await read_body(request)
    payloads.only(
        body,
        {"adjustment_id", "symbol", "account", "asset", "amount", "direction", "reason", "wait_ms"},
    )
    adjustment_id = payloads.text(body, "adjustment_id", payloads.ID)
    market = payloads.market(ledger.settings.markets, payloads.text(body, "symbol", payloads.ID))
    account = payloads.text(body, "account", payloads.USER)
    asset = payloads.asset_of(market, payloads.text(body, "asset", payloads.ASSET))
    amount = payloads.amount(body, "amount")
    direction = body.get("direction")
    if direction not in ("credit", "debit"):
        raise ApiError(Code.INVALID_FIELD, "direction must be credit or debit")
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500:
        raise ApiError(Code.INVALID_FIELD, "reason must be a string of at most 500 characters")
    wait = wait_seconds(body)
    if not ledger.matchers.has(market.symbol):
        raise ApiError(Code.NO_MATCHER, f"{market.symbol} has no matcher target to fund")
    request_ = FundingRequest(
        adjustment_id,
        market.symbol,
        account,
        asset,
        amount,
        direction,
        "adjustment",
        rules.EXTERNAL,
        request.get(ADMIN) or "anonymous",
        reason,
    )
    async with ledger.pool.acquire() as conn, conn.transaction():
        if direction == "debit" and not await conn.fetchval(
            "SELECT 1 FROM accounts WHERE owner = $1 AND asset = $2", account, asset
        ):
            raise ApiError(Code.UNKNOWN_ACCOUNT, f"no account {account} in {asset} to debit")
        await ledger.funding.store(conn, request_)
    result = await ledger.funding.send(request_)
    journal_id = None
    if result.status == "accepted" and result.seq is not None and wait:
        journal_id = await ledger.funding.booked(market.symbol, result.seq, wait)
    return web.json_response(
        {
            "adjustment_id": adjustment_id,
            **result.to_json(),
            "booked": journal_id is not None,
            "journal_id": journal_id,
        },
        status=202,
    )


async def rebuild(request: web.Request) -> web.Response:
    body = await read_body(request)
    payloads.only(body, {"repair"})
    report = await request.app[LEDGER].invariants.rebuild(payloads.flag(body, "repair"))
    return web.json_response(report)


async def invariants_check(request: web.Request) -> web.Response:
    report = await request.app[LEDGER].invariants.check()
    return web.json_response(report.to_json())


async def invariants_last(request: web.Request) -> web.Response:
    last = request.app[LEDGER].invariants.last
    if last is None:
        raise ApiError(Code.NOT_FOUND, "no invariant check has run yet")
    return web.json_response(last.to_json())


async def trade(request: web.Request) -> web.Response:
    trade_id = request.match_info["trade_id"]
    symbol = request.query.get("symbol")
    rows = await request.app[LEDGER].pool.fetch(
        """SELECT j.id, j.reference, j.market, j.seq, j.epoch, j.trade_id, j.recorded_at
             FROM journal j
            WHERE j.trade_id = $1 AND ($2::text IS NULL OR j.market = $2)""",
        trade_id,
        symbol,
    )
    if not rows:
        raise ApiError(Code.UNKNOWN_TRADE, f"no trade {trade_id}")
    postings = await request.app[LEDGER].pool.fetch(
        """SELECT p.tx_id, p.line, a.owner, p.asset, p.bucket, p.amount
             FROM postings p JOIN accounts a ON a.id = p.account_id
            WHERE p.tx_id = ANY($1::bigint[]) ORDER BY p.tx_id, p.line""",
        [r["id"] for r in rows],
    )
    return web.json_response(
        {
            "trades": [
                {
                    "journal_id": r["id"],
                    "event_id": r["reference"],
                    "symbol": r["market"],
                    "seq": r["seq"],
                    "epoch": r["epoch"],
                    "trade_id": r["trade_id"],
                    "recorded_at": r["recorded_at"].isoformat(),
                    "postings": [
                        {
                            "account": p["owner"],
                            "asset": p["asset"],
                            "bucket": p["bucket"],
                            "amount": str(p["amount"]),
                        }
                        for p in postings
                        if p["tx_id"] == r["id"]
                    ],
                }
                for r in rows
            ]
        }
    )


MAX_TRADES_PAGE = 500
MAX_MS = 1 << 43
"""Epoch milliseconds beyond any real time whose nanoseconds still fit a bigint."""


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(Code.INVALID_FIELD, f"{name} must be an integer from {low} to {high}")
    return int(raw)


async def account_trades(request: web.Request) -> web.Response:
    """An account's settled trades, newest first (by journal id): each with its postings and
    the taker's account (the one whose order the trade's command placed, found by that
    order's reservation, event index 0 of the same command). `from`/`to`: occurred_at in
    epoch ms; `before`: the journal id the previous page ended at."""
    account = request.match_info["account"]
    if not payloads.NAME.match(account):
        raise ApiError(Code.INVALID_FIELD, "account is not a valid account name")
    symbol = request.query.get("symbol")
    if symbol is not None and not payloads.NAME.match(symbol):
        raise ApiError(Code.INVALID_FIELD, "symbol is not a valid market name")
    limit = query_int(request, "limit", 100, 1, MAX_TRADES_PAGE)
    start = query_int(request, "from", 0, 0, MAX_MS) * 1_000_000
    end = query_int(request, "to", MAX_MS, 0, MAX_MS) * 1_000_000
    before = query_int(request, "before", 1 << 62, 1, 1 << 62)
    pool = request.app[LEDGER].pool
    rows = await pool.fetch(
        """SELECT DISTINCT j.id, j.market, j.seq, j.trade_id, j.occurred_at
             FROM accounts a
             JOIN postings p ON p.account_id = a.id AND p.bucket = 'hold' AND p.amount < 0
             JOIN journal j ON j.id = p.tx_id AND j.kind = 'trade'
            WHERE a.owner = $1 AND ($2::text IS NULL OR j.market = $2)
              AND j.occurred_at >= $3 AND j.occurred_at < $4 AND j.id < $5
            ORDER BY j.id DESC LIMIT $6""",
        account, symbol, start, end, before, limit,
    )  # fmt: skip
    ids = [r["id"] for r in rows]
    postings = await pool.fetch(
        """SELECT p.tx_id, a.owner, p.asset, p.bucket, p.amount
             FROM postings p JOIN accounts a ON a.id = p.account_id
            WHERE p.tx_id = ANY($1::bigint[]) ORDER BY p.tx_id, p.line""",
        ids,
    )
    reservations = [f"{r['market']}:{r['seq']}:0" for r in rows]
    takers = {
        t["reference"]: t["owner"]
        for t in await pool.fetch(
            """SELECT DISTINCT j.reference, a.owner
                 FROM journal j JOIN postings p ON p.tx_id = j.id
                 JOIN accounts a ON a.id = p.account_id
                WHERE j.reference = ANY($1::text[]) AND j.kind = 'reserve'""",
            reservations,
        )
    }
    lines: dict[int, list[dict[str, str]]] = {i: [] for i in ids}
    for p in postings:
        lines[p["tx_id"]].append({"account": p["owner"], "asset": p["asset"],
                                  "bucket": p["bucket"], "amount": str(p["amount"])})  # fmt: skip
    return web.json_response(
        {
            "account": account,
            "trades": [
                {
                    "journal_id": r["id"],
                    "trade_id": r["trade_id"],
                    "symbol": r["market"],
                    "seq": r["seq"],
                    "occurred_at": r["occurred_at"],
                    "taker": takers.get(f"{r['market']}:{r['seq']}:0"),
                    "postings": lines[r["id"]],
                }
                for r in rows
            ],
            "next_before": rows[-1]["id"] if len(rows) == limit else None,
        }
    )


# ---------------------------------------------------------------------- reconciliation


async def reconciliation_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[LEDGER].reconciler.status())


def _symbol(request: web.Request) -> str:
    symbol = request.match_info["symbol"]
    if symbol not in request.app[LEDGER].reconciler.views:
        raise ApiError(Code.UNKNOWN_MARKET, f"market {symbol!r} is not reconciled here")
    return symbol


async def reconciliation_market(request: web.Request) -> web.Response:
    symbol = _symbol(request)
    reconciler = request.app[LEDGER].reconciler
    raw = request.query.get("history", "20")
    if not raw.isdigit() or int(raw) > 1000:
        raise ApiError(Code.INVALID_FIELD, "history must be an integer from 0 to 1000")
    history = await reconciler.history(symbol, int(raw)) if int(raw) else []
    return web.json_response({**reconciler.market_status(symbol), "history": history})


async def reconciliation_evaluate(request: web.Request) -> web.Response:
    await request.app[LEDGER].reconciler.evaluate_all()
    return web.json_response(request.app[LEDGER].reconciler.status())


async def latch_release(request: web.Request) -> web.Response:
    symbol = _symbol(request)
    admin = request.get(ADMIN) or "anonymous"
    try:
        status = await request.app[LEDGER].reconciler.release(symbol, admin)
    except LatchRefused as exc:
        raise ApiError(
            Code.LATCH_RELEASE_REFUSED, f"latch of {symbol} not released: {exc}"
        ) from None
    return web.json_response({"released": True, **status})


# ---------------------------------------------------------------------- consumer


def _consumer(request: web.Request) -> Any:
    consumer = request.app[LEDGER].consumer
    if consumer is None:
        raise ApiError(Code.NOT_FOUND, "the settlement consumer is disabled (LEDGER_KAFKA_ENABLED)")
    return consumer


async def consumer_pause(request: web.Request) -> web.Response:
    consumer = _consumer(request)
    await consumer.pause()
    return web.json_response(consumer.status())


async def consumer_resume(request: web.Request) -> web.Response:
    consumer = _consumer(request)
    consumer.resume()
    return web.json_response(consumer.status())


async def consumer_status(request: web.Request) -> web.Response:
    return web.json_response(_consumer(request).status())


# ---------------------------------------------------------------------- corrections


async def correction_request(request: web.Request) -> web.Response:
    admin = admin_name(request)
    result = await request.app[LEDGER].corrections.request(admin, await read_body(request))
    return web.json_response(result, status=201)


async def correction_approve(request: web.Request) -> web.Response:
    admin = admin_name(request)
    corrections = request.app[LEDGER].corrections
    return web.json_response(await corrections.approve(request.match_info["id"], admin))


async def correction_apply(request: web.Request) -> web.Response:
    admin = admin_name(request)
    body = await read_body(request)
    payloads.only(body, {"wait_ms"})
    corrections = request.app[LEDGER].corrections
    result = await corrections.apply(request.match_info["id"], admin, wait_seconds(body) or 5.0)
    return web.json_response(result)


async def correction_get(request: web.Request) -> web.Response:
    return web.json_response(await request.app[LEDGER].corrections.get(request.match_info["id"]))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/admin/balances", balances)
    router.add_get("/v1/balances", balances)
    router.add_post("/v1/admin/adjustments", adjustment)
    router.add_post("/v1/admin/rebuild-balances", rebuild)
    router.add_post("/v1/admin/invariants/check", invariants_check)
    router.add_get("/v1/admin/invariants", invariants_last)
    router.add_get("/v1/admin/trades/{trade_id}", trade)
    router.add_get("/v1/admin/accounts/{account}/trades", account_trades)
    router.add_get("/v1/admin/reconciliation/status", reconciliation_status)
    router.add_post("/v1/admin/reconciliation/evaluate", reconciliation_evaluate)
    router.add_get("/v1/admin/reconciliation/{symbol}", reconciliation_market)
    router.add_post("/v1/admin/reconciliation/latch/{symbol}/release", latch_release)
    router.add_post("/v1/admin/consumers/settlement/pause", consumer_pause)
    router.add_post("/v1/admin/consumers/settlement/resume", consumer_resume)
    router.add_get("/v1/admin/consumers/settlement/status", consumer_status)
    router.add_post("/v1/admin/corrections/requests", correction_request)
    router.add_post("/v1/admin/corrections/{id}/approve", correction_approve)
    router.add_post("/v1/admin/corrections/{id}/apply", correction_apply)
    router.add_get("/v1/admin/corrections/{id}", correction_get)
