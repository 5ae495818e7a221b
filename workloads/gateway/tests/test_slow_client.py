"""A deliberately slow WebSocket client: the gateway's memory stays bounded, the slow
client is conflated (book, candles) or cut off with 4008 (trades), and a fast client's
latency is unaffected."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from pathlib import Path

import aiohttp
import pytest

from workloads.gateway.tests.conftest import StackFactory, open_ws, poll, pump_trades

pytestmark = pytest.mark.e2e


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def stalled_client(port: int, subscriptions: list[str]) -> socket.socket:
    """A WebSocket client that subscribes and then never reads (tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    for text in subscriptions:
        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(bytes((0x81, 0x80 | len(payload))) + mask + masked)
    return sock


def close_code_seen(sock: socket.socket, code: int) -> bool:
    """Read what the server sent until it closed; whether a close frame with `code` came."""
    sock.settimeout(10)
    data = b""
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return code.to_bytes(2, "big") + b"slow consumer" in data


async def test_slow_client_is_bounded_and_does_not_slow_others(
    make_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    stack = make_stack(
        # Small buffers, so that the book hog is behind within seconds: the events arrive in
        # the outbox's bursts (MATCHER_OUTBOX_LINGER_MS), ten frames a second per channel.
        EDGE_WS_SEND_BUFFER_BYTES="16384",
        EDGE_WS_SOCKET_SNDBUF_BYTES="8192",
        EDGE_WS_FLUSH_MS="10",
    )
    gateway = stack.gateways[0]
    assert gateway.pid is not None
    port = gateway.http_port
    sub = '{"op":"subscribe","channel":"%s","symbol":"BTC-USDT"}'
    trades_hog = stalled_client(port, [sub % c for c in ("trades", "book", "candles", "ticker")])
    book_hog = stalled_client(port, [sub % c for c in ("book", "candles", "ticker")])
    try:
        fast = await open_ws(http, stack.url)
        await fast.send({"op": "subscribe", "channel": "trades", "symbol": "BTC-USDT"})
        await fast.wait_for(lambda: fast.of(kind="subscribed"))
        await asyncio.sleep(0)
        before = rss_bytes(gateway.pid)

        pairs = 6_000  # at 500 trades/s (the benchmark's rate): about 12 s
        pump = asyncio.create_task(pump_trades(stack, pairs, per_batch=10, rate=500))

        async def cut_off() -> bool:
            text = await (await http.get(stack.url + "/metrics")).text()
            return (
                'gateway_ws_dropped_messages_total{channel="trades",reason="slow_consumer"}' in text
            )

        await poll(cut_off, within=30, interval=0.1)
        # Read what the hog was sent before the server gives up on it: the close frame is last.
        assert await asyncio.to_thread(close_code_seen, trades_hog, 4008)
        await pump
        await fast.wait_for(
            lambda: sum(len(m["data"]) for m in fast.of("trades")) >= pairs, within=60
        )
        latencies = sorted(
            at * 1000 - m["ts"]
            for m, at in zip(fast.messages, fast.received_at, strict=True)
            if m.get("channel") == "trades" and "type" not in m
        )
        p99 = latencies[int(len(latencies) * 0.99)]
        grown = rss_bytes(gateway.pid) - before
        metrics = await (await http.get(stack.url + "/metrics")).text()
        dropped = [
            x
            for x in metrics.splitlines()
            if x.startswith("gateway_ws_dropped_messages_total{") and "slow_consumer" in x
        ]
        conflated = [
            x for x in metrics.splitlines() if x.startswith("gateway_ws_conflated_messages_total{")
        ]
        print(f"fast p99 {p99:.1f} ms over {len(latencies)} messages, RSS grew {grown >> 20} MiB")
        # The trades hog was cut off with 4008; the book hog was conflated, not cut off.
        assert dropped and float(dropped[0].rsplit(" ", 1)[1]) >= 1
        assert conflated and any(float(x.rsplit(" ", 1)[1]) > 0 for x in conflated)
        assert p99 < 250, f"fast client p99 {p99:.1f} ms"
        # 6,000 trades put 12,000 orders in the order cache (~15 MiB); hogs add no more than
        # their buffers (16 KiB each + kernel).
        assert grown < 80 << 20, f"RSS grew {grown >> 20} MiB"
        connections = [x for x in metrics.splitlines() if x.startswith("gateway_ws_connections ")]
        assert connections == ["gateway_ws_connections 2.0"]  # the fast client and the book hog
        await fast.close()
    finally:  # a failed assertion must not leave them to the collector
        trades_hog.close()
        book_hog.close()
