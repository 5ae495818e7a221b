"""The gateway's load generator, run as its own process by the `gateway.*` benchmarks.

`python -m workloads.gateway.loadgen orders <url> <matcher> <seconds> <concurrency> [rate]`
signs and POSTs orders with static keys `load-0..load-63` (funded in the matcher first):
with rate 0 as fast as `concurrency` keep-alive connections go (orders_per_s), else at a
fixed offered rate, open loop (p50_ms, p99_ms). Prints one JSON object.
`... ws <url> <subscribers> <seconds>` holds WebSocket subscribers to the trades channel
and reports, per trade message, receive time minus the gateway's `ts` (fan-out) and minus
the trade's matcher time (end to end).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import itertools
import json
import os
import sys
import time
import uuid

import grpc

from contracts.v1 import funding_pb2, matcher_pb2, matcher_pb2_grpc

KEYS = [f"load-{i}" for i in range(64)]


def secret_of(key: str) -> str:
    return f"secret-{key}"


def static_secrets() -> str:
    return ",".join(f"{k}:{secret_of(k)}" for k in KEYS)


async def fund(matcher: str) -> None:
    commands = [
        matcher_pb2.Command(
            funding=funding_pb2.FundingCommand(
                funding_id=f"{key}-{asset}-{uuid.uuid4().hex[:8]}",
                account=key,
                asset=asset,
                amount=10**15,
                direction=funding_pb2.FUNDING_DIRECTION_CREDIT,
            )
        )
        for key in KEYS
        for asset in ("BTC", "USDT")
    ]
    async with grpc.aio.insecure_channel(matcher) as channel:
        await matcher_pb2_grpc.MatcherStub(channel).SubmitBatch(
            matcher_pb2.CommandBatch(commands=commands)
        )


_ids = itertools.count()
_SECRETS = {key: secret_of(key).encode() for key in KEYS}


def order_body(i: int) -> bytes:
    """The i-th order's body: sides, prices around 60,000.00, sizes and TIFs in turn."""
    buy = i % 2 == 0
    offset = i % 40
    cents = 6_000_000 + (offset - 20 if buy else offset - 18)
    tif = "GTC" if i % 10 else "IOC"
    return (
        f'{{"symbol":"BTC-USDT","side":"{"BUY" if buy else "SELL"}",'
        f'"price":"{cents // 100}.{cents % 100:02d}","quantity":"0.{1 + i % 5:04d}",'
        f'"time_in_force":"{tif}"}}'
    ).encode()


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time, parsed just enough
    (status line, Content-Length). aiohttp's client costs more CPU per request than much
    of the gateway's own work, and the generator shares the two cores with what it measures."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 or self.waiter is None:
            return
        head = self.buffer[:head_end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
        if len(self.buffer) < head_end + 4 + length:
            return
        status = int(self.buffer[9:12])
        self.buffer = self.buffer[head_end + 4 + length :]
        waiter, self.waiter = self.waiter, None
        waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    async def request(self, raw: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def raw_order(host: str) -> bytes:
    """The next signed order as HTTP/1.1 bytes, with its own Idempotency-Key (formatted in
    one go: the generator shares the cores with what it measures)."""
    i = next(_ids)
    key = KEYS[i % len(KEYS)]
    body = order_body(i)
    ts = str(int(time.time() * 1000))
    signature = hmac.digest(
        _SECRETS[key], b"POST\n/v1/orders\n" + ts.encode() + b"\n" + body, "sha256"
    )
    head = (
        f"POST /v1/orders HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
        f"X-API-KEY: {key}\r\nX-TS: {ts}\r\nX-SIGNATURE: {signature.hex()}\r\n"
        f"Idempotency-Key: {i}-{time.monotonic_ns()}\r\nContent-Type: application/json\r\n\r\n"
    )
    return head.encode() + body


async def orders(
    url: str, matcher: str, seconds: float, concurrency: int, rate: int
) -> dict[str, object]:
    await fund(matcher)
    host = url.split("//", 1)[1]
    address, port = host.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    idle: asyncio.Queue[_HttpConnection] = asyncio.Queue()
    connections = []
    for _ in range(concurrency):
        _, protocol = await loop.create_connection(_HttpConnection, address, int(port))
        connections.append(protocol)
        idle.put_nowait(protocol)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def one() -> None:
        connection = await idle.get()
        sent = time.perf_counter()
        status = await connection.request(raw_order(host))
        latencies.append(time.perf_counter() - sent)
        statuses[status] = statuses.get(status, 0) + 1
        idle.put_nowait(connection)

    for _ in range(50):  # warm up code paths
        await one()
    latencies.clear()
    statuses.clear()
    start = time.perf_counter()
    deadline = start + seconds
    if rate == 0:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    else:
        t0 = loop.time()
        tasks = []
        for n in range(int(seconds * rate)):
            delay = t0 + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for connection in connections:
        connection.transport.close()
    latencies.sort()
    done = len(latencies)
    result: dict[str, object] = {
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(latencies[done // 2] * 1000, 2),
        "p99_ms": round(latencies[int(done * 0.99)] * 1000, 2),
    }
    if rate == 0:
        result.update({"orders_per_s": round(done / elapsed), "concurrency": concurrency})
    else:
        result.update({"offered_per_s": rate, "achieved_per_s": round(done / elapsed)})
    return result


class _Subscriber(asyncio.Protocol):
    """A lean WebSocket client: handshake, one subscribe, then it only scans received bytes
    for each trades message's `"ts":` (gateway send time) and first `"time":` (matcher
    time). Thousands of aiohttp clients would cost the generator more than the gateway."""

    def __init__(self, host: str, stats: _Stats, ready: asyncio.Future[None]) -> None:
        self.host = host
        self.stats = stats
        self.ready = ready
        self.upgraded = False
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET /ws HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.buffer += data
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            self.upgraded = True
            self.buffer = b""
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.ready.set_exception(RuntimeError(head[:80].decode(errors="replace")))
                return
            payload = b'{"op":"subscribe","channel":"trades","symbol":"BTC-USDT"}'
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            self.transport.write(bytes((0x81, 0x80 | len(payload))) + mask + masked)
            self.ready.set_result(None)
            data = rest
        now = time.time() * 1000
        data = self.buffer + data
        self.buffer = b""
        stats = self.stats
        start = 0
        while True:
            at = data.find(b'"ts":', start)
            if at < 0:
                self.buffer = data[-4:]
                return
            end = data.find(b"]}", at)
            if end < 0:
                self.buffer = data[at:]
                return
            message = data[at:end]
            comma = message.index(b",")
            ts = int(message[5:comma])
            stats.fanout.append(now - ts)
            sent_at = message.find(b'"sent":')
            if sent_at >= 0:
                sent = int(message[sent_at + 7 : message.index(b",", sent_at)])
                stats.queued.append(sent - ts)
            first = message.find(b'"time":')
            if first >= 0:
                stop = first + 7
                while message[stop : stop + 1].isdigit():
                    stop += 1
                stats.e2e.append(now - int(message[first + 7 : stop]))
            stats.trades += message.count(b'"trade_id"')
            start = end


class _Stats:
    def __init__(self) -> None:
        self.fanout: list[float] = []
        self.queued: list[float] = []
        self.e2e: list[float] = []
        self.trades = 0


async def ws(url: str, subscribers: int, seconds: float) -> dict[str, object]:
    """Hold `subscribers` connections to the trades channel for `seconds`."""
    host_port = url.split("//", 1)[1]
    host, port = host_port.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    stats = _Stats()
    transports = []
    for _ in range(subscribers):
        ready: asyncio.Future[None] = loop.create_future()
        transport, _protocol = await loop.create_connection(
            functools.partial(_Subscriber, host_port, stats, ready), host, int(port)
        )
        await ready
        transports.append(transport)
    print(json.dumps({"connected": len(transports)}), flush=True)
    await asyncio.sleep(seconds)
    for transport in transports:
        transport.abort()
    fanout, e2e = sorted(stats.fanout), sorted(stats.e2e)
    count = len(fanout)
    if not count:
        return {"subscribers": subscribers, "messages": 0}
    return {
        "subscribers": subscribers,
        "messages": count,
        "trades_received": stats.trades,
        "p50_ms": round(fanout[count // 2], 1),
        "p99_ms": round(fanout[int(count * 0.99)], 1),
        "end_to_end_p99_ms": round(e2e[int(count * 0.99)], 1),
        "in_gateway_p99_ms": round(sorted(stats.queued)[int(len(stats.queued) * 0.99)], 1)
        if stats.queued
        else None,
    }


def main() -> None:
    mode = sys.argv[1]
    if mode == "orders":
        url, matcher, seconds, concurrency = (
            sys.argv[2],
            sys.argv[3],
            float(sys.argv[4]),
            int(sys.argv[5]),
        )
        rate = int(sys.argv[6]) if len(sys.argv) > 6 else 0
        result = asyncio.run(orders(url, matcher, seconds, concurrency, rate))
    else:
        result = asyncio.run(ws(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    main()
