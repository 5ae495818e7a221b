"""The API a trading client needs before it can draw a screen, against a real matcher, ledger
and gateway: the markets, the server's clock, a trader's own orders (open and closed, paged),
cancel-all, and the trader's fills from the ledger under the trade ids the order replies gave.
Another trader's orders and fills are never visible."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from workloads.gateway.client import GatewayClient
from workloads.gateway.tests.conftest import StackFactory, new_trader, poll

pytestmark = pytest.mark.integration


async def test_markets_time_orders_cancel_all_and_fills_from_the_ledger(
    make_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    stack = make_stack(ledger=True)
    maker, _ = await new_trader(http, stack.url, stack)
    taker, _ = await new_trader(http, stack.url, stack)

    markets = (await maker.call("GET", "/v1/markets", sign_request=False)).body["markets"]
    (btc,) = markets
    assert (btc["symbol"], btc["tick_size"], btc["lot_size"]) == ("BTC-USDT", "0.01", "0.0001")
    assert (btc["min_quantity"], btc["mode"], btc["last_price"]) == ("0.0001", "NORMAL", None)
    keys = (await maker.call("GET", "/v1/api-keys")).body["keys"]
    assert [k["label"] for k in keys] == ["test"]  # the label new_trader gave it
    clock = (await maker.call("GET", "/v1/time", sign_request=False)).body["server_time"]
    assert abs(clock - time.time() * 1000) < 5_000

    placed = []
    for price in ("60000.00", "61000.00", "62000.00"):
        reply = await maker.call(
            "POST",
            "/v1/orders",
            {"symbol": "BTC-USDT", "side": "SELL", "price": price, "quantity": "0.0100"},
        )
        assert reply.status == 201, reply.body  # fmt: skip
        placed.append(reply.body["order_id"])
    bought = await taker.call(
        "POST",
        "/v1/orders",
        {"symbol": "BTC-USDT", "side": "BUY", "price": "60000.00", "quantity": "0.0100"},
    )
    assert bought.body["status"] == "FILLED", bought.body  # fmt: skip
    (fill,) = bought.body["fills"]

    async def orders(client: GatewayClient, query: str) -> dict[str, Any]:
        reply = await client.call("GET", f"/v1/orders{query}")
        assert reply.status == 200, reply.body
        return reply.body  # type: ignore[no-any-return]

    async def two_open() -> list[str] | None:
        ids = [o["order_id"] for o in (await orders(maker, "?status=open"))["orders"]]
        return ids if len(ids) == 2 else None

    opened = await poll(two_open)
    assert opened == placed[:0:-1]  # newest first
    closed = await orders(maker, "?status=closed&symbol=BTC-USDT")
    assert [o["order_id"] for o in closed["orders"]] == [placed[0]]
    assert closed["orders"][0]["status"] == "FILLED" and "fills" not in closed["orders"][0]
    first = await orders(maker, "?limit=1")
    second = await orders(maker, f"?limit=1&cursor={first['next_cursor']}")
    assert [o["order_id"] for o in first["orders"] + second["orders"]] == placed[:0:-1]
    mine = await orders(taker, "")
    assert [o["order_id"] for o in mine["orders"]] == [bought.body["order_id"]]
    foreign = await taker.call("GET", f"/v1/orders/{placed[1]}")
    assert (foreign.status, foreign.body["code"]) == (404, "order_not_found")

    async def settled(client: GatewayClient) -> list[dict[str, Any]] | None:
        reply = await client.call("GET", "/v1/account/trades?symbol=BTC-USDT")
        assert reply.status == 200, reply.body
        return reply.body["trades"] or None

    (maker_fill,) = await poll(lambda: settled(maker))
    (taker_fill,) = await poll(lambda: settled(taker))
    assert maker_fill["trade_id"] == taker_fill["trade_id"] == fill["trade_id"]
    assert (maker_fill["side"], maker_fill["liquidity"], maker_fill["order_id"]) == (
        "SELL", "MAKER", placed[0],
    )  # fmt: skip
    assert (taker_fill["side"], taker_fill["liquidity"], taker_fill["order_id"]) == (
        "BUY", "TAKER", bought.body["order_id"],
    )  # fmt: skip
    assert (taker_fill["price"], taker_fill["quantity"], taker_fill["quote_amount"]) == (
        "60000.00", "0.0100", "600.000000",
    )  # fmt: skip
    assert taker_fill["fee_asset"] == "BTC" and maker_fill["fee_asset"] == "USDT"
    markets = (await maker.call("GET", "/v1/markets", sign_request=False)).body["markets"]
    assert markets[0]["last_price"] == "60000.00"

    canceled = await maker.call("DELETE", "/v1/orders?symbol=BTC-USDT")
    assert canceled.status == 200, canceled.body
    assert sorted(canceled.body["order_ids"]) == sorted(placed[1:])
    assert (await orders(maker, "?status=open"))["orders"] == []
    assert len((await orders(maker, "?status=closed"))["orders"]) == 3

    for method, path, status, code in [
        ("GET", "/v1/orders?status=bogus", 400, "validation_failed"),
        ("GET", "/v1/orders?limit=0", 400, "validation_failed"),
        ("GET", "/v1/orders?limit=501", 400, "validation_failed"),
        ("GET", "/v1/orders?cursor=nope", 400, "validation_failed"),
        ("GET", "/v1/orders?symbol=NOPE", 404, "unknown_market"),
        ("DELETE", "/v1/orders", 400, "validation_failed"),
        ("DELETE", "/v1/orders?symbol=NOPE", 404, "unknown_market"),
        ("GET", "/v1/account/trades?cursor=x", 400, "validation_failed"),
        ("GET", "/v1/account/trades?from=5&to=4", 400, "validation_failed"),
        ("GET", "/v1/account/trades?symbol=NOPE", 404, "unknown_market"),
    ]:
        refused = await maker.call(method, path)
        assert (refused.status, refused.body["code"]) == (status, code), (path, refused.body)
    anonymous = await maker.call("GET", "/v1/account/trades", sign_request=False)
    assert anonymous.status == 401

    assert stack.ledger is not None
    stack.ledger.stop()
    down = await maker.call("GET", "/v1/account/trades")
    assert (down.status, down.body["code"]) == (503, "ledger_unavailable")
