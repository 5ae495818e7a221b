"""Tracing benchmarks (`make bench BENCH=observe`), on a real PostgreSQL, Kafka and Jaeger,
and real matcher, gateway (and ledger) processes; the load generator is a separate process
on the same two cores.

observe.overhead: `gateway.orders` (signed REST orders, gateway -> matcher -> reply) with
tracing at the default sampling (EDGE_OTEL_SAMPLE_RATIO's default; the gateway and the
matcher export to Jaeger) and with tracing off (no endpoint), in one run: for each mode a
fresh matcher and gateway, closed loop with 256 connections (`*_orders_per_s`), then open
loop at an offered 1,000/s (`*_p99_ms`). The modes alternate over `rounds` so that the
machine's drift hits both alike; `throughput_ratio` is the median over the rounds of traced
/ off, each pair measured back to back (target >= 0.95): on a shared two-core machine the
order rate drifts by 10-15% between minutes, more than the cost measured here
(`mean_ratio`: the ratio of the means, for comparison).

observe.trace_visible: with every order sampled, a maker and a taker cross `orders` times,
one pair at a time; for each taker order, the seconds from its response to its whole trace
(gateway request, matcher batch, WAL commit and outbox publish, ledger settlement, gateway
feed) being returned by Jaeger's query API, polled every 20 ms (`p50_s`, `max_s`; target
<= 5). Spans leave each process within EXPORT_DELAY_MS of ending (the batch processor's
delay), and the outbox publishes within MATCHER_OUTBOX_LINGER_MS.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from e2e.bench import gateway_loadgen as loadgen
from e2e.bench.bench_gateway import _loadgen
from e2e.env import kafka, paths, postgres
from e2e.env.gateway import GatewayProcess
from e2e.env.jaeger import JaegerServer
from e2e.env.ledger import LedgerProcess
from e2e.env.matcher import MatcherProcess
from e2e.env.process import free_port
from workloads.gateway.client import GatewayClient
from workloads.gateway.markets import Market, catalogue_json
from workloads.gateway.settings import OtelSettings

SYMBOL = "BTC-USDT"
WHOLE = {
    "POST /v1/orders",
    "matcher.batch",
    "matcher.wal_commit",
    "matcher.outbox_publish",
    "ledger.settle_batch",
    "gateway.feed",
}


@dataclass
class Infra:
    run_dir: Path
    pg: postgres.PostgresServer
    broker: kafka.KafkaBroker
    jaeger: JaegerServer
    topics: int = 0

    def topic(self) -> str:
        """A fresh events topic: each matcher starts a market of its own from seq 1."""
        self.topics += 1
        name = f"observe-{self.topics}"
        asyncio.run(kafka.ensure_topic(self.broker.bootstrap, name, partitions=1))
        return name


@contextmanager
def infra() -> Iterator[Infra]:
    run_dir = paths.new_run_dir("exchange-bench-observe-")
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, run_dir, True)
        pg = postgres.PostgresServer(run_dir, free_port())
        pg.start()
        stack.callback(pg.stop)
        broker = kafka.KafkaBroker(run_dir, free_port(), free_port())
        broker.start()
        stack.callback(broker.stop)
        jaeger = JaegerServer(run_dir)
        jaeger.start()
        stack.callback(jaeger.stop)
        yield Infra(run_dir, pg, broker, jaeger)


@dataclass
class Venue:
    matcher: MatcherProcess
    gateway: GatewayProcess
    ledger: LedgerProcess | None


@contextmanager
def venue(
    base: Infra,
    name: str,
    traced: bool,
    ledger: bool = False,
    gateway_env: dict[str, str] | None = None,
) -> Iterator[Venue]:
    """A matcher and a gateway (and a ledger) on a fresh topic; `traced`: exporting spans."""
    run_dir = base.run_dir / name
    topic = base.topic()
    bootstrap = base.broker.bootstrap
    otel = base.jaeger.otlp_grpc_endpoint if traced else ""
    with ExitStack() as stack:
        matcher = MatcherProcess(run_dir, kafka_bootstrap=bootstrap, events_topic=topic,
                                 extra_env={"MATCHER_OTEL_ENDPOINT": otel})  # fmt: skip
        market = Market(SYMBOL, "BTC", "USDT", matcher=matcher.target)
        matcher.extra_env.update(market.matcher_env())
        matcher.start()
        stack.callback(matcher.stop)
        settlement = None
        if ledger:
            settlement = LedgerProcess(
                run_dir, base.pg.dsn, bootstrap, topic, markets=f"{SYMBOL}={matcher.target}",
                group_id=f"ledger-{topic}",
                extra_env={"LEDGER_DB_SCHEMA": f"ledger_{name}", "LEDGER_OTEL_ENDPOINT": otel,
                           "LOG_LEVEL": "WARNING"},
            )  # fmt: skip
            settlement.start()
            stack.callback(settlement.stop)
        gateway = GatewayProcess(
            run_dir, base.pg.dsn, catalogue_json((market,)), kafka_bootstrap=bootstrap,
            events_topic=topic, schema=f"gateway_{name}", api_secrets=loadgen.static_secrets(),
            extra_env={"EDGE_RATE_LIMIT_PER_MINUTE": "10000000", "EDGE_SEED_MARKET_DATA": "false",
                       "LOG_LEVEL": "WARNING", "EDGE_OTEL_ENDPOINT": otel, **(gateway_env or {})},
        )  # fmt: skip
        gateway.start()
        stack.callback(gateway.stop)
        yield Venue(matcher, gateway, settlement)


def overhead_benchmark(
    seconds: float = 8.0, rounds: int = 3, sample_ratio: float | None = None
) -> dict[str, object]:
    """`sample_ratio`: another EDGE_OTEL_SAMPLE_RATIO than the default (to explore)."""
    figures: dict[str, list[dict[str, object]]] = {"off": [], "traced": []}
    ratio = {} if sample_ratio is None else {"EDGE_OTEL_SAMPLE_RATIO": str(sample_ratio)}
    with infra() as base:
        for round_ in range(rounds):
            for mode in ("off", "traced") if round_ % 2 == 0 else ("traced", "off"):
                with venue(base, f"{mode}_{round_}", mode == "traced", gateway_env=ratio) as made:
                    url, target = made.gateway.url, made.matcher.target
                    throughput = _loadgen("orders", url, target, str(seconds), "256")
                    latency = _loadgen("orders", url, target, str(seconds), "256", "1000")
                figures[mode].append({**throughput, "open_p99_ms": latency["p99_ms"]})

    def mean(mode: str, key: str) -> float:
        return statistics.fmean(float(str(run[key])) for run in figures[mode])

    off, traced = mean("off", "orders_per_s"), mean("traced", "orders_per_s")
    pairs = [
        float(str(t["orders_per_s"])) / float(str(o["orders_per_s"]))
        for t, o in zip(figures["traced"], figures["off"], strict=True)
    ]
    return {
        "sample_ratio": OtelSettings().sample_ratio if sample_ratio is None else sample_ratio,
        "traced_orders_per_s": round(traced),
        "off_orders_per_s": round(off),
        "throughput_ratio": round(statistics.median(pairs), 3),
        "mean_ratio": round(traced / off, 3),
        "traced_p99_ms": round(mean("traced", "open_p99_ms"), 2),
        "off_p99_ms": round(mean("off", "open_p99_ms"), 2),
        "offered_per_s": 1000,
        "rounds": rounds,
        "runs_orders_per_s": {m: [run["orders_per_s"] for run in r] for m, r in figures.items()},
    }


async def _visible(base: Infra, made: Venue, orders: int) -> list[float]:
    """Seconds from each taker order's response until Jaeger returns its whole trace."""
    await loadgen.fund(made.matcher.target)
    waits: list[float] = []
    async with aiohttp.ClientSession() as http:
        maker, taker = (
            GatewayClient(http, made.gateway.url, api_key=key, secret=loadgen.secret_of(key))
            for key in loadgen.KEYS[:2]
        )
        order = {"symbol": SYMBOL, "side": "SELL", "price": "60000.00", "quantity": "0.0010"}
        for _ in range(orders):
            resting = await maker.call("POST", "/v1/orders", order)
            assert resting.status == 201, resting.body
            taken = await taker.call(
                "POST", "/v1/orders", {**order, "side": "BUY", "time_in_force": "IOC"}
            )
            answered = time.monotonic()
            assert taken.status == 201 and taken.body["status"] == "FILLED", taken.body
            trace_id = taken.headers["X-Trace-Id"]
            while True:
                spans = await asyncio.to_thread(base.jaeger.trace, trace_id)
                if {span.name for span in spans} >= WHOLE:
                    waits.append(time.monotonic() - answered)
                    break
                if time.monotonic() - answered > 60:
                    raise RuntimeError(f"trace {trace_id} not whole after 60 s: {spans}")
                await asyncio.sleep(0.02)
    return waits


def visible_benchmark(orders: int = 20) -> dict[str, object]:
    with (
        infra() as base,
        venue(
            base, "visible", True, ledger=True, gateway_env={"EDGE_OTEL_SAMPLE_RATIO": "1"}
        ) as made,
    ):
        waits = asyncio.run(_visible(base, made, orders))
    return {
        "orders": orders,
        "p50_s": round(statistics.median(waits), 3),
        "max_s": round(max(waits), 3),
        "mean_s": round(statistics.fmean(waits), 3),
        "seconds": round(max(waits), 3),
    }


BENCHMARKS = {"observe.overhead": overhead_benchmark, "observe.trace_visible": visible_benchmark}
