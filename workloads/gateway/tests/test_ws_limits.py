"""The WebSocket limits of the seed: Origin allowlist, subscription cap, command rate
limit, read limit, ping interval and pong timeout; private channels need auth."""

from __future__ import annotations

import aiohttp
import pytest

from workloads.gateway.tests.conftest import StackFactory, WsReader, new_trader, open_ws

pytestmark = pytest.mark.e2e


async def test_ws_limits(make_stack: StackFactory, http: aiohttp.ClientSession) -> None:
    stack = make_stack(
        EDGE_WS_ALLOWED_ORIGINS="https://app.exchange.example,https://admin.exchange.example",
        EDGE_WS_MAX_SUBSCRIPTIONS="3",
        EDGE_WS_COMMAND_RATE_LIMIT="5",
        EDGE_WS_COMMAND_WINDOW_SEC="60",
        EDGE_WS_READ_LIMIT_BYTES="1024",
        EDGE_WS_PING_INTERVAL_SEC="0.2",
        EDGE_WS_PONG_TIMEOUT_SEC="1",
    )
    url = stack.url
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url + "/ws", headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403
    allowed = await open_ws(http, url, headers={"Origin": "https://app.exchange.example"})

    # Subscription cap: the fourth distinct subscription is refused.
    for i, channel in enumerate(("trades", "book", "candles", "ticker")):
        await allowed.send({"op": "subscribe", "channel": channel, "symbol": "BTC-USDT", "id": i})
    await allowed.wait_for(lambda: allowed.of(kind="error"))
    assert [m["code"] for m in allowed.of(kind="error")] == ["subscription_limit"]
    assert len(allowed.of(kind="subscribed")) == 3
    # Private channels need an authenticated connection.
    await allowed.send({"op": "subscribe", "channel": "orders", "id": "p"})
    await allowed.wait_for(lambda: len(allowed.of(kind="error")) == 2)
    assert allowed.of(kind="error")[-1]["code"] == "missing_credentials"

    # Command rate limit: 5 per window; the connection has used 5, so the next is refused.
    await allowed.send({"op": "ping", "id": "over"})
    await allowed.wait_for(lambda: len(allowed.of(kind="error")) == 3)
    assert allowed.of(kind="error")[-1]["code"] == "ws_rate_limited"
    await allowed.close()

    # Read limit: a message over EDGE_WS_READ_LIMIT_BYTES closes with 1009.
    big = await open_ws(http, url)
    await big.ws.send_str("x" * 2048)
    await big.wait_for(lambda: big.task.done())
    assert big.closed_code == 1009

    # Pong timeout: a client that never answers pings is closed with 4002.
    silent = await http.ws_connect(url + "/ws", autoping=False)
    reader = WsReader(silent)
    await reader.wait_for(lambda: reader.task.done(), within=10)
    assert reader.closed_code == 4002

    # An authenticated connection (signed handshake) may use the private channels.
    trader, _ = await new_trader(http, url)
    private = await open_ws(http, url, trader)
    await private.send({"op": "subscribe", "channel": "orders", "id": 1})
    await private.wait_for(lambda: private.of(kind="subscribed"))
    await private.close()
