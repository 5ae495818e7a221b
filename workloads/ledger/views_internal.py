"""Internal injection (the seed's `/v1/internal/**`): events into the consumer's code path.

An injected TradeExecuted, OrderAccepted or OrderCanceled (protobuf JSON mapping) is
validated, encoded as the `Event` the matcher would publish, and submitted to the same
applier as the Kafka consumer: the same cursor, dedup on event id and trade id, epoch and
gap rules, in a shared group commit. Nothing is written for a rejected request.

Replies: 200 `{"applied": true}` the first time, 200 `{"applied": false, "outcome":
"duplicate"}` after; 202 `parked` behind a seq gap; 409 `stale_epoch`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from contracts.v1 import events_pb2
from workloads.ledger import payloads, rules
from workloads.ledger.appkeys import LEDGER
from workloads.ledger.applier import ApplierStopped
from workloads.ledger.cursor import Verdict
from workloads.ledger.errors import ApiError, Code


async def _body(request: web.Request) -> dict[str, Any]:
    return payloads.parse_json(await request.read())


async def _require_accounts(request: web.Request, keys: list[tuple[str, str]]) -> None:
    """Refuse an event for accounts that do not exist. Accounts are never deleted, so the
    ones found are remembered (the applier's cache) and not looked up again."""
    accounts = request.app[LEDGER].applier.accounts
    missing = [k for k in keys if k not in accounts.ids]
    if not missing:
        return
    rows = await request.app[LEDGER].pool.fetch(
        """SELECT a.id, k.owner, k.asset FROM unnest($1::text[], $2::text[]) AS k(owner, asset)
             LEFT JOIN accounts a ON a.owner = k.owner AND a.asset = k.asset""",
        [k[0] for k in missing],
        [k[1] for k in missing],
    )
    unknown = [f"{r['owner']}/{r['asset']}" for r in rows if r["id"] is None]
    if unknown:
        raise ApiError(Code.UNKNOWN_ACCOUNT, f"unknown account(s): {', '.join(unknown)}")
    accounts.commit({(r["owner"], r["asset"]): r["id"] for r in rows})


async def _inject(request: web.Request, event: events_pb2.Event) -> web.Response:
    ledger = request.app[LEDGER]
    payload = event.SerializeToString()
    try:
        incoming = rules.from_event(event, payload, ledger.settings.fee_account)
        (outcome,) = await ledger.applier.submit([incoming])
    except ValueError as exc:
        raise ApiError(Code.INVALID_EVENT, str(exc)) from None
    except ApplierStopped:
        raise ApiError(Code.NOT_READY, "the ledger is stopping") from None
    if outcome.verdict is Verdict.STALE_EPOCH:
        raise ApiError(
            Code.STALE_EPOCH,
            f"{incoming.event_id}: epoch {incoming.epoch} is lower than the highest applied",
        )
    reply = {
        "applied": outcome.verdict is Verdict.APPLY,
        "outcome": outcome.verdict.value,
        "event_id": incoming.event_id,
        "journal_id": outcome.tx_id,
    }
    if event.WhichOneof("body") == "trade_executed":
        reply["trade_id"] = event.trade_executed.trade_id
    return web.json_response(reply, status=202 if outcome.verdict is Verdict.GAP else 200)


async def trade_executed(request: web.Request) -> web.Response:
    markets = request.app[LEDGER].settings.markets
    trade = payloads.trade(await _body(request), markets)
    await _require_accounts(
        request,
        [(trade.buyer_account, trade.quote_asset), (trade.seller_account, trade.base_asset)],
    )
    return await _inject(request, events_pb2.Event(trade_executed=trade))


async def order_reserve(request: web.Request) -> web.Response:
    order = payloads.reserve(await _body(request), request.app[LEDGER].settings.markets)
    await _require_accounts(request, [(order.account, order.reserved_asset)])
    return await _inject(request, events_pb2.Event(order_accepted=order))


async def order_release(request: web.Request) -> web.Response:
    order = payloads.release(await _body(request), request.app[LEDGER].settings.markets)
    await _require_accounts(request, [(order.account, order.released_asset)])
    return await _inject(request, events_pb2.Event(order_canceled=order))


async def engine_seq(request: web.Request) -> web.Response:
    """The seed's push of a matcher's committed seq (for markets without a gRPC target)."""
    body = await _body(request)
    payloads.only(body, {"symbol", "seq", "epoch"})
    ledger = request.app[LEDGER]
    market = payloads.market(ledger.settings.markets, payloads.text(body, "symbol", payloads.ID))
    seq = body.get("seq")
    epoch = body.get("epoch")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ApiError(Code.INVALID_FIELD, "seq must be a non-negative integer")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise ApiError(Code.INVALID_FIELD, "epoch must be a non-negative integer")
    ledger.reconciler.push(market.symbol, seq, epoch)
    return web.json_response({"symbol": market.symbol, "engine_seq": seq, "epoch": epoch})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/internal/trades/executed", trade_executed)
    router.add_post("/v1/internal/orders/reserve", order_reserve)
    router.add_post("/v1/internal/orders/release", order_release)
    router.add_post("/v1/internal/reconciliation/engine-seq", engine_seq)
