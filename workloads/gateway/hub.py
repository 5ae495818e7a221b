"""WebSocket fan-out: channels, per-tick frames shared by all subscribers, backpressure.

Every `flush_ms` the hub turns what changed into one frame per channel and market (trades
of the tick in one message, one book diff, the latest candle, the ticker at most once a
second) and writes the same bytes to each subscriber's transport. No subscriber is ever
awaited: a write either fits or the connection is slow.

Backpressure policy (a connection is slow while its unsent bytes exceed
EDGE_WS_SEND_BUFFER_BYTES; the kernel buffer is capped per socket too):
- book: diffs for a slow connection are dropped and the book is marked stale; once its
  buffer drains below half the limit it gets a fresh snapshot (conflation by resync).
- candles, ticker: the latest message per key waits in a slot (last value wins) and is
  sent when the buffer drains; older values are counted as conflated.
- trades, orders, fills: never conflated or silently dropped. Overflow closes the
  connection with code 4008 ("slow consumer"); the client reconnects and resyncs from
  REST (recent trades, order status). Counted as dropped.
So memory per connection is bounded by the buffer limit plus one slot per subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from workloads.gateway.marketdata import Projection
from workloads.gateway.settings import WsSettings

log = logging.getLogger(__name__)

ABORT_AFTER_SEC = 5.0
"""A closed slow connection's transport is aborted after this, whether or not the peer read
the close frame: its unsent bytes (bounded by the buffer limit) are freed then."""
CLOSE_PONG_TIMEOUT = 4002
CLOSE_SLOW_CONSUMER = 4008
PUBLIC_CHANNELS = ("trades", "book", "candles", "ticker")
PRIVATE_CHANNELS = ("orders", "fills")
CONFLATED_CHANNELS = ("candles", "ticker")

WS_CONNECTIONS = Gauge("gateway_ws_connections", "Open WebSocket connections")
WS_DROPPED = Counter(
    "gateway_ws_dropped_messages_total", "Messages not delivered", ["channel", "reason"]
)
WS_CONFLATED = Counter(
    "gateway_ws_conflated_messages_total", "Messages replaced by a newer one", ["channel"]
)
WS_FRAMES = Counter("gateway_ws_frames_total", "Data frames written", ["channel"])
WS_TICK = Histogram(
    "gateway_ws_tick_seconds",
    "Duration of one fan-out tick",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
_encode = msgspec.json.encode


def text_frame(payload: bytes) -> bytes:
    """A server-to-client text frame (unmasked, unfragmented, uncompressed)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


PING_FRAME = b"\x89\x00"


def close_frame(code: int, reason: str) -> bytes:
    body = code.to_bytes(2, "big") + reason.encode()[:120]
    return bytes((0x88, len(body))) + body


class Conn:
    """One WebSocket connection's subscriptions and backpressure state."""

    __slots__ = (
        "account",
        "closed",
        "commands",
        "last_seen",
        "slots",
        "stale_books",
        "subs",
        "transport",
        "ws",
    )

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport, account: str | None
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.account = account
        self.subs: set[tuple[str, str]] = set()
        self.slots: dict[tuple[str, str, int], bytes] = {}
        self.stale_books: set[str] = set()
        self.last_seen = time.monotonic()
        self.commands: deque[float] = deque()
        self.closed = False

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def write(self, frame: bytes) -> None:
        if not self.closed and not self.transport.is_closing():
            self.transport.write(frame)

    def send_json(self, message: dict[str, Any]) -> None:
        self.write(text_frame(_encode(message)))


class Hub:
    def __init__(self, settings: WsSettings, projection: Projection) -> None:
        self.settings = settings
        self.projection = projection
        self.limit = settings.send_buffer_bytes
        self.conns: set[Conn] = set()
        self.subscribers: dict[tuple[str, str], set[Conn]] = {}
        self.accounts: dict[str, set[Conn]] = {}
        self.backlogged: set[Conn] = set()
        self._trades: dict[str, list[dict[str, Any]]] = {}
        self._trades_ts: dict[str, float] = {}
        self._books: set[str] = set()
        self._candles: dict[tuple[str, int], dict[str, Any]] = {}
        self._tickers: set[str] = set()
        self._ticker_sent: dict[str, float] = {}
        self._private: dict[tuple[str, str], list[dict[str, Any]]] = {}
        projection.sink = self

    # ------------------------------------------------------------------ sink (no I/O)

    def trade(self, symbol: str, trade: dict[str, Any]) -> None:
        if ("trades", symbol) in self.subscribers:
            self._trades.setdefault(symbol, []).append(trade)
            self._trades_ts.setdefault(symbol, time.time())

    def book_changed(self, symbol: str) -> None:
        self._books.add(symbol)

    def candle(self, symbol: str, candle: dict[str, Any]) -> None:
        if ("candles", symbol) in self.subscribers:
            self._candles[(symbol, candle["open_time"])] = candle

    def ticker_changed(self, symbol: str) -> None:
        if ("ticker", symbol) in self.subscribers:
            self._tickers.add(symbol)

    def wants(self, account: str) -> bool:
        """Whether a connection of `account` is open (else private messages are not built)."""
        return account in self.accounts

    def private(self, account: str, channel: str, payload: dict[str, Any]) -> None:
        if account in self.accounts:
            self._private.setdefault((account, channel), []).append(payload)

    # ------------------------------------------------------------------ connections

    def add(self, conn: Conn) -> None:
        self.conns.add(conn)
        if conn.account:
            self.accounts.setdefault(conn.account, set()).add(conn)
        WS_CONNECTIONS.set(len(self.conns))

    def authenticate(self, conn: Conn, account: str) -> None:
        if conn.account:
            self.accounts.get(conn.account, set()).discard(conn)
        conn.account = account
        self.accounts.setdefault(account, set()).add(conn)

    def remove(self, conn: Conn) -> None:
        conn.closed = True
        self.conns.discard(conn)
        self.backlogged.discard(conn)
        for key in conn.subs:
            subs = self.subscribers.get(key)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.subscribers[key]
        conn.subs.clear()
        if conn.account:
            mine = self.accounts.get(conn.account)
            if mine is not None:
                mine.discard(conn)
                if not mine:
                    del self.accounts[conn.account]
        WS_CONNECTIONS.set(len(self.conns))

    def subscribe(self, conn: Conn, channel: str, symbol: str) -> None:
        conn.subs.add((channel, symbol))
        self.subscribers.setdefault((channel, symbol), set()).add(conn)

    def unsubscribe(self, conn: Conn, channel: str, symbol: str) -> None:
        conn.subs.discard((channel, symbol))
        subs = self.subscribers.get((channel, symbol))
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.subscribers[(channel, symbol)]

    def close(self, conn: Conn, code: int, reason: str) -> None:
        """Close without waiting on the peer: queue the close frame, drop the rest soon."""
        if conn.closed:
            return
        transport = conn.transport
        with contextlib.suppress(Exception):
            transport.write(close_frame(code, reason))
        conn.closed = True
        self.remove(conn)
        with contextlib.suppress(Exception):
            transport.close()
        asyncio.get_running_loop().call_later(ABORT_AFTER_SEC, transport.abort)

    # ------------------------------------------------------------------ messages

    def book_snapshot(self, symbol: str) -> dict[str, Any]:
        data = self.projection.data[symbol]
        return {
            "channel": "book",
            "type": "snapshot",
            "sample": data.sample,
            **data.book.snapshot(),
        }

    def ticker_message(self, symbol: str) -> dict[str, Any]:
        data = self.projection.data[symbol]
        now_ms = int(time.time() * 1000)
        return {
            "channel": "ticker",
            "symbol": symbol,
            "sample": data.sample,
            "data": data.candles.ticker(now_ms),
        }

    # ------------------------------------------------------------------ the tick

    def _fanout(self, key: tuple[str, str], frame: bytes, slot: int | None = None) -> None:
        subs = self.subscribers.get(key)
        if not subs:
            return
        channel, symbol = key
        limit = self.limit
        sent = 0
        for conn in tuple(subs):
            if conn.closed:
                continue
            slow = conn.buffered() > limit
            if slot is not None:  # conflatable
                skey = (channel, symbol, slot)
                if slow or skey in conn.slots:
                    if skey in conn.slots:
                        WS_CONFLATED.labels(channel).inc()
                    conn.slots[skey] = frame
                    self.backlogged.add(conn)
                    continue
            elif channel == "book":
                if slow or symbol in conn.stale_books:
                    if symbol not in conn.stale_books:
                        conn.stale_books.add(symbol)
                        self.backlogged.add(conn)
                    WS_CONFLATED.labels(channel).inc()
                    continue
            elif slow:
                WS_DROPPED.labels(channel, "slow_consumer").inc()
                self.close(conn, CLOSE_SLOW_CONSUMER, f"slow consumer: {channel} overflow")
                continue
            conn.transport.write(frame)
            sent += 1
        if sent:
            WS_FRAMES.labels(channel).inc(sent)

    def flush(self) -> None:
        """One tick: build each channel's frame once and fan it out."""
        if self._trades:
            trades, stamps = self._trades, self._trades_ts
            self._trades, self._trades_ts = {}, {}
            sent = int(time.time() * 1000)
            for symbol, items in trades.items():
                message = {
                    "channel": "trades",
                    "symbol": symbol,
                    "ts": int(stamps[symbol] * 1000),
                    "sent": sent,
                    "data": items,
                }
                self._fanout(("trades", symbol), text_frame(_encode(message)))
        if self._books:
            books, self._books = self._books, set()
            for symbol in books:
                data = self.projection.data.get(symbol)
                diff = data.book.take_diff() if data is not None else None
                if diff is not None:
                    message = {"channel": "book", "type": "diff", **diff}
                    self._fanout(("book", symbol), text_frame(_encode(message)))
        if self._candles:
            candles, self._candles = self._candles, {}
            for (symbol, start), candle in candles.items():
                message = {"channel": "candles", "symbol": symbol, "data": candle}
                self._fanout(("candles", symbol), text_frame(_encode(message)), slot=start)
        if self._tickers:
            now = time.monotonic()
            for symbol in list(self._tickers):
                if now - self._ticker_sent.get(symbol, 0.0) < 1.0:
                    continue
                self._tickers.discard(symbol)
                self._ticker_sent[symbol] = now
                frame = text_frame(_encode(self.ticker_message(symbol)))
                self._fanout(("ticker", symbol), frame, slot=0)
        if self._private:
            private, self._private = self._private, {}
            for (account, channel), items in private.items():
                frame = text_frame(_encode({"channel": channel, "data": items}))
                for conn in tuple(self.accounts.get(account, ())):
                    if (channel, "") not in conn.subs or conn.closed:
                        continue
                    if conn.buffered() > self.limit:
                        WS_DROPPED.labels(channel, "slow_consumer").inc()
                        self.close(conn, CLOSE_SLOW_CONSUMER, f"slow consumer: {channel} overflow")
                        continue
                    conn.transport.write(frame)
        if self.backlogged:
            self._drain()

    def _drain(self) -> None:
        """Send conflated slots and fresh book snapshots to connections that caught up."""
        for conn in tuple(self.backlogged):
            if conn.closed:
                self.backlogged.discard(conn)
                continue
            if conn.buffered() > self.limit // 2:
                continue
            self.backlogged.discard(conn)
            for symbol in sorted(conn.stale_books):
                if ("book", symbol) in conn.subs:
                    conn.send_json(self.book_snapshot(symbol))
            conn.stale_books.clear()
            slots, conn.slots = conn.slots, {}
            for frame in slots.values():
                conn.write(frame)

    def book_resynced(self, symbol: str) -> None:
        """After a matcher snapshot replaced the book: every subscriber gets a snapshot."""
        for conn in tuple(self.subscribers.get(("book", symbol), ())):
            conn.stale_books.add(symbol)
            self.backlogged.add(conn)

    # ------------------------------------------------------------------ background

    async def run(self) -> None:
        interval = self.settings.flush_ms / 1000
        candle_check = 0.0
        spent = 0.0
        while True:
            # Keep the cadence: a long fan-out shortens the next wait (never below zero).
            await asyncio.sleep(max(0.0, interval - spent))
            now = time.monotonic()
            if now - candle_check > 1.0:
                candle_check = now
                for symbol, candle in self.projection.tick_candles(int(time.time() * 1000)):
                    self.candle(symbol, candle.to_json(self.projection.markets[symbol]))
            try:
                self.flush()
            except Exception:  # a bug in one tick must not end fan-out for everyone
                log.exception("fan-out tick failed")
            spent = time.monotonic() - now
            WS_TICK.observe(spent)

    async def keepalive(self) -> None:
        """Ping every connection each interval; close those silent past the pong timeout."""
        s = self.settings
        while True:
            await asyncio.sleep(s.ping_interval_sec)
            now = time.monotonic()
            for conn in tuple(self.conns):
                if now - conn.last_seen > s.pong_timeout_sec:
                    WS_DROPPED.labels("control", "pong_timeout").inc()
                    self.close(conn, CLOSE_PONG_TIMEOUT, "pong timeout")
                elif conn.buffered() <= self.limit:
                    conn.write(PING_FRAME)
