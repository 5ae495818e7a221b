"""`POST /v1/smoke/trades`: absent unless EDGE_ENABLE_SMOKE_ROUTES=true; then one real trade
through the matcher, seen on REST and the WebSocket like any other, answered per the
OpenAPI document, and idempotent."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis

from workloads.gateway.client import GatewayClient, encode, signed_headers
from workloads.gateway.tests.conftest import Stack, StackFactory, new_trader, open_ws, poll

pytestmark = pytest.mark.e2e


async def test_smoke_route_is_absent_by_default(stack: Stack, http: aiohttp.ClientSession) -> None:
    trader, _ = await new_trader(http, stack.url)
    reply = await trader.call("POST", "/v1/smoke/trades", {"symbol": "BTC-USDT"})
    assert (reply.status, reply.body["code"]) == (404, "not_found")


async def test_smoke_trade_goes_the_way_of_every_trade(
    make_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    stack = make_stack(EDGE_ENABLE_SMOKE_ROUTES="true")
    document = await (await http.get(stack.url + "/openapi.json")).json()
    operation = schemathesis.openapi.from_dict(document)["/v1/smoke/trades"]["POST"]
    trader, _ = await new_trader(http, stack.url)
    public = await open_ws(http, stack.url)
    await public.send({"op": "subscribe", "channel": "trades", "symbol": "BTC-USDT"})
    await public.wait_for(lambda: public.of(kind="subscribed"))

    body = {"symbol": "BTC-USDT", "price": "60000.00"}
    first = await asyncio.to_thread(signed_post, stack.url, trader, "/v1/smoke/trades", body, "s1")
    assert first.status_code == 201, first.text
    operation.validate_response(first)
    placed = first.json()
    trade = placed["trades"][0]
    assert (trade["price"], trade["quantity"], trade["taker_side"]) == ("60000.00", "0.0001", "BUY")
    assert placed["quantity"] == "0.0001" and placed["seq"] > 0

    # A retry is answered from the stored response; nothing more reaches the matcher.
    seq = await stack.matcher_seq()
    again = await trader.call(
        "POST",
        "/v1/smoke/trades",
        {"symbol": "BTC-USDT", "price": "60000.00"},
        idempotency_key="s1",
    )
    assert again.raw == first.content and again.headers.get("Idempotent-Replayed") == "true"
    assert await stack.matcher_seq() == seq

    async def on_rest() -> Any:
        got = await trader.call("GET", "/v1/markets/BTC-USDT/trades", sign_request=False)
        return [t for t in got.body["trades"] if t["trade_id"] == trade["trade_id"]]

    assert (await poll(on_rest))[0] == trade
    await public.wait_for(
        lambda: any(
            t["trade_id"] == trade["trade_id"] for m in public.of("trades") for t in m["data"]
        )
    )

    # Without a price: the last trade's. Nothing of the smoke maker is left resting.
    second = await trader.call(
        "POST", "/v1/smoke/trades", {"symbol": "BTC-USDT", "quantity": "0.0020"}
    )
    assert second.status == 201, second.body
    assert [(t["price"], t["quantity"]) for t in second.body["trades"]] == [("60000.00", "0.0020")]

    async def book_empty() -> bool:
        got = await trader.call("GET", "/v1/markets/BTC-USDT/orderbook", sign_request=False)
        return got.body["seq"] >= second.body["seq"] + 1 and not got.body["asks"]

    await poll(book_empty)

    # A price through a resting buy would not be a smoke trade of its own: refused.
    bidder, _ = await new_trader(http, stack.url, stack)
    bid = await bidder.call(
        "POST",
        "/v1/orders",
        {"symbol": "BTC-USDT", "side": "BUY", "price": "61000.00", "quantity": "0.0010"},
    )
    assert bid.status == 201, bid.body
    crossing = await trader.call(
        "POST", "/v1/smoke/trades", {"symbol": "BTC-USDT", "price": "60500.00"}
    )
    assert (crossing.status, crossing.body["code"]) == (409, "smoke_would_cross")
    bad = await trader.call("POST", "/v1/smoke/trades", {"symbol": "BTC-USDT", "size": "1"})
    assert (bad.status, bad.body["code"]) == (400, "validation_failed")
    await public.close()


def signed_post(
    url: str, client: GatewayClient, path: str, body: dict[str, Any], idem: str
) -> requests.Response:
    """A signed POST through `requests` (what schemathesis validates)."""
    data = encode(body)
    headers = signed_headers(client.api_key, client.secret, "POST", path, data)
    headers.update({"Idempotency-Key": idem, "Content-Type": "application/json"})
    return requests.post(url + path, data=data, headers=headers, timeout=30)
