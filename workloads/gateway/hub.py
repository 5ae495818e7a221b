"""WebSocket fan-out: channels, frames shared by all subscribers, backpressure.

When something changed, at most once per `flush_ms`, the hub turns it into one message per
channel and market (every trade since the last one, with `prev_seq`/`seq` so they chain; one
book diff; the latest candle; the ticker at most once a second), encodes and frames it once,
and writes the same bytes to each subscriber's transport (`write_all`). The cost is one
send(2) per subscriber and frame, however many trades the frame carries. No subscriber is
ever awaited: a write either fits or the connection is slow.

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
import itertools
import logging
import time
from collections import deque
from collections.abc import Iterable
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


_serials = itertools.count()


class Conn:
    """One WebSocket connection's subscriptions and backpressure state."""

    __slots__ = (
        "account",
        "closed",
        "commands",
        "last_seen",
        "serial",
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
        self.serial = next(_serials)  # spreads pings over the interval

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def write(self, frame: bytes) -> None:
        if not self.closed and not self.transport.is_closing():
            self.transport.write(frame)

    def send_json(self, message: dict[str, Any]) -> None:
        self.write(text_frame(_encode(message)))


def write_all(
    conns: Iterable[Conn], frame: bytes, limit: int | None = None
) -> tuple[int, list[Conn]]:
    """Write one frame to many connections: one transport.write each (a send(2) when the
    transport holds nothing), nothing awaited. Connections with more than `limit` unsent
    bytes are returned instead (slow). Returns (frames written, slow connections)."""
    slow: list[Conn] = []
    sent = 0
    for conn in conns:
        transport = conn.transport
        if limit is not None and transport.get_write_buffer_size() > limit:
            slow.append(conn)
        elif not transport.is_closing():
            transport.write(frame)
            sent += 1
    return sent, slow


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
        self._trades_head: dict[str, tuple[int, float]] = {}  # (prev_seq, oldest receipt)
        self._trade_seq: dict[str, int] = {}  # seq of the last trade seen per market
        self._books: set[str] = set()
        self._candles: dict[tuple[str, int], dict[str, Any]] = {}
        self._tickers: set[str] = set()
        self._ticker_sent: dict[str, float] = {}
        self._private: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._dirty = asyncio.Event()
        projection.sink = self

    # ------------------------------------------------------------------ sink (no I/O)

    def trade(self, symbol: str, trade: dict[str, Any], received: float | None = None) -> None:
        """Queue a trade for the next frame; `received` is when the feed read it (epoch s).

        The chain (`prev_seq`) advances with every trade, subscribed or not, so a client
        can tell a message that follows what it holds from one after a gap."""
        prev = self._trade_seq.get(symbol, 0)
        self._trade_seq[symbol] = trade["seq"]
        if ("trades", symbol) not in self.subscribers:
            return
        batch = self._trades.get(symbol)
        if batch is None:
            self._trades[symbol] = batch = []
            self._trades_head[symbol] = (prev, time.time() if received is None else received)
            self._wake()
        batch.append(trade)

    def book_changed(self, symbol: str) -> None:
        self._books.add(symbol)  # taken at the next flush even unsubscribed: diffs chain
        if ("book", symbol) in self.subscribers:
            self._wake()

    def candle(self, symbol: str, candle: dict[str, Any]) -> None:
        if ("candles", symbol) in self.subscribers:
            self._candles[(symbol, candle["open_time"])] = candle
            self._wake()

    def ticker_changed(self, symbol: str) -> None:
        if ("ticker", symbol) in self.subscribers:
            self._tickers.add(symbol)
            self._wake()

    def wants(self, account: str) -> bool:
        """Whether a connection of `account` is open (else private messages are not built)."""
        return account in self.accounts

    def private(self, account: str, channel: str, payload: dict[str, Any]) -> None:
        if account in self.accounts:
            self._private.setdefault((account, channel), []).append(payload)
            self._wake()

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
        ready: list[Conn] = []
        if slot is None and channel != "book":  # trades: never conflated, overflow closes
            sent, overflowing = write_all(subs, frame, limit)
            for conn in overflowing:
                WS_DROPPED.labels(channel, "slow_consumer").inc()
                self.close(conn, CLOSE_SLOW_CONSUMER, f"slow consumer: {channel} overflow")
            WS_FRAMES.labels(channel).inc(sent)
            return
        for conn in tuple(subs):
            slow = conn.transport.get_write_buffer_size() > limit
            if slot is not None:  # conflatable
                skey = (channel, symbol, slot)
                if slow or skey in conn.slots:
                    if skey in conn.slots:
                        WS_CONFLATED.labels(channel).inc()
                    conn.slots[skey] = frame
                    self.backlogged.add(conn)
                    continue
            elif slow or symbol in conn.stale_books:  # book
                if symbol not in conn.stale_books:
                    conn.stale_books.add(symbol)
                    self.backlogged.add(conn)
                WS_CONFLATED.labels(channel).inc()
                continue
            ready.append(conn)
        if ready:
            WS_FRAMES.labels(channel).inc(write_all(ready, frame)[0])

    def flush(self) -> None:
        """One tick: build each channel's frame once and fan it out."""
        if self._trades:
            trades, heads = self._trades, self._trades_head
            self._trades, self._trades_head = {}, {}
            sent = int(time.time() * 1000)
            for symbol, items in trades.items():
                prev_seq, received = heads[symbol]
                message = {
                    "channel": "trades",
                    "symbol": symbol,
                    "prev_seq": prev_seq,
                    "seq": items[-1]["seq"],
                    "ts": int(received * 1000),
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
                ready = []
                for conn in tuple(self.accounts.get(account, ())):
                    if (channel, "") not in conn.subs or conn.closed:
                        continue
                    if conn.buffered() > self.limit:
                        WS_DROPPED.labels(channel, "slow_consumer").inc()
                        self.close(conn, CLOSE_SLOW_CONSUMER, f"slow consumer: {channel} overflow")
                        continue
                    ready.append(conn)
                WS_FRAMES.labels(channel).inc(write_all(ready, frame)[0])
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
        self._wake()

    # ------------------------------------------------------------------ background

    def _wake(self) -> None:
        self._dirty.set()

    async def run(self) -> None:
        """Flush as soon as something changed, but start flushes at least `flush_ms` apart:
        a lone trade goes out at once, a busy market gets one frame per channel per
        `flush_ms` (the fan-out cost is per frame and subscriber, not per trade). A flush
        that takes longer than `flush_ms` is followed at once by the next, after one turn of
        the loop (whatever arrived meanwhile then shares one frame)."""
        loop = asyncio.get_running_loop()
        interval = self.settings.flush_ms / 1000
        start_at = 0.0  # the next flush starts no earlier than this
        candle_check = 0.0
        while True:
            if not self._dirty.is_set():
                with contextlib.suppress(TimeoutError):  # at least once a second: candles
                    await asyncio.wait_for(self._dirty.wait(), 1.0)
            # Always yield, even when no wait is due: the loop must read sockets (and drain
            # them) between two flushes.
            await asyncio.sleep(max(0.0, start_at - loop.time()))
            self._dirty.clear()
            start = loop.time()
            if start - candle_check > 1.0:
                candle_check = start
                for symbol, candle in self.projection.tick_candles(int(time.time() * 1000)):
                    self.candle(symbol, candle.to_json(self.projection.markets[symbol]))
            try:
                self.flush()
            except Exception:  # a bug in one tick must not end fan-out for everyone
                log.exception("fan-out tick failed")
            if self._tickers or self.backlogged:
                self._dirty.set()  # held back (ticker once a second) or waiting to drain
            start_at = start + interval
            WS_TICK.observe(loop.time() - start)

    async def keepalive(self) -> None:
        """Ping every connection once per interval, a slice of them each second (so 5,000
        pongs do not come back in one burst that holds up a fan-out); close connections
        silent past the pong timeout."""
        s = self.settings
        step = min(1.0, s.ping_interval_sec)
        rounds = max(1, round(s.ping_interval_sec / step))
        tick = 0
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            part, tick = tick % rounds, tick + 1
            for conn in tuple(self.conns):
                if now - conn.last_seen > s.pong_timeout_sec:
                    WS_DROPPED.labels("control", "pong_timeout").inc()
                    self.close(conn, CLOSE_PONG_TIMEOUT, "pong timeout")
                elif conn.serial % rounds == part and conn.buffered() <= self.limit:
                    conn.write(PING_FRAME)
