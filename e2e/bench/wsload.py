"""WebSocket subscribers for the `gateway.ws` benchmark, one process of many.

`python -m e2e.bench.wsload <url> <subscribers> [<symbol>]` opens `subscribers`
real WebSocket connections (HTTP upgrade, Sec-WebSocket-Accept checked, masked client
frames), subscribes each to `trades`, waits for every `subscribed` reply, prints
`{"connected": n}`, then reads until SIGTERM and prints one JSON result.

Thousands of connections must cost the load generator less than the gateway spends on them
(they share two cores), so this is not asyncio: one epoll loop reads every ready socket into
one preallocated buffer (`recv` of a fresh 256 KiB buffer per read costs several times more),
parses the WebSocket frames, answers pings, and takes each trades message's header fields
by position instead of decoding the JSON. Between polls with nothing to read it sleeps 1 ms
instead of blocking in epoll_wait (`WSLOAD_NAP_MS`, 0 blocks): the gateway's writes then
find no waiter to wake one socket at a time, and each poll reads a batch. A receipt can be
late by that millisecond (and by the generator's own scheduling), which counts against the
gateway.

Per message it records receipt (time.time() right after the read) minus the message's `ts`
(the gateway's receipt of the oldest trade in it: `fanout`), minus `sent` (when the frame was
built: the delivery part) and minus the first trade's matcher `time` (`end_to_end`). Per
subscriber it counts trades and checks the chain (`prev_seq` never above the last `seq` seen).
Latencies are returned as histograms (0.1 ms buckets) so the benchmark can merge processes
exactly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READ_BUFFER = 1 << 20
NAP_SEC = 0.001
_TRADES = b'{"channel":"trades"'
KEY_BYTES = 256


def text_frame_head(n: int) -> bytes:
    """The header of an unmasked text frame of `n` payload bytes (as the server sends)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big")
    return bytes((0x81, 127)) + n.to_bytes(8, "big")


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask); only commands and pongs, so short."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else bytes((0x80 | opcode, 0xFE))
    if n >= 126:
        head += n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def int_field(payload: bytes, name: bytes, start: int = 0) -> int:
    """The integer after `"name":` (the first one at or after `start`), or -1."""
    at = payload.find(name, start)
    if at < 0:
        return -1
    at += len(name)
    end = at
    while 48 <= payload[end] <= 57:
        end += 1
    return int(payload[at:end])


class Histogram:
    """Counts per 0.1 ms bucket up to 60 s; exact to the bucket, cheap to merge across
    processes (a list index per sample: the generator records about 100k samples/s)."""

    SIZE = 600_000

    def __init__(self) -> None:
        self.counts = [0] * self.SIZE

    def add(self, ms: float) -> None:
        bucket = int(ms * 10)
        self.counts[bucket if 0 <= bucket < self.SIZE else (0 if bucket < 0 else -1)] += 1

    def dump(self) -> dict[str, int]:
        return {str(i): n for i, n in enumerate(self.counts) if n}


def percentile(counts: dict[int, int], q: float) -> float | None:
    """The `q` quantile (ms) of merged histogram counts (bucket -> count)."""
    total = sum(counts.values())
    if not total:
        return None
    rank = q * (total - 1)
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen > rank:
            return bucket / 10
    return max(counts) / 10


@dataclass(slots=True, frozen=True)
class Frame:
    prev_seq: int
    seq: int
    ts: int
    sent: int
    first_time: int
    trades: int


@dataclass(slots=True)
class Subscriber:
    sock: socket.socket
    rest: bytes = b""
    last_seq: int = 0
    trades: int = 0
    messages: int = 0
    gaps: int = 0
    closed: int = 0  # the close code the server sent, 1006 when it vanished without one
    replies: list[bytes] = field(default_factory=list)


class Generator:
    def __init__(self, host: str, port: int, symbol: str) -> None:
        self.host, self.port, self.symbol = host, port, symbol
        self.subs: dict[int, Subscriber] = {}
        self.epoll = select.epoll()
        self.buffer = bytearray(READ_BUFFER)
        self.view = memoryview(self.buffer)
        self.fanout = Histogram()
        self.delivery = Histogram()
        self.in_gateway = Histogram()
        self.end_to_end = Histogram()
        self.live = False
        self.stopped = False
        self.nap = float(os.environ.get("WSLOAD_NAP_MS", NAP_SEC * 1000)) / 1000
        self.frames: dict[bytes, Frame] = {}
        self.reads = 0
        self.cpu = 0.0

    # ------------------------------------------------------------------ connecting

    def connect(self, count: int, batch: int = 250) -> None:
        """Open `count` subscribers, `batch` handshakes in flight at a time."""
        subscribe = masked_frame(
            1,
            json.dumps(
                {"op": "subscribe", "channel": "trades", "symbol": self.symbol, "id": 1}
            ).encode(),
        )
        while len(self.subs) < count:
            pending: dict[int, tuple[Subscriber, bytes]] = {}
            for _ in range(min(batch, count - len(self.subs))):
                sock = socket.create_connection((self.host, self.port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                key = base64.b64encode(os.urandom(16))
                sock.sendall(
                    b"GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n" % (self.host.encode(), self.port, key)
                )
                accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
                sub = Subscriber(sock)
                pending[sock.fileno()] = (sub, accept)
                self.subs[sock.fileno()] = sub
            for sub, accept in pending.values():
                self._upgrade(sub, accept)
                sub.sock.sendall(subscribe)
            for sub, _ in pending.values():
                self._await_subscribed(sub)
                sub.sock.setblocking(False)
                self.epoll.register(sub.sock.fileno(), select.EPOLLIN)

    def _upgrade(self, sub: Subscriber, accept: bytes) -> None:
        data = b""
        sub.sock.settimeout(60)
        while b"\r\n\r\n" not in data:
            chunk = sub.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        head, _, sub.rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if b" 101 " not in lines[0]:
            raise ConnectionError(f"handshake refused: {lines[0]!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines)}
        if headers.get(b"sec-websocket-accept") != accept:
            raise ConnectionError("wrong Sec-WebSocket-Accept")

    def _await_subscribed(self, sub: Subscriber) -> None:
        while not any(b'"subscribed"' in r for r in sub.replies):
            if any(b'"error"' in r for r in sub.replies):
                raise ConnectionError(f"subscribe failed: {sub.replies!r}")
            chunk = sub.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before subscribed")
            self._frames(sub, chunk, time.time() * 1000)

    # ------------------------------------------------------------------ reading

    def run(self) -> None:
        """Read until SIGTERM. The common read, exactly one whole trades frame, takes the
        inlined path; anything else (several or partial frames, pings, close) the general
        parser."""
        self.live = True
        signal.signal(signal.SIGTERM, self._stop)
        poll, nap, clock = self.epoll.poll, time.sleep, time.time
        subs, view, buffer, frames = self.subs, self.view, self.buffer, self.frames
        fanout, delivery, end_to_end = (
            self.fanout.counts,
            self.delivery.counts,
            self.end_to_end.counts,
        )
        top = Histogram.SIZE - 1
        cpu = time.process_time()
        block = 0.0 if self.nap else 0.05
        while not self.stopped:
            ready = poll(block)
            if not ready:
                if self.nap:
                    nap(self.nap)
                continue
            for fd, _ in ready:
                sub = subs[fd]
                try:
                    n = sub.sock.recv_into(buffer)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    n = 0
                if n == 0:
                    self._gone(fd, sub)
                    continue
                now = clock() * 1000
                self.reads += 1
                length = buffer[1]
                head = 4 if length == 126 else 2
                if (
                    sub.rest
                    or buffer[0] != 0x81
                    or length > 126
                    or n != head + (length if head == 2 else (buffer[2] << 8 | buffer[3]))
                    or not buffer.startswith(_TRADES, head)
                ):
                    self._frames(sub, bytes(view[:n]), now)
                    continue
                key = bytes(view[: min(n, KEY_BYTES)])  # no copy of the whole frame
                frame = frames.get(key)
                if frame is None:
                    frame = self._frame(key, bytes(view[head:n]))
                if sub.last_seq and frame.prev_seq > sub.last_seq:
                    sub.gaps += 1
                if frame.seq > sub.last_seq:
                    sub.last_seq = frame.seq
                sub.messages += 1
                sub.trades += frame.trades
                bucket = int((now - frame.ts) * 10)
                fanout[bucket if 0 <= bucket < top else top] += 1
                bucket = int((now - frame.sent) * 10)
                delivery[bucket if 0 <= bucket < top else top] += 1
                bucket = int((now - frame.first_time) * 10)
                end_to_end[bucket if 0 <= bucket < top else top] += 1
        self.cpu = time.process_time() - cpu

    def _stop(self, *_: object) -> None:
        self.stopped = True

    def _gone(self, fd: int, sub: Subscriber) -> None:
        self.epoll.unregister(fd)
        sub.closed = sub.closed or 1006
        sub.sock.close()

    def _frames(self, sub: Subscriber, data: bytes, now: float) -> None:
        if sub.rest:
            data = sub.rest + data
        size = len(data)
        pos = 0
        while size - pos >= 2:
            length = data[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + length
            if end > size:
                break
            opcode = data[pos] & 0x0F
            payload = data[pos + head : end]
            pos = end
            if opcode == 1:
                if payload.startswith(_TRADES):
                    self._trades(sub, payload, now)
                elif not self.live:
                    sub.replies.append(payload)
            elif opcode == 9:
                sub.sock.send(masked_frame(0xA, payload))
            elif opcode == 8:
                sub.closed = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        sub.rest = data[pos:]

    def _frame(self, key: bytes, payload: bytes) -> Frame:
        """Parse a trades message's header fields and count its trades, once per frame:
        every subscriber gets the same bytes, and the first KEY_BYTES of a frame (which
        hold its seq and timestamps) identify it. The chain is still checked per
        subscriber."""
        data = payload.find(b'"data":')
        head = payload[:data]
        frame = self.frames[key] = Frame(
            int_field(head, b'"prev_seq":'),
            int_field(head, b'"seq":'),
            int_field(head, b'"ts":'),
            int_field(head, b'"sent":'),
            int_field(payload, b'"time":', data),
            payload.count(b'"trade_id"'),
        )
        if self.live:
            self.in_gateway.add(frame.sent - frame.ts)
        return frame

    def _trades(self, sub: Subscriber, payload: bytes, now: float) -> None:
        """A trades message met by the general parser (not alone in its read)."""
        key = text_frame_head(len(payload)) + payload
        frame = self.frames.get(key[:KEY_BYTES]) or self._frame(key[:KEY_BYTES], payload)
        if sub.last_seq and frame.prev_seq > sub.last_seq:
            sub.gaps += 1
        if frame.seq > sub.last_seq:
            sub.last_seq = frame.seq
        sub.messages += 1
        sub.trades += frame.trades
        if self.live:
            self.fanout.add(now - frame.ts)
            self.delivery.add(now - frame.sent)
            self.end_to_end.add(now - frame.first_time)

    def result(self) -> dict[str, object]:
        subs = list(self.subs.values())
        closes = Counter(s.closed for s in subs if s.closed)
        return {
            "subscribers": len(subs),
            "messages": sum(s.messages for s in subs),
            "trades_min": min(s.trades for s in subs),
            "trades_max": max(s.trades for s in subs),
            "gaps": sum(s.gaps for s in subs),
            "closed": {str(k): v for k, v in closes.items()},
            "reads": self.reads,
            "cpu_sec": round(self.cpu, 3),
            "fanout": self.fanout.dump(),
            "delivery": self.delivery.dump(),
            "in_gateway": self.in_gateway.dump(),
            "end_to_end": self.end_to_end.dump(),
        }


def main() -> None:
    url, count = sys.argv[1], int(sys.argv[2])
    symbol = sys.argv[3] if len(sys.argv) > 3 else "BTC-USDT"
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    generator = Generator(host, int(port), symbol)
    generator.connect(count)
    print(json.dumps({"connected": len(generator.subs)}), flush=True)
    generator.run()
    print(json.dumps(generator.result()), flush=True)


if __name__ == "__main__":
    main()
