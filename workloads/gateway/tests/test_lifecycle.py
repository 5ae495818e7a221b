"""An order's full life with partial fills, seen on REST and on the WebSocket (private
orders and fills, public trades, book snapshot + diffs verified by checksum), and two
gateway replicas agreeing on its status."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import aiohttp
import pytest

from workloads.gateway.client import encode, signed_headers
from workloads.gateway.tests.conftest import StackFactory, new_trader, open_ws, poll

pytestmark = pytest.mark.e2e


class BookMirror:
    """What a client does with book messages: snapshot, then chained diffs, checksum."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.seq = -1
        self.checked = 0

    def apply(self, message: dict[str, Any]) -> None:
        if message["type"] == "snapshot":
            self.bids = dict(message["bids"])
            self.asks = dict(message["asks"])
            self.seq = message["seq"]
        else:
            assert message["prev_seq"] <= self.seq, "gap in book diffs"
            if message["seq"] <= self.seq:
                return
            for side, levels in ((self.bids, message["bids"]), (self.asks, message["asks"])):
                for price, quantity in levels:
                    if float(quantity) == 0:
                        side.pop(price, None)
                    else:
                        side[price] = quantity
            self.seq = message["seq"]
        assert self.checksum() == message["checksum"]
        self.checked += 1

    def checksum(self) -> int:
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))[:10]
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:10]
        text = ",".join(f"{p}:{q}" for p, q in bids) + "|" + ",".join(f"{p}:{q}" for p, q in asks)
        return zlib.crc32(text.encode())


async def test_partial_fills_on_rest_and_ws_and_two_replicas_agree(
    make_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    stack = make_stack(replicas=2)
    first, second = (g.url for g in stack.gateways)
    maker, _ = await new_trader(http, first, stack)
    taker, _ = await new_trader(http, second, stack)
    taker.base_url = second  # the taker trades through the other replica

    private = await open_ws(http, first, maker)
    public = await open_ws(http, second)
    for channel in ("orders", "fills"):
        await private.send({"op": "subscribe", "channel": channel, "id": channel})
    for channel in ("trades", "book"):
        await public.send({"op": "subscribe", "channel": channel, "symbol": "BTC-USDT"})
    await private.wait_for(lambda: len(private.of(kind="subscribed")) == 2)
    await public.wait_for(lambda: public.of("book", "snapshot"))

    sell = await maker.call(
        "POST",
        "/v1/orders",
        {"symbol": "BTC-USDT", "side": "SELL", "price": "61000.00", "quantity": "0.0100"},
    )
    assert sell.status == 201 and sell.body["status"] == "ACCEPTED"
    order_id = sell.body["order_id"]
    # The other replica knows the order at once (it waits for the topic to bring it).
    seen = await taker.call("GET", f"/v1/orders/{order_id}")
    assert seen.status == 404  # ... but only its owner may see it
    seen_by_owner = await maker.call("GET", f"/v1/orders/{order_id}", headers={})
    assert seen_by_owner.body["status"] == "ACCEPTED"

    part = await taker.call(
        "POST",
        "/v1/orders",
        {"symbol": "BTC-USDT", "side": "BUY", "price": "61000.00", "quantity": "0.0040"},
    )
    assert part.body["status"] == "FILLED" and part.body["fills"][0]["price"] == "61000.00"

    async def status_on(url: str, wanted: str, oid: str = order_id) -> Any:
        maker.base_url = url
        got = await maker.call("GET", f"/v1/orders/{oid}")
        return got.status == 200 and got.body["status"] == wanted and got

    for url in (first, second):
        got = await poll(lambda url=url: status_on(url, "PARTIALLY_FILLED"))
        assert (
            got.body["filled_quantity"] == "0.0040" and got.body["remaining_quantity"] == "0.0060"
        )

    rest = await taker.call(
        "POST",
        "/v1/orders",
        {"symbol": "BTC-USDT", "side": "BUY", "price": "61500.00", "quantity": "0.0060"},
    )
    assert rest.body["status"] == "FILLED" and rest.body["average_price"] == "61000.00"
    for url in (first, second):
        got = await poll(lambda url=url: status_on(url, "FILLED"))
        assert [f["quantity"] for f in got.body["fills"]] == ["0.0040", "0.0060"]
        assert got.body["remaining_quantity"] == "0.0000"

    # A resting order, then a cancel: CANCELED on both replicas.
    maker.base_url = first
    rest_buy = await maker.call(
        "POST",
        "/v1/orders",
        {"symbol": "BTC-USDT", "side": "BUY", "price": "59000.00", "quantity": "0.0030"},
    )
    canceled = await maker.call("DELETE", f"/v1/orders/{rest_buy.body['order_id']}")
    assert canceled.body["status"] == "CANCELED"
    maker.base_url = second
    got = await poll(lambda: status_on(second, "CANCELED", rest_buy.body["order_id"]))
    assert got.body["order_id"] == rest_buy.body["order_id"]

    # The WebSocket saw the same life: statuses in order, both fills, both trades.
    def statuses() -> list[str]:
        return [
            o["status"]
            for m in private.of("orders")
            for o in m["data"]
            if o["order_id"] == order_id
        ]

    await private.wait_for(lambda: statuses()[-1:] == ["FILLED"])
    assert statuses() == ["ACCEPTED", "PARTIALLY_FILLED", "FILLED"]
    await private.wait_for(lambda: len([f for m in private.of("fills") for f in m["data"]]) == 2)
    fills = [f for m in private.of("fills") for f in m["data"]]
    assert {f["liquidity"] for f in fills} == {"MAKER"} and fills[0]["order_id"] == order_id
    await public.wait_for(lambda: len([t for m in public.of("trades") for t in m["data"]]) == 2)
    trades = [t for m in public.of("trades") for t in m["data"]]
    assert [t["quantity"] for t in trades] == ["0.0040", "0.0060"]

    mirror = BookMirror()

    def book_settled() -> bool:
        mirror.__init__()  # type: ignore[misc]
        for message in public.of("book"):
            mirror.apply(message)
        return mirror.seq >= canceled.body["updated_seq"] and not mirror.bids and not mirror.asks

    await public.wait_for(book_settled)
    assert mirror.checked >= 3
    rest_book = await maker.call("GET", "/v1/markets/BTC-USDT/orderbook", sign_request=False)
    assert rest_book.body["bids"] == [] and rest_book.body["asks"] == []
    await private.close()
    await public.close()

    # The edge state is shared: a signature seen by one replica is a replay on the other,
    # and an Idempotency-Key answered by one is answered identically by the other.
    body = encode({"symbol": "BTC-USDT", "side": "BUY", "price": "50000.00", "quantity": "0.0010"})
    headers = {
        **signed_headers(maker.api_key, maker.secret, "POST", "/v1/orders", body),
        "Idempotency-Key": "shared-1",
        "Content-Type": "application/json",
    }
    async with http.post(first + "/v1/orders", data=body, headers=headers) as response:
        assert response.status == 201
        original = await response.read()
    async with http.post(second + "/v1/orders", data=body, headers=headers) as response:
        assert response.status == 401 and (await response.json())["code"] == "replayed_request"
    resigned = {
        **signed_headers(maker.api_key, maker.secret, "POST", "/v1/orders", body),
        "Idempotency-Key": "shared-1",
        "Content-Type": "application/json",
    }

    async def replayed_identically() -> bool:
        again = {
            **resigned,
            **signed_headers(maker.api_key, maker.secret, "POST", "/v1/orders", body),
        }
        async with http.post(second + "/v1/orders", data=body, headers=again) as response:
            return response.status == 201 and await response.read() == original

    await poll(replayed_identically)


async def test_a_stopping_gateway_closes_its_websockets_as_going_away(
    make_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """SIGTERM closes the sockets first (1001): their handlers return, and the process exits
    without waiting out the server's shutdown timeout (a browser reconnects elsewhere)."""
    stack = make_stack()
    reader = await open_ws(http, stack.url)
    await reader.send({"op": "subscribe", "channel": "trades", "symbol": "BTC-USDT"})
    await reader.wait_for(lambda: reader.of(kind="subscribed"))
    process = stack.gateways[0].process
    assert process is not None and process.popen is not None
    await asyncio.to_thread(process.stop, 15)
    assert process.popen.returncode == 0  # exited by itself, not killed after the timeout
    await reader.task
    assert reader.closed_code == 1001
