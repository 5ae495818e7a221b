"""Matcher benchmarks (`make bench BENCH=matcher`).

matcher.engine: the in-process engine with risk, idempotency and events, on a command mix
modelled on exchange-core's benchmark: mostly GTC limit orders near the touch (a tenth of
them crossing), many cancels, some IOC and MARKET orders; about 1,000 resting orders per
side over a few hundred price levels. `reference_ops_per_s` runs the same commands through
the simplest price-time book (heap + dict + deque, no risk, no events) in the same process.
"""

from __future__ import annotations

import gc
import random
import time
from typing import Any

from workloads.matcher import engine as e
from workloads.matcher.bare_book import BareBook
from workloads.matcher.spec import MarketSpec

ACCOUNTS = 1000
MID = 100_000
RESTING_TARGET = 1000  # resting orders per side, as in exchange-core's benchmark


def bench_spec() -> MarketSpec:
    return MarketSpec("BENCH-USD", "BENCH", "USD", max_open_orders=10_000)


def generate(count: int, seed: int = 7) -> list[tuple[Any, ...]]:
    """A deterministic command stream: funding first, then the trading mix."""
    rng = random.Random(seed)
    commands: list[tuple[Any, ...]] = []
    for i in range(ACCOUNTS):
        account = f"acct-{i}"
        commands.append((e.C_FUNDING, f"fund-b-{i}", account, "BENCH", 10**12, e.CREDIT))
        commands.append((e.C_FUNDING, f"fund-q-{i}", account, "USD", 10**15, e.CREDIT))
    live: list[tuple[int, str]] = []  # (order id = seq, owner) of orders that may still rest
    mid = MID
    seq = len(commands)
    while len(commands) < count:
        seq = len(commands) + 1
        roll = rng.random()
        account = f"acct-{rng.randrange(ACCOUNTS)}"
        side = e.BUY if rng.random() < 0.5 else e.SELL
        if live and (roll < 0.31 or (roll < 0.75 and len(live) > 2 * RESTING_TARGET)):
            index = rng.randrange(len(live))
            live[index], live[-1] = live[-1], live[index]
            order_id, owner = live.pop()
            commands.append((e.C_CANCEL, owner, order_id, ""))
        elif roll < 0.90:  # GTC limit orders, and moves (a new order replacing a cancelled one)
            crossing = rng.random() < 0.1
            offset = rng.randrange(1, 200)
            if crossing:
                price = mid + offset // 20 if side == e.BUY else mid - offset // 20
            else:
                price = mid - offset if side == e.BUY else mid + offset
            qty = rng.randrange(1, 20)
            commands.append(
                (e.C_PLACE, account, f"c{seq}", side, e.LIMIT, e.GTC, price, qty, False, 0)
            )
            live.append((seq, account))
        elif roll < 0.97:
            price = mid + 5 if side == e.BUY else mid - 5
            commands.append(
                (
                    e.C_PLACE,
                    account,
                    f"c{seq}",
                    side,
                    e.LIMIT,
                    e.IOC,
                    price,
                    rng.randrange(1, 30),
                    False,
                    0,
                )
            )
        else:
            commands.append(
                (
                    e.C_PLACE,
                    account,
                    f"c{seq}",
                    side,
                    e.MARKET,
                    e.IOC,
                    0,
                    rng.randrange(1, 30),
                    False,
                    0,
                )
            )
        if rng.random() < 0.001:
            mid += rng.choice((-1, 1))
    return commands


def run_engine(commands: list[tuple[Any, ...]]) -> tuple[float, e.Engine]:
    engine = e.Engine(bench_spec())
    execute = engine.execute
    gc.disable()
    try:
        start = time.perf_counter()
        ts = 0
        for seq, cmd in enumerate(commands, 1):
            ts += 1000
            execute(cmd, seq, ts)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed, engine


def run_reference(commands: list[tuple[Any, ...]]) -> float:
    book = BareBook()
    gc.disable()
    try:
        start = time.perf_counter()
        for seq, cmd in enumerate(commands, 1):
            kind = cmd[0]
            if kind == e.C_PLACE:
                book.place(seq, cmd[3] == e.BUY, cmd[6], cmd[7], cmd[5] == e.GTC)
            elif kind == e.C_CANCEL:
                book.cancel(cmd[2])
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed


def engine_benchmark(count: int = 1_000_000) -> dict[str, object]:
    commands = generate(count)
    elapsed, engine = run_engine(commands)
    reference = run_reference(commands)
    ops = len(commands) / elapsed
    reference_ops = len(commands) / reference
    return {
        "commands": len(commands),
        "ops_per_s": round(ops),
        "reference_ops_per_s": round(reference_ops),
        "ratio": round(ops / reference_ops, 3),
        "trades": engine.next_trade_id - 1,
        "resting_orders": len(engine.orders),
        "price_levels": len(engine.bid_levels) + len(engine.ask_levels),
    }


BENCHMARKS = {"matcher.engine": engine_benchmark}
