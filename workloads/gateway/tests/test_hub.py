"""Unit tests of the WebSocket hub without a server (the trades messages' chain, slow and
closing connections) and of the benchmark's subscriber parser."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any, cast

import pytest
from aiohttp import web

from workloads.gateway.hub import Conn, Hub, text_frame, write_all
from workloads.gateway.marketdata import Projection
from workloads.gateway.markets import Market
from workloads.gateway.settings import WsSettings

pytestmark = pytest.mark.unit
M = Market("BTC-USDT", "BTC", "USDT")


class FakeTransport:
    """What the hub uses of an asyncio transport, recording what goes through it."""

    def __init__(self, buffered: int = 0) -> None:
        self.buffered = buffered
        self.closing = False
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.buffered += len(data)

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def conn_of(transport: FakeTransport) -> Conn:
    return Conn(cast(web.WebSocketResponse, None), cast(asyncio.Transport, transport), None)


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def pair(made: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket, socket.socket]:
    server, client = socket.socketpair()
    server.setblocking(False)
    client.setblocking(False)
    made.append((server, client))
    return server, client


def trade(seq: int, n: int) -> dict[str, Any]:
    return {"trade_id": f"BTC-USDT:{n}", "symbol": "BTC-USDT", "seq": seq, "time": 1}


def messages(transport: FakeTransport) -> list[dict[str, Any]]:
    out = []
    for frame in transport.written:
        assert frame[0] == 0x81
        length = frame[1]
        head = 4 if length == 126 else 2
        out.append(json.loads(frame[head:]))
    return out


async def test_trades_messages_chain_by_seq_also_across_unsubscribed_trades() -> None:
    hub = Hub(WsSettings(), Projection({M.symbol: M}))
    transport = FakeTransport()
    conn = conn_of(transport)
    hub.add(conn)
    hub.trade(M.symbol, trade(5, 1), 1000.0)  # nobody subscribed: not sent, chain moves
    hub.subscribe(conn, "trades", M.symbol)
    hub.trade(M.symbol, trade(9, 2), 1001.0)
    hub.trade(M.symbol, trade(9, 3), 1001.5)  # one command's trades share a seq
    hub.trade(M.symbol, trade(12, 4), 1002.0)
    hub.flush()
    hub.trade(M.symbol, trade(15, 5), 1003.0)
    hub.flush()
    hub.flush()  # nothing new: nothing sent
    first, second = messages(transport)
    assert (first["prev_seq"], first["seq"], first["ts"]) == (5, 12, 1_001_000)
    assert [t["trade_id"] for t in first["data"]] == ["BTC-USDT:2", "BTC-USDT:3", "BTC-USDT:4"]
    assert (second["prev_seq"], second["seq"], second["ts"]) == (12, 15, 1_003_000)
    assert list(first)[:6] == ["channel", "symbol", "prev_seq", "seq", "ts", "sent"]


async def test_slow_trades_subscriber_is_closed_and_the_others_get_the_frame() -> None:
    hub = Hub(WsSettings(send_buffer_bytes=1024), Projection({M.symbol: M}))
    fast_transport = FakeTransport()
    fast = conn_of(fast_transport)
    slow_transport = FakeTransport(buffered=4096)
    slow = conn_of(slow_transport)
    for conn in (fast, slow):
        hub.add(conn)
        hub.subscribe(conn, "trades", M.symbol)
    hub.trade(M.symbol, trade(3, 1), 1000.0)
    hub.flush()
    assert [t["trade_id"] for t in messages(fast_transport)[0]["data"]] == ["BTC-USDT:1"]
    assert slow.closed and slow not in hub.conns
    close = slow_transport.written[-1]
    assert close[0] == 0x88 and close[2:4] == (4008).to_bytes(2, "big")  # slow consumer
    assert hub.subscribers[("trades", M.symbol)] == {fast}


def test_write_all_skips_closing_transports_and_returns_slow_ones() -> None:
    frame = text_frame(b'{"x":1}')
    idle, busy, slow, closing = (
        FakeTransport(),
        FakeTransport(buffered=10),
        FakeTransport(buffered=5000),
        FakeTransport(),
    )
    closing.closing = True
    conns = [conn_of(t) for t in (idle, busy, slow, closing)]
    sent, overflowing = write_all(conns, frame, limit=1000)
    assert (sent, overflowing) == (2, [conns[2]])
    assert idle.written == [frame] and busy.written == [frame]
    assert slow.written == [] and closing.written == []
    assert write_all(conns[2:3], frame) == (1, [])  # no limit: conflated channels decide first


def test_wsload_parses_split_frames_counts_trades_and_checks_the_chain(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    """The benchmark's subscriber: frames split across reads, pings answered, gaps seen."""
    from e2e.bench import wsload

    generator = wsload.Generator("127.0.0.1", 1, M.symbol)
    generator.live = True
    mine, peer = pair(pairs)
    sub = wsload.Subscriber(mine)

    def trades_frame(prev_seq: int, seq: int, n: int) -> bytes:
        data = [{"trade_id": f"BTC-USDT:{i}", "seq": seq, "time": 5} for i in range(n)]
        message = {"channel": "trades", "symbol": M.symbol, "prev_seq": prev_seq, "seq": seq}
        message.update({"ts": 10, "sent": 12, "data": data})
        return text_frame(json.dumps(message, separators=(",", ":")).encode())

    stream = trades_frame(0, 4, 3) + b"\x89\x02hi" + trades_frame(4, 9, 200)
    for cut in (1, 3, 150, len(stream) - 7):  # the same stream, read in pieces
        sub.rest, sub.last_seq, sub.trades, sub.messages = b"", 0, 0, 0
        generator._frames(sub, stream[:cut], 20.0)
        generator._frames(sub, stream[cut:], 21.0)
        assert (sub.messages, sub.trades, sub.last_seq, sub.gaps) == (2, 203, 9, 0)
    generator._frames(sub, trades_frame(11, 12, 1), 22.0)  # 9 < prev_seq 11: a gap
    assert sub.gaps == 1
    assert peer.recv(100)[0] == 0x8A  # a masked pong for each ping
    counts = {int(k): v for k, v in generator.fanout.dump().items()}
    assert wsload.percentile(counts, 0.5) == 11.0  # most completed by the read at 21 ms
