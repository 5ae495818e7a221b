"""The gateway's load generator, run as its own process by the `gateway.*` benchmarks.

`python -m e2e.bench.gateway_loadgen orders <url> <matcher> <seconds> <concurrency> [rate]`
signs and POSTs orders with static keys `load-0..load-63` (funded in the matcher first):
with rate 0 as fast as `concurrency` keep-alive connections go (orders_per_s), else at a
fixed offered rate, open loop (p50_ms, p99_ms). Prints one JSON object.
The WebSocket subscribers of `gateway.ws` are `e2e.bench.wsload`.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
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


def main() -> None:
    if sys.argv[1] != "orders":
        sys.exit(f"unknown mode {sys.argv[1]!r}: only 'orders'")
    url, matcher, seconds, concurrency = (
        sys.argv[2],
        sys.argv[3],
        float(sys.argv[4]),
        int(sys.argv[5]),
    )
    rate = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    result = asyncio.run(orders(url, matcher, seconds, concurrency, rate))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    main()
