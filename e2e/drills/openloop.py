"""`python -m e2e.drills.openloop SPEC ANSWERS`: the load drill's order generator, a process
of its own, lean because it shares the two cores with what it measures (raw HTTP/1.1 on
keep-alive connections, uvloop; aiohttp's client costs more per request than much of the
gateway's own work).

SPEC (JSON): gateways, traders ([account, api key, secret] each), symbol, price, quantity,
rate (orders/s), seconds, connections (per gateway), tag. Signed crossing orders (a sell,
then a buy at the same price from the next trader) are offered at `rate` for `seconds`, an
open loop: the schedule never waits for answers, and each order's latency is counted from
the moment it was due, so time spent waiting for a free connection counts too (no
coordinated omission). Orders go to the gateways in turn; the client order id is the
Idempotency-Key. Every answer is written to ANSWERS (one JSON line each); stdout gets one
JSON object: offered and achieved rate, p50/p99/p999/max in ms, errors by status.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

from workloads.gateway.auth import sign


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; parses the status line,
    Content-Length and the body, nothing more."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = self.buffer[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        status, body = int(self.buffer[9:12]), self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        waiter, self.waiter = self.waiter, None
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))
        self.transport = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.transport is None:
            raise ConnectionError("closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


async def generate(spec: dict[str, Any], lines: list[str]) -> dict[str, Any]:
    """Offer the orders of `spec`; their answers go to `lines` (JSON), the figures are
    returned."""
    loop = asyncio.get_running_loop()
    hosts = [url.split("//", 1)[1] for url in spec["gateways"]]
    traders = spec["traders"]
    idle: list[asyncio.Queue[Connection]] = []
    for host in hosts:
        address, port = host.rsplit(":", 1)
        queue: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(spec["connections"]):
            _, protocol = await loop.create_connection(Connection, address, int(port))
            queue.put_nowait(protocol)
        idle.append(queue)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    def raw_order(i: int) -> tuple[str, str, bytes]:
        account, key, secret = traders[i % len(traders)]
        cid = f"{spec['tag']}-{i:07d}"
        body = json.dumps({"symbol": spec["symbol"], "side": "SELL" if i % 2 == 0 else "BUY",
                           "type": "LIMIT", "price": spec["price"], "quantity": spec["quantity"],
                           "client_order_id": cid}, separators=(",", ":")).encode()  # fmt: skip
        ts = str(int(time.time() * 1000))
        head = (
            f"POST /v1/orders HTTP/1.1\r\nHost: {hosts[i % len(hosts)]}\r\n"
            f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
            f"X-API-KEY: {key}\r\nX-TS: {ts}\r\n"
            f"X-SIGNATURE: {sign(secret, 'POST', '/v1/orders', ts, body)}\r\n"
            f"Idempotency-Key: {cid}\r\n\r\n"
        )
        return account, cid, head.encode() + body

    async def one(i: int, due: float) -> None:
        gateway = i % len(hosts)
        account, cid, raw = raw_order(i)
        connection = await idle[gateway].get()
        try:
            status, body = await asyncio.wait_for(connection.request(raw), 30)
        except (ConnectionError, OSError, TimeoutError):
            status, body = 0, b""
            address, port = hosts[gateway].rsplit(":", 1)
            _, connection = await loop.create_connection(Connection, address, int(port))
        idle[gateway].put_nowait(connection)
        latency = time.perf_counter() - due
        latencies.append(latency)
        statuses[status] += 1
        answer = json.loads(body) if status in (200, 201) else {}
        fills = [f["trade_id"] for f in answer.get("fills") or []]
        lines.append(json.dumps([cid, account, status, answer.get("order_id", ""),
                                 answer.get("status", ""), answer.get("seq", 0),
                                 answer.get("code", ""), fills, latency]))  # fmt: skip

    rate, count = spec["rate"], int(spec["rate"] * spec["seconds"])
    tasks = []
    # perf_counter, not the loop's clock: uvloop's counts whole milliseconds.
    start = time.perf_counter() + 0.05
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "offered_per_s": rate,
        "achieved_per_s": round((statuses[200] + statuses[201]) / elapsed),
        "orders": count,
        "ok": statuses[200] + statuses[201],
        "errors": sum(n for s, n in statuses.items() if s not in (200, 201)),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(percentile(ordered, 0.5) * 1000, 2),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        "p999_ms": round(percentile(ordered, 0.999) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else 0.0,
    }


def main() -> None:
    import uvloop

    spec = json.loads(Path(sys.argv[1]).read_text())
    lines: list[str] = []
    result = uvloop.run(generate(spec, lines))
    Path(sys.argv[2]).write_text("\n".join(lines) + "\n")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
