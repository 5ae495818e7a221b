"""`GET /ws`: the WebSocket endpoint (commands in, channel messages out via the hub).

Client commands are JSON objects: `{"op": "subscribe"|"unsubscribe", "channel": ...,
"symbol": ..., "id": ...}`, `{"op": "auth", "api_key", "ts", "signature"}` (signature over
`GET\\n/ws\\n<ts>\\n`) or `{"op": "auth", "token": <session>}`, and `{"op": "ping"}`.
Public channels take a symbol (trades, book, candles, ticker); private ones (orders,
fills) need an authenticated connection (signed headers or Bearer at the handshake, or the
auth command) and take no symbol. Limits: subscriptions per connection, commands per
window, read size, ping interval and pong timeout, and the Origin allowlist.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from aiohttp import WSMsgType, web

from workloads.gateway import auth, schema
from workloads.gateway.errors import ApiError, Code
from workloads.gateway.hub import PRIVATE_CHANNELS, PUBLIC_CHANNELS, Conn, Hub
from workloads.gateway.keys import HUB, PROJECTION, SETTINGS, STORE
from workloads.gateway.store import Admission, Principal


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    if not allowed or origin is None:
        return True
    return origin.rstrip("/") in allowed


async def admit_ws(request: web.Request, principal: Principal, signature: str) -> None:
    """Replay and revocation checks for a WebSocket authentication (no idempotency)."""
    verdict = await request.app[STORE].admit(
        Admission(
            principal.name, "" if principal.static else principal.api_key, signature, "", "", b""
        )
    )
    if verdict.verdict == schema.REVOKED:
        raise ApiError(Code.API_KEY_REVOKED, "the API key was revoked")
    if verdict.verdict == schema.REPLAYED:
        raise ApiError(Code.REPLAYED_REQUEST, "this signature was already used")
    if verdict.verdict == schema.RATE_LIMITED:
        raise ApiError(Code.RATE_LIMITED, "rate limit exceeded")


async def handshake_principal(request: web.Request) -> Principal | None:
    settings = request.app[SETTINGS]
    store = request.app[STORE]
    given = auth.signed_headers(request.headers)
    if given is not None:
        principal = await auth.verify_signed(
            store,
            given,
            "GET",
            request.raw_path,
            b"",
            int(time.time() * 1000),
            settings.auth.skew_sec,
        )
        await admit_ws(request, principal, given.signature)
        return principal
    authorization = request.headers.get("Authorization")
    if authorization:
        return await auth.verify_session(store, authorization)
    return None


async def ws_handler(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS].ws
    if not origin_allowed(request.headers.get("Origin"), settings.allowed_origins):
        raise ApiError(Code.ORIGIN_NOT_ALLOWED, "this Origin is not allowed to open /ws")
    principal = await handshake_principal(request)
    ws = web.WebSocketResponse(
        autoping=False, max_msg_size=settings.read_limit_bytes, compress=False
    )
    await ws.prepare(request)
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_sndbuf_bytes)
    hub = request.app[HUB]
    conn = Conn(ws, transport, principal.account if principal else None)
    hub.add(conn)
    try:
        async for msg in ws:
            conn.last_seen = time.monotonic()
            if msg.type == WSMsgType.TEXT:
                await command(request, hub, conn, msg.data)
            elif msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.BINARY:
                error(conn, None, Code.BAD_REQUEST, "commands are JSON text messages")
    finally:
        hub.remove(conn)
    return ws


def error(conn: Conn, ident: Any, code: str, message: str) -> None:
    conn.send_json({"type": "error", "id": ident, "code": str(code), "message": message})


def rate_limited(conn: Conn, limit: int, window: float) -> bool:
    now = time.monotonic()
    times = conn.commands
    while times and now - times[0] > window:
        times.popleft()
    if len(times) >= limit:
        return True
    times.append(now)
    return False


async def command(request: web.Request, hub: Hub, conn: Conn, text: str) -> None:
    settings = request.app[SETTINGS].ws
    try:
        message = json.loads(text)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        error(conn, None, Code.INVALID_JSON, "a command is a JSON object")
        return
    ident = message.get("id")
    if rate_limited(conn, settings.command_rate_limit, settings.command_window_sec):
        error(
            conn,
            ident,
            "ws_rate_limited",
            f"at most {settings.command_rate_limit} commands per {settings.command_window_sec}s",
        )
        return
    op = message.get("op")
    if op == "ping":
        conn.send_json({"type": "pong", "id": ident})
    elif op in ("subscribe", "unsubscribe"):
        subscription(request, hub, conn, message, ident, op == "subscribe")
    elif op == "auth":
        try:
            principal = await command_auth(request, message)
        except ApiError as exc:
            error(conn, ident, exc.code, exc.message)
            return
        hub.authenticate(conn, principal.account)
        conn.send_json({"type": "authenticated", "id": ident, "account": principal.account})
    else:
        error(conn, ident, Code.BAD_REQUEST, "op must be subscribe, unsubscribe, auth or ping")


async def command_auth(request: web.Request, message: dict[str, Any]) -> Principal:
    store = request.app[STORE]
    if "token" in message:
        return await auth.verify_session(store, f"Bearer {message.get('token')}")
    given = auth.SignedHeaders(
        str(message.get("api_key", "")),
        str(message.get("ts", "")),
        str(message.get("signature", "")),
    )
    if not all((given.api_key, given.ts, given.signature)):
        raise ApiError(Code.MISSING_CREDENTIALS, "auth needs api_key, ts and signature, or token")
    principal = await auth.verify_signed(
        store,
        given,
        "GET",
        "/ws",
        b"",
        int(time.time() * 1000),
        request.app[SETTINGS].auth.skew_sec,
    )
    await admit_ws(request, principal, given.signature)
    return principal


def subscription(
    request: web.Request, hub: Hub, conn: Conn, message: dict[str, Any], ident: Any, subscribe: bool
) -> None:
    settings = request.app[SETTINGS].ws
    projection = request.app[PROJECTION]
    channel = message.get("channel")
    symbol = message.get("symbol") or ""
    if channel in PRIVATE_CHANNELS:
        if not conn.account:
            error(
                conn,
                ident,
                Code.MISSING_CREDENTIALS,
                f"{channel} needs an authenticated connection",
            )
            return
        symbol = ""
    elif channel in PUBLIC_CHANNELS:
        if symbol not in projection.data:
            error(conn, ident, Code.UNKNOWN_MARKET, f"unknown market {symbol!r}")
            return
    else:
        error(
            conn,
            ident,
            Code.BAD_REQUEST,
            f"channel must be one of {PUBLIC_CHANNELS + PRIVATE_CHANNELS}",
        )
        return
    key = (channel, symbol)
    if not subscribe:
        hub.unsubscribe(conn, channel, symbol)
        conn.send_json({"type": "unsubscribed", "id": ident, "channel": channel, "symbol": symbol})
        return
    if key not in conn.subs and len(conn.subs) >= settings.max_subscriptions:
        error(
            conn,
            ident,
            "subscription_limit",
            f"at most {settings.max_subscriptions} subscriptions per connection",
        )
        return
    hub.subscribe(conn, channel, symbol)
    conn.send_json({"type": "subscribed", "id": ident, "channel": channel, "symbol": symbol})
    if channel == "book":
        conn.send_json(hub.book_snapshot(symbol))
    elif channel == "ticker":
        conn.send_json(hub.ticker_message(symbol))
    elif channel == "candles":
        data = projection.data[symbol]
        for candle in data.candles.recent(1):
            conn.send_json(
                {"channel": "candles", "symbol": symbol, "data": candle.to_json(data.market)}
            )
