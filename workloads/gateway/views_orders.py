"""Orders: place and cancel through the market's matcher, and status from the cache.

The reply to a place is the matcher's own result for it (ACCEPTED with any fills, or a
sequenced REJECTED with its reason), with seq and epoch. A refusal before sequencing (the
matcher's validation) is a 400 with the matcher's code. The matcher's client order id is
the request's `client_order_id`, or else its Idempotency-Key: a retry after a lost reply
then meets the matcher's own idempotency and gets the original result (DUPLICATE).
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from aiohttp import web
from opentelemetry import trace

from contracts.v1 import common_pb2, matcher_pb2
from workloads.common.tracing import traceparent
from workloads.gateway.errors import REJECT_STATUS, ApiError, Code, reject_code
from workloads.gateway.guard import policy, principal
from workloads.gateway.jsonio import json_response
from workloads.gateway.keys import CORE, FEED, PROJECTION, SETTINGS, TRACE_ID
from workloads.gateway.markets import Market, NotRepresentable
from workloads.gateway.orders import order_key
from workloads.gateway.queryargs import bounded
from workloads.gateway.views_auth import json_object
from workloads.gateway.vocabulary import (
    CLIENT_ORDER_ID_MAX,
    ORDER_FIELDS,
    ORDER_TYPES,
    SIDES,
    TIME_IN_FORCE,
)


def correlation_id(request: web.Request) -> str:
    """The matcher command's correlation id: the W3C traceparent of the request's span
    (sampled or not, its flags say), so that the matcher, and the consumers of the events,
    join the order's trace; without spans (no EDGE_OTEL_ENDPOINT) the request's trace id.
    Either way it holds the X-Trace-Id the trader got (see observe.py)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return traceparent(context)
    return str(request.get(TRACE_ID, ""))


def market_of(request: web.Request, symbol: object) -> Market:
    if not isinstance(symbol, str) or symbol not in request.app[PROJECTION].markets:
        raise ApiError(Code.UNKNOWN_MARKET, f"unknown market {symbol!r}")
    market: Market = request.app[PROJECTION].markets[symbol]
    return market


def place_request(
    body: dict[str, Any], market: Market, account: str, idem: str, correlation: str = ""
) -> matcher_pb2.PlaceOrderRequest:
    unknown = set(body) - ORDER_FIELDS if not ORDER_FIELDS.issuperset(body) else ()
    if unknown:
        raise ApiError(Code.VALIDATION_FAILED, f"unknown fields {sorted(unknown)}")
    side = SIDES.get(str(body.get("side")))
    if side is None:
        raise ApiError("unknown_side", "side must be BUY or SELL")
    otype = ORDER_TYPES.get(str(body.get("type", "LIMIT")))
    if otype is None:
        raise ApiError("unknown_order_type", "type must be LIMIT or MARKET")
    default_tif = "GTC" if otype == common_pb2.ORDER_TYPE_LIMIT else "IOC"
    tif = TIME_IN_FORCE.get(str(body.get("time_in_force", default_tif)))
    if tif is None:
        raise ApiError("unknown_time_in_force", "time_in_force must be GTC, IOC or FOK")
    post_only = body.get("post_only", False)
    if not isinstance(post_only, bool):
        raise ApiError(Code.VALIDATION_FAILED, "post_only must be a boolean")
    cid = body.get("client_order_id", idem)
    if not isinstance(cid, str) or not 0 < len(cid) <= CLIENT_ORDER_ID_MAX or not cid.isprintable():
        raise ApiError(
            "invalid_client_order_id",
            f"client_order_id: 1 to {CLIENT_ORDER_ID_MAX} printable characters",
        )
    try:
        quantity = market.quantity_units(body.get("quantity"))
        price = 0
        budget = 0
        if otype == common_pb2.ORDER_TYPE_LIMIT:
            price = market.price_units(body.get("price"))
            if "quote_budget" in body:
                raise ApiError("invalid_combination", "quote_budget is for MARKET buys only")
        else:
            if body.get("price") is not None:
                raise ApiError("invalid_combination", "a MARKET order has no price")
            if "quote_budget" in body:
                if side != common_pb2.SIDE_BUY:
                    raise ApiError("invalid_amount", "quote_budget is for MARKET buys only")
                budget = market.quote_units(body["quote_budget"])
    except NotRepresentable as exc:
        raise ApiError(exc.code, str(exc)) from None
    return matcher_pb2.PlaceOrderRequest(
        symbol=market.symbol,
        account=account,
        client_order_id=cid,
        side=side,
        order_type=otype,
        time_in_force=tif,
        price=price,
        quantity=quantity,
        post_only=post_only,
        quote_budget=budget,
        correlation_id=correlation,
    )


def refused(reply: matcher_pb2.CommandReply) -> ApiError:
    code = reject_code(reply.reject_reason)
    return ApiError(code, f"the matcher refused the command: {code}", REJECT_STATUS.get(code, 400))


@policy("user")
async def place(request: web.Request) -> web.Response:
    who = principal(request)
    body = await json_object(request)
    market = market_of(request, body.get("symbol"))
    req = place_request(
        body,
        market,
        who.account,
        request.headers.get("Idempotency-Key", ""),
        correlation_id(request),
    )
    reply = await request.app[CORE].of(market.symbol).submit(matcher_pb2.Command(place_order=req))
    if reply.status == matcher_pb2.COMMAND_STATUS_REJECTED and not reply.seq:
        raise refused(reply)
    cache = request.app[PROJECTION].orders
    for event in reply.events:
        cache.apply(event, from_feed=False)
    seq = int(reply.order_id) if reply.order_id else reply.seq
    order = cache.get(market.symbol, seq)
    if order is None or (
        reply.status == matcher_pb2.COMMAND_STATUS_REJECTED and not reply.order_id
    ):
        occurred = reply.events[0].order_rejected.envelope.occurred_at if reply.events else 0
        order = cache.record_rejected(
            market.symbol,
            reply.seq,
            reply.epoch,
            who.account,
            req.client_order_id,
            reply.reject_reason,
            req,
            occurred,
        )
    result = order.to_json(market)
    result["epoch"] = reply.epoch
    result["duplicate"] = reply.status == matcher_pb2.COMMAND_STATUS_DUPLICATE
    status = 201 if reply.status == matcher_pb2.COMMAND_STATUS_ACCEPTED else 200
    return json_response(result, status=status)


def parse_order_id(request: web.Request) -> tuple[Market, int]:
    raw = request.match_info["orderId"]
    key = order_key(raw)
    if key is None:
        raise ApiError(Code.ORDER_NOT_FOUND, "order ids look like BTC-USDT:123")
    symbol, seq = key
    if symbol not in request.app[PROJECTION].markets:
        raise ApiError(Code.ORDER_NOT_FOUND, f"no order {raw}")
    return request.app[PROJECTION].markets[symbol], seq


@policy("user")
async def cancel(request: web.Request) -> web.Response:
    who = principal(request)
    market, seq = parse_order_id(request)
    req = matcher_pb2.CancelOrderRequest(
        symbol=market.symbol,
        account=who.account,
        order_id=str(seq),
        correlation_id=correlation_id(request),
    )
    reply = await request.app[CORE].of(market.symbol).submit(matcher_pb2.Command(cancel_order=req))
    if reply.status == matcher_pb2.COMMAND_STATUS_REJECTED:
        raise refused(reply)
    cache = request.app[PROJECTION].orders
    for event in reply.events:
        cache.apply(event, from_feed=False)
    order = cache.get(market.symbol, seq)
    if order is None:
        raise ApiError(Code.ORDER_NOT_FOUND, "no such order")
    result = order.to_json(market)
    result["epoch"] = reply.epoch
    result["duplicate"] = False
    return json_response(result)


@policy("user")
async def get_order(request: web.Request) -> web.Response:
    who = principal(request)
    market, seq = parse_order_id(request)
    projection = request.app[PROJECTION]
    order = projection.orders.get(market.symbol, seq)
    if (order is None or not order.account) and projection.data[market.symbol].seq < seq:
        # Placed through another replica: wait (bounded) for the topic to bring it here.
        wait = request.app[SETTINGS].core.order_read_wait_ms / 1000
        await request.app[FEED].wait_seq(market.symbol, seq, wait)
        order = projection.orders.get(market.symbol, seq)
    if order is None or order.account != who.account:
        raise ApiError(Code.ORDER_NOT_FOUND, "no such order")  # a foreign order is not revealed
    result = order.to_json(market)
    result["as_of_seq"] = max(projection.data[market.symbol].seq, order.updated_seq)
    return json_response(result)


STATUS_FILTERS = {"open": True, "closed": False, "all": None}
MAX_ORDERS_PAGE = 500


@policy("user")
async def list_orders(request: web.Request) -> web.Response:
    """The caller's own orders, newest first (`status` open, closed or all; `cursor`: a page's
    `next_cursor`), from this replica's order cache (the newest EDGE_ORDER_CACHE_SIZE orders
    of the venue)."""
    who = principal(request)
    symbol = request.query.get("symbol")
    if symbol is not None:
        market_of(request, symbol)
    status = request.query.get("status", "all")
    if status not in STATUS_FILTERS:
        raise ApiError(Code.VALIDATION_FAILED, "status must be open, closed or all")
    limit = bounded(request, "limit", 100, MAX_ORDERS_PAGE)
    before = None
    if "cursor" in request.query:
        before = order_key(request.query["cursor"])
        if before is None:
            raise ApiError(Code.VALIDATION_FAILED, "cursor is not one this API gave")
    projection = request.app[PROJECTION]
    found = projection.orders.of_account(who.account, symbol, STATUS_FILTERS[status], before)
    page = list(islice(found, limit + 1))
    items = []
    for order in page[:limit]:
        item = order.to_json(projection.markets[order.symbol])
        del item["fills"]  # GET /v1/orders/{id} has them, /v1/account/trades all of them
        items.append(item)
    more = len(page) > limit
    return json_response(
        {"orders": items, "next_cursor": page[limit - 1].order_id if more else None}
    )


@policy("user")
async def cancel_all(request: web.Request) -> web.Response:
    """Cancel every open order of the caller in `symbol` (the matcher's CancelAll: one
    command, one seq)."""
    who = principal(request)
    if "symbol" not in request.query:
        raise ApiError(Code.VALIDATION_FAILED, "symbol is required")
    market = market_of(request, request.query["symbol"])
    req = matcher_pb2.CancelAllRequest(
        symbol=market.symbol, account=who.account, correlation_id=correlation_id(request)
    )
    reply = await request.app[CORE].of(market.symbol).submit(matcher_pb2.Command(cancel_all=req))
    if reply.status == matcher_pb2.COMMAND_STATUS_REJECTED:
        raise refused(reply)
    cache = request.app[PROJECTION].orders
    canceled = []
    for event in reply.events:
        cache.apply(event, from_feed=False)
        if event.WhichOneof("body") == "order_canceled":
            canceled.append(f"{market.symbol}:{event.order_canceled.order_id}")
    return json_response(
        {
            "symbol": market.symbol,
            "canceled": len(canceled),
            "order_ids": canceled,
            "seq": reply.seq,
            "epoch": reply.epoch,
        }
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/orders", list_orders)
    router.add_delete("/v1/orders", cancel_all)
    router.add_post("/v1/orders", place)
    router.add_delete("/v1/orders/{orderId}", cancel)
    router.add_get("/v1/orders/{orderId}", get_order)
