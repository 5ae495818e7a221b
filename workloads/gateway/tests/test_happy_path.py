"""A signed order end to end: gateway process -> real matcher -> Kafka -> back."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import pytest

from workloads.gateway.tests.conftest import STATIC_KEY, STATIC_SECRET, Stack, new_trader, poll

pytestmark = pytest.mark.e2e


async def test_signed_order_is_the_matchers_result(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    maker, maker_account = await new_trader(http, stack.url, stack)
    taker, _ = await new_trader(http, stack.url, stack)
    me = await maker.call("GET", "/v1/auth/me")
    assert me.status == 200, me.body
    assert me.body["account"] == maker_account and me.body["auth"] == "api_key"

    placed = await maker.call(
        "POST",
        "/v1/orders",
        {"symbol": "BTC-USDT", "side": "SELL", "price": "60000.00", "quantity": "0.0100"},
    )
    assert placed.status == 201, placed.body
    order = placed.body
    assert order["status"] == "ACCEPTED" and order["epoch"] >= 1 and order["seq"] > 0
    assert order["price"] == "60000.00" and order["quantity"] == "0.0100"
    assert order["order_id"] == f"BTC-USDT:{order['seq']}"
    assert len(placed.headers["X-Trace-Id"]) == 32

    taken = await taker.call(
        "POST",
        "/v1/orders",
        {
            "symbol": "BTC-USDT",
            "side": "BUY",
            "type": "LIMIT",
            "price": "60000.00",
            "quantity": "0.0100",
            "time_in_force": "IOC",
        },
    )
    assert taken.status == 201, taken.body
    assert taken.body["status"] == "FILLED" and taken.body["fills"][0]["liquidity"] == "TAKER"
    assert taken.body["average_price"] == "60000.00"

    async def filled() -> bool:
        got = await maker.call("GET", f"/v1/orders/{order['order_id']}")
        return got.status == 200 and got.body["status"] == "FILLED"

    await poll(filled)

    async def settled() -> bool:
        reply = await maker.call("GET", "/v1/account/balances")
        usdt = [b for b in reply.body["balances"] if b["asset"] == "USDT"]
        btc = [b for b in reply.body["balances"] if b["asset"] == "BTC"]
        return (
            bool(usdt and btc)
            and usdt[0]["total"] == "1000000600.000000"
            and btc[0]["total"] == "9999.99000000"
        )

    await poll(settled)
    trades = await maker.call("GET", "/v1/markets/BTC-USDT/trades", sign_request=False)
    assert trades.body["trades"][0]["price"] == "60000.00" and not trades.body["sample"]


async def test_example_client_places_a_first_signed_order(stack: Stack) -> None:
    """What `make up` tells a newcomer to run."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workloads.gateway.example_client",
        "--url",
        stack.url,
        "--key",
        STATIC_KEY,
        "--secret",
        STATIC_SECRET,
        "--fund",
        stack.matcher.target,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode()
    assert process.returncode == 0, text
    assert "order: 201" in text and '"status": "ACCEPTED"' in text, text
