"""Gateway benchmarks (`make bench BENCH=gateway`), each on its own real PostgreSQL, Kafka,
matcher and gateway process, with the load generator as a separate process on the same
two cores (so its CPU counts against the figures).

gateway.orders: signed REST orders end to end (gateway -> matcher -> reply), closed loop
with 64 connections (`orders_per_s`), then open loop at an offered 1,000/s (`p50_ms`,
`p99_ms`). Targets: >= 3,000 orders/s; p99 <= 25 ms at 1,000/s.
gateway.ws: 5,000 WebSocket subscribers to trades while the matcher trades 500/s;
`p99_ms` from the gateway's receipt of a trade to a subscriber's receipt (target <= 100),
`in_gateway_p99_ms` the part until the frame is written, and `end_to_end_p99_ms` from the
matcher's trade time. The subscribers are lean raw-socket clients in two processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from e2e.env import kafka, paths, postgres
from e2e.env.gateway import GatewayProcess
from e2e.env.matcher import MatcherProcess
from e2e.env.process import free_port
from workloads.gateway import loadgen
from workloads.gateway.markets import Market, catalogue_json

TOPIC = "core.events.v1"


@dataclass
class BenchStack:
    gateway: GatewayProcess
    matcher: MatcherProcess


@contextmanager
def bench_stack(kafka_for_gateway: bool = True, **gateway_env: str) -> Iterator[BenchStack]:
    run_dir = paths.new_run_dir("exchange-bench-gateway-")
    parts: list[object] = []
    try:
        pg = postgres.PostgresServer(run_dir, free_port())
        pg.start()
        parts.append(pg)
        broker = kafka.KafkaBroker(run_dir, free_port(), free_port())
        broker.start()
        parts.append(broker)
        asyncio.run(kafka.ensure_topic(broker.bootstrap, TOPIC, partitions=1))
        matcher = MatcherProcess(run_dir, kafka_bootstrap=broker.bootstrap, events_topic=TOPIC)
        market = Market("BTC-USDT", "BTC", "USDT", matcher=matcher.target)
        matcher.extra_env.update(market.matcher_env())
        matcher.start()
        parts.append(matcher)
        gateway = GatewayProcess(
            run_dir,
            pg.dsn,
            catalogue_json((market,)),
            kafka_bootstrap=broker.bootstrap,
            events_topic=TOPIC,
            api_secrets=loadgen.static_secrets(),
            extra_env={
                "EDGE_RATE_LIMIT_PER_MINUTE": "10000000",
                "EDGE_SEED_MARKET_DATA": "false",
                "LOG_LEVEL": "WARNING",
                **gateway_env,
            },
        )
        gateway.start()
        parts.append(gateway)
        yield BenchStack(gateway, matcher)
    finally:
        for part in reversed(parts):
            part.stop()  # type: ignore[attr-defined]
        shutil.rmtree(run_dir, ignore_errors=True)


def _loadgen(*args: str, timeout: float = 300) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "workloads.gateway.loadgen", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def orders_benchmark(seconds: float = 10.0) -> dict[str, object]:
    with bench_stack() as stack:
        target, url = stack.matcher.target, stack.gateway.url
        throughput = _loadgen("orders", url, target, str(seconds), "256")
        latency = _loadgen("orders", url, target, str(seconds), "256", "1000")
    return {
        "orders_per_s": throughput["orders_per_s"],
        "closed_loop_p99_ms": throughput["p99_ms"],
        "offered_per_s": 1000,
        "p50_ms": latency["p50_ms"],
        "p99_ms": latency["p99_ms"],
        "statuses": throughput["statuses"],
    }


async def _trade_at(target: str, rate: int, seconds: float) -> int:
    """Trades through the matcher at `rate` per second, in 20 ms batches: one large resting
    sell, then one-lot IOC buys that each take from it (one order per trade)."""
    from contracts.v1 import common_pb2 as c
    from contracts.v1 import matcher_pb2, matcher_pb2_grpc

    await loadgen.fund(target)
    import grpc

    per_tick = max(1, rate // 50)
    trades = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        maker = matcher_pb2.PlaceOrderRequest(
            symbol="BTC-USDT",
            account="load-0",
            side=c.SIDE_SELL,
            client_order_id="ws-maker",
            order_type=c.ORDER_TYPE_LIMIT,
            time_in_force=c.TIME_IN_FORCE_GTC,
            price=6_000_000,
            quantity=10_000 * 500_000,
        )
        await stub.PlaceOrder(maker)
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while loop.time() - start < seconds:
            commands = []
            for i in range(per_tick):
                commands.append(
                    matcher_pb2.Command(
                        place_order=matcher_pb2.PlaceOrderRequest(
                            symbol="BTC-USDT",
                            account=f"load-{1 + i % 8}",
                            side=c.SIDE_BUY,
                            client_order_id=f"ws-{tick}-{i}",
                            order_type=c.ORDER_TYPE_LIMIT,
                            time_in_force=c.TIME_IN_FORCE_IOC,
                            price=6_000_000,
                            quantity=10_000,
                        )
                    )
                )
            await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=commands))
            trades += per_tick
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * 0.02 - loop.time()))
    return trades


def ws_benchmark(
    subscribers: int = 5000, rate: int = 500, seconds: float = 15.0
) -> dict[str, object]:
    # Pings would need the lean subscribers to answer them; the run is shorter than a ping.
    with bench_stack(EDGE_WS_FLUSH_MS="40", EDGE_WS_PING_INTERVAL_SEC="3600") as stack:
        generators = 2
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workloads.gateway.loadgen",
                    "ws",
                    stack.gateway.url,
                    str(subscribers // generators),
                    str(seconds + 5),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(generators)
        ]
        try:
            for proc in procs:  # each prints {"connected": n} once subscribed
                assert proc.stdout is not None
                json.loads(proc.stdout.readline())
            time.sleep(1)
            trades = asyncio.run(_trade_at(stack.matcher.target, rate, seconds))
            results = [
                json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs
            ]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    return {
        "subscribers": sum(int(r["subscribers"]) for r in results),
        "trades_per_s": rate,
        "trades_sent": trades,
        "p50_ms": max(float(r.get("p50_ms", 0)) for r in results),
        "p99_ms": max(float(r.get("p99_ms", 0)) for r in results),
        "end_to_end_p99_ms": max(float(r.get("end_to_end_p99_ms", 0)) for r in results),
        # trade receipt -> its frame written: the gateway's own share of p99_ms
        "in_gateway_p99_ms": max(float(r.get("in_gateway_p99_ms") or 0) for r in results),
        "trades_received_per_subscriber": min(
            int(r.get("trades_received", 0)) // max(1, int(r["subscribers"])) for r in results
        ),
        "messages": sum(int(r.get("messages", 0)) for r in results),
    }


BENCHMARKS: dict[str, Callable[[], dict[str, object]]] = {
    "gateway.orders": orders_benchmark,
    "gateway.ws": ws_benchmark,
}
_ = os
