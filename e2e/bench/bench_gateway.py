"""Gateway benchmarks (`make bench BENCH=gateway`), each on its own real PostgreSQL, Kafka,
matcher and gateway process, with the load generator as a separate process on the same
two cores (so its CPU counts against the figures).

gateway.orders: signed REST orders end to end (gateway -> matcher -> reply), closed loop
with 256 keep-alive connections (`orders_per_s`), then open loop at an offered 1,000/s
(`p50_ms`, `p99_ms`). Targets: >= 3,000 orders/s; p99 <= 25 ms at 1,000/s.
gateway.ws: 5,000 WebSocket subscribers to trades (real upgrades, `wsload.py`, spread over
four processes) while the matcher trades 500/s through the real events path (matcher ->
outbox -> Kafka -> gateway feed -> hub), with the gateway's WebSocket defaults. Per message
and subscriber: `p99_ms` from the gateway's read of the message's oldest trade from the topic
(`ts`) to the subscriber's read of the frame (target <= 100), split into `in_gateway_p99_ms`
(until the frame is built, `sent`) and `delivery_p99_ms` (the fan-out and the read), and
`end_to_end_p99_ms` from the matcher's trade time. Every subscriber must get every trade in
an unbroken chain (`trades_received_min`, `chain_gaps`). `cpu_cores` is what each part used
while trading, the subscribers (the load generator) and the rest of the machine included.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from e2e.bench import gateway_loadgen as loadgen
from e2e.env import kafka, paths, postgres
from e2e.env.gateway import GatewayProcess
from e2e.env.matcher import MatcherProcess
from e2e.env.process import free_port
from workloads.gateway.markets import Market, catalogue_json
from workloads.gateway.settings import WsSettings

TOPIC = "core.events.v1"


@dataclass
class BenchStack:
    gateway: GatewayProcess
    matcher: MatcherProcess
    broker: kafka.KafkaBroker | None = None
    pg: postgres.PostgresServer | None = None


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
        yield BenchStack(gateway, matcher, broker, pg)
    finally:
        for part in reversed(parts):
            part.stop()  # type: ignore[attr-defined]
        shutil.rmtree(run_dir, ignore_errors=True)


def _loadgen(*args: str, timeout: float = 300) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "e2e.bench.gateway_loadgen", *args],
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _group_cpu(pgid: int) -> float:
    """CPU of every live process in a process group (PostgreSQL's backends, say)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine (every core) so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores used per part over a window: every process the benchmark started, and the
    rest of the machine (other work on the same box, which the figures suffer from)."""

    def __init__(self, groups: dict[str, int], pids: dict[str, list[int]]) -> None:
        self.groups, self.pids = groups, pids

    def sample(self) -> dict[str, float]:
        out = {name: _group_cpu(pgid) for name, pgid in self.groups.items()}
        for name, pids in self.pids.items():
            out[name] = sum(_cpu_seconds(pid) for pid in pids)
        out["machine"] = _machine_busy()
        out["at"] = time.monotonic()
        return out

    @staticmethod
    def cores(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        span = after["at"] - before["at"]
        used = {k: round((after[k] - before[k]) / span, 2) for k in before if k != "at"}
        ours = sum(v for k, v in used.items() if k != "machine")
        used["outside_benchmark"] = round(max(0.0, used["machine"] - ours), 2)
        return used


def _merge(results: list[dict[str, object]], key: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for result in results:
        for bucket, n in result[key].items():  # type: ignore[attr-defined]
            counts[int(bucket)] = counts.get(int(bucket), 0) + int(n)
    return counts


def _metric(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples whose line starts with `name`."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def ws_benchmark(
    subscribers: int = 5000,
    rate: int = 500,
    seconds: float = 15.0,
    generators: int = 4,
) -> dict[str, object]:
    """5,000 trades subscribers in `generators` wsload processes while the matcher trades
    `rate`/s; every subscriber must get every trade, in an unbroken chain."""
    from e2e.bench import wsload

    with bench_stack() as stack:  # the gateway's WebSocket defaults
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "e2e.bench.wsload",
                    stack.gateway.url,
                    str(subscribers // generators + (i < subscribers % generators)),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(generators)
        ]
        try:
            for proc in procs:  # each prints {"connected": n} once every subscriber is in
                assert proc.stdout is not None
                json.loads(proc.stdout.readline())
            meter = CpuMeter(
                {
                    name: _pid(part)
                    for name, part in (
                        ("gateway", stack.gateway),
                        ("matcher", stack.matcher),
                        ("kafka", stack.broker),
                        ("postgres", stack.pg),
                    )
                },
                {"subscribers": [p.pid for p in procs], "trade_driver": [os.getpid()]},
            )
            before_metrics = _scrape(stack.gateway.url)
            time.sleep(1)
            before = meter.sample()
            trades = asyncio.run(_trade_at(stack.matcher.target, rate, seconds))
            after = meter.sample()
            time.sleep(5)  # the last frames (a lagging subscriber shows in trades_received_min)
            after_metrics = _scrape(stack.gateway.url)
            results = []
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                out = proc.communicate(timeout=120)[0]
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    fanout = _merge(results, "fanout")
    in_gateway = _merge(results, "in_gateway")
    delivery = _merge(results, "delivery")
    end_to_end = _merge(results, "end_to_end")
    frames = _metric(after_metrics, 'gateway_ws_frames_total{channel="trades"}') - _metric(
        before_metrics, 'gateway_ws_frames_total{channel="trades"}'
    )
    ticks = _metric(after_metrics, "gateway_ws_tick_seconds_count") - _metric(
        before_metrics, "gateway_ws_tick_seconds_count"
    )
    tick_sum = _metric(after_metrics, "gateway_ws_tick_seconds_sum") - _metric(
        before_metrics, "gateway_ws_tick_seconds_sum"
    )
    pct = wsload.percentile
    return {
        "subscribers": sum(int(r["subscribers"]) for r in results),
        "trades_per_s": rate,
        "trades_sent": trades,
        "flush_ms": float(os.environ.get("EDGE_WS_FLUSH_MS", WsSettings.flush_ms)),
        # receipt of the oldest trade of a message by the gateway -> its read by a subscriber
        "p50_ms": pct(fanout, 0.5),
        "p99_ms": pct(fanout, 0.99),
        "p999_ms": pct(fanout, 0.999),
        "max_ms": pct(fanout, 1.0),
        # the gateway's own share: that receipt -> the frame built; then frame -> read
        "in_gateway_p99_ms": pct(in_gateway, 0.99),
        "delivery_p99_ms": pct(delivery, 0.99),
        # the matcher's trade time -> read (includes the outbox's Kafka transactions)
        "end_to_end_p50_ms": pct(end_to_end, 0.5),
        "end_to_end_p99_ms": pct(end_to_end, 0.99),
        "trades_received_min": min(int(r["trades_min"]) for r in results),
        "trades_received_max": max(int(r["trades_max"]) for r in results),
        "chain_gaps": sum(int(r["gaps"]) for r in results),
        "closed": [r["closed"] for r in results if r["closed"]],
        "messages": sum(int(r["messages"]) for r in results),
        "frames_written": int(frames),
        "fanout_ticks": int(ticks),
        "fanout_tick_mean_ms": round(tick_sum / ticks * 1000, 1) if ticks else None,
        "cpu_cores": CpuMeter.cores(before, after),
    }


def _pid(part: object) -> int:
    """The pid (= process group: each part starts its own session) of a started part."""
    process = getattr(part, "process", None)
    assert process is not None and process.popen is not None, part
    return int(process.popen.pid)


def _scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return response.read().decode()  # type: ignore[no-any-return]


BENCHMARKS: dict[str, Callable[[], dict[str, object]]] = {
    "gateway.orders": orders_benchmark,
    "gateway.ws": ws_benchmark,
}
