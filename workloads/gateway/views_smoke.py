"""`POST /v1/smoke/trades`: make one real trade, for smoke tests (EDGE_ENABLE_SMOKE_ROUTES).

Off by default, and then the route does not exist (404). When on, a signed request (or a
session) with an Idempotency-Key sends the market's matcher one `SubmitBatch` of five
commands, in order: credit the base to the account `smoke-maker` and the quote to
`smoke-taker` (exactly what the pair needs; the ledger books such funding as a deposit from
`@external`), a post-only GTC sell of `smoke-maker`, an IOC buy of `smoke-taker` at the same
price, then cancel-all of `smoke-maker` (nothing of it keeps resting). The trade then takes
the path of every trade: the matcher's WAL, the events topic, the ledger's settlement, the
gateway's trades, candles and WebSocket channels, so a smoke test can watch it arrive.

The price defaults to the market's last trade price and the quantity to one lot. As for any
order, resting sells at that price or below are matched first (their owners trade with
`smoke-taker`); a price that would cross resting buys is refused (409 `smoke_would_cross`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from contracts.v1 import common_pb2, funding_pb2, matcher_pb2
from workloads.gateway.errors import REJECT_STATUS, ApiError, Code, reject_code
from workloads.gateway.guard import policy, principal
from workloads.gateway.jsonio import json_response
from workloads.gateway.keys import CORE, PROJECTION
from workloads.gateway.marketdata import public_trade
from workloads.gateway.markets import Market, NotRepresentable
from workloads.gateway.views_auth import json_object
from workloads.gateway.views_orders import correlation_id, market_of

MAKER, TAKER = "smoke-maker", "smoke-taker"
FIELDS = frozenset(("symbol", "price", "quantity"))


def amounts(body: dict[str, Any], market: Market, last_price: str | None) -> tuple[int, int]:
    """(price, quantity) in matcher units: given, or the last trade price and one lot."""
    unknown = set(body) - FIELDS
    if unknown:
        raise ApiError(Code.VALIDATION_FAILED, f"unknown fields {sorted(unknown)}")
    price_text = body.get("price", last_price)
    if price_text is None:
        raise ApiError(Code.VALIDATION_FAILED, "price is required: the market has no trade yet")
    try:
        price = market.price_units(price_text)
        quantity = market.quantity_units(body["quantity"]) if "quantity" in body else 0
    except NotRepresentable as exc:
        raise ApiError(exc.code, str(exc)) from None
    return price, quantity or market.lot_size


def commands(
    market: Market, price: int, quantity: int, tag: str, correlation: str
) -> list[matcher_pb2.Command]:
    def fund(account: str, asset: str, amount: int) -> matcher_pb2.Command:
        return matcher_pb2.Command(
            funding=funding_pb2.FundingCommand(
                funding_id=f"{tag}-{asset}",
                account=account,
                asset=asset,
                amount=amount,
                direction=funding_pb2.FUNDING_DIRECTION_CREDIT,
                correlation_id=correlation,
            )
        )

    def order(
        account: str,
        side: common_pb2.Side.ValueType,
        tif: common_pb2.TimeInForce.ValueType,
        post_only: bool,
        suffix: str,
    ) -> matcher_pb2.Command:
        return matcher_pb2.Command(
            place_order=matcher_pb2.PlaceOrderRequest(
                symbol=market.symbol,
                account=account,
                client_order_id=f"{tag}-{suffix}",
                side=side,
                order_type=common_pb2.ORDER_TYPE_LIMIT,
                time_in_force=tif,
                price=price,
                quantity=quantity,
                post_only=post_only,
                correlation_id=correlation,
            )
        )

    return [
        fund(MAKER, market.base_asset, quantity),
        fund(TAKER, market.quote_asset, price * quantity // market.lot_size),
        order(MAKER, common_pb2.SIDE_SELL, common_pb2.TIME_IN_FORCE_GTC, True, "maker"),
        order(TAKER, common_pb2.SIDE_BUY, common_pb2.TIME_IN_FORCE_IOC, False, "taker"),
        matcher_pb2.Command(
            cancel_all=matcher_pb2.CancelAllRequest(
                symbol=market.symbol, account=MAKER, correlation_id=correlation
            )
        ),
    ]


def refused(reply: matcher_pb2.CommandReply, what: str) -> ApiError:
    code = reject_code(reply.reject_reason)
    if code == "post_only_would_take":
        return ApiError(Code.SMOKE_WOULD_CROSS, "the price crosses resting buys; pick another")
    return ApiError(code, f"the matcher refused the {what}: {code}", REJECT_STATUS.get(code, 400))


@policy("user")
async def smoke_trade(request: web.Request) -> web.Response:
    who = principal(request)
    body = await json_object(request)
    market = market_of(request, body.get("symbol"))
    core = request.app[CORE].of(market.symbol)
    trades = request.app[PROJECTION].data[market.symbol].trades
    price, quantity = amounts(body, market, trades[-1]["price"] if trades else None)
    # Ids from the caller's scope and Idempotency-Key: a retry meets the matcher's own
    # idempotency (funding ids, client order ids) rather than trading twice.
    scope_key = f"{who.name}\n{request.headers.get('Idempotency-Key', '')}".encode()
    tag = "smoke-" + hashlib.sha256(scope_key).hexdigest()[:24]
    replies = await core.submit_batch(
        commands(market, price, quantity, tag, correlation_id(request))
    )
    for reply, what in zip(replies[:4], ("funding", "funding", "sell", "buy"), strict=True):
        if reply.status == matcher_pb2.COMMAND_STATUS_REJECTED and reply.reject_reason != (
            common_pb2.REJECT_REASON_DUPLICATE_FUNDING_ID  # a retry: credited the first time
        ):
            raise refused(reply, what)
    maker, taker = replies[2], replies[3]
    fills = [e.trade_executed for e in taker.events if e.WhichOneof("body") == "trade_executed"]
    if not fills:
        raise ApiError(Code.SMOKE_NO_TRADE, "the buy did not trade")
    return json_response(
        {
            "symbol": market.symbol,
            "price": market.format_price(price),
            "quantity": market.format_quantity(quantity),
            "maker_order_id": f"{market.symbol}:{maker.order_id}",
            "taker_order_id": f"{market.symbol}:{taker.order_id}",
            "trades": [public_trade(market, t) for t in fills],
            "seq": taker.seq,
            "epoch": taker.epoch,
        },
        status=201,
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/smoke/trades", smoke_trade)
