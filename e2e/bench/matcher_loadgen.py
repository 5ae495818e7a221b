"""A gRPC load generator for the matcher, run as its own process by `matcher.grpc`.

`python -m e2e.bench.matcher_loadgen <target> batched|unary <seconds> [rate]` prints one
JSON object: for `batched`, orders/s through SubmitBatch (8 concurrent calls of 200
orders); for `unary`, PlaceOrder latency percentiles at a fixed offered rate.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import sys
import time

import grpc

from contracts.v1 import common_pb2 as c
from contracts.v1 import funding_pb2, matcher_pb2, matcher_pb2_grpc

_ids = itertools.count()


def place(symbol: str) -> matcher_pb2.PlaceOrderRequest:
    i = next(_ids)
    buy = i % 2 == 0
    return matcher_pb2.PlaceOrderRequest(
        symbol=symbol,
        account=f"load-{i % 50}",
        client_order_id=f"load-{time.monotonic_ns()}-{i}",
        side=c.SIDE_BUY if buy else c.SIDE_SELL,
        order_type=c.ORDER_TYPE_LIMIT,
        time_in_force=c.TIME_IN_FORCE_GTC if i % 10 else c.TIME_IN_FORCE_IOC,
        price=100_000 + (i % 40) - 20 if buy else 100_000 + (i % 40) - 18,
        quantity=1 + i % 5,
    )


async def fund(stub: matcher_pb2_grpc.MatcherStub) -> None:
    commands = []
    for n in range(50):
        for asset in ("BTC", "USDT"):
            commands.append(
                matcher_pb2.Command(
                    funding=funding_pb2.FundingCommand(
                        funding_id=f"load-{n}-{asset}-{time.monotonic_ns()}",
                        account=f"load-{n}",
                        asset=asset,
                        amount=10**15,
                        direction=funding_pb2.FUNDING_DIRECTION_CREDIT,
                    )
                )
            )
    await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=commands))


async def batched(stub: matcher_pb2_grpc.MatcherStub, seconds: float) -> dict[str, object]:
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            batch = matcher_pb2.CommandBatch(
                commands=[matcher_pb2.Command(place_order=place("BTC-USDT")) for _ in range(200)]
            )
            reply = await stub.SubmitBatch(batch)
            done += len(reply.replies)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(8)))
    return {"batched_orders_per_s": round(done / (time.perf_counter() - start))}


async def unary(channel: grpc.aio.Channel, seconds: float, rate: int) -> dict[str, object]:
    """PlaceOrder latency at a fixed offered rate, one call per order.

    Requests are encoded before the clock starts and replies are taken as bytes: the
    generator shares the two cores with the matcher, and its own protobuf work would
    otherwise be counted as the matcher's latency.
    """
    count = int(seconds * rate)
    requests = [place("BTC-USDT").SerializeToString() for _ in range(count)]
    call = channel.unary_unary("/exchange.v1.Matcher/PlaceOrder")  # bytes in, bytes out
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    tasks = []

    async def one(request: bytes) -> None:
        sent = time.perf_counter()
        await call(request)
        latencies.append(time.perf_counter() - sent)

    # The generator's own collector pauses would be counted as the matcher's latency:
    # a 10 s run makes a few hundred thousand short-lived objects, so it runs without it.
    gc.collect()
    gc.disable()
    try:
        start = loop.time()
        for i, request in enumerate(requests):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(request)))
        await asyncio.gather(*tasks)
    finally:
        gc.enable()
    latencies.sort()
    return {
        "offered_per_s": rate,
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
    }


async def run(target: str, mode: str, seconds: float, rate: int) -> dict[str, object]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        await fund(stub)
        if mode == "batched":
            return await batched(stub, seconds)
        return await unary(channel, seconds, rate)


def main() -> None:
    target, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rate = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    print(json.dumps(asyncio.run(run(target, mode, seconds, rate))))


if __name__ == "__main__":
    main()
