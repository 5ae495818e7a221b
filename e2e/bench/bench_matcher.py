"""Matcher benchmarks (`make bench BENCH=matcher`).

matcher.engine: the in-process engine with risk, idempotency, events and the rolling hash,
on a command mix modelled on exchange-core's benchmark: mostly GTC limit orders near the
touch (a tenth of them crossing), many cancels, some IOC and MARKET orders; about 1,000
resting orders per side over a few hundred price levels. `reference_ops_per_s` runs the
same commands through the simplest price-time book (SortedDict + deque, nothing else) in the
same process, `bare_heap_ops_per_s` through a bare heap book with lazy cancel.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e.bench.bare_book import HeapBook, SimpleBook
from e2e.env.matcher import MatcherProcess
from e2e.env.process import ManagedProcess, free_port, port_open
from workloads.matcher import engine as e
from workloads.matcher import recovery, snapshot, wal
from workloads.matcher.epoch import FileEpoch
from workloads.matcher.sequencer import Sequencer, SequencerSettings, tune_runtime
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


def run_reference(commands: list[tuple[Any, ...]], book: SimpleBook | HeapBook) -> float:
    gc.disable()
    try:
        start = time.perf_counter()
        for seq, cmd in enumerate(commands, 1):
            kind = cmd[0]
            if kind == e.C_PLACE:
                buy = cmd[3] == e.BUY
                price = cmd[6] or (1 << 62 if buy else 0)  # MARKET: no limit
                book.place(seq, buy, price, cmd[7], cmd[5] == e.GTC)
            elif kind == e.C_CANCEL:
                book.cancel(cmd[2])
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed


def engine_benchmark(count: int = 1_000_000) -> dict[str, object]:
    commands = generate(count)
    elapsed, engine = run_engine(commands)
    reference_ops = len(commands) / run_reference(commands, SimpleBook())
    heap_ops = len(commands) / run_reference(commands, HeapBook())
    ops = len(commands) / elapsed
    return {
        "commands": len(commands),
        "ops_per_s": round(ops),
        "reference_ops_per_s": round(reference_ops),
        "ratio": round(ops / reference_ops, 3),
        "bare_heap_ops_per_s": round(heap_ops),
        "trades": engine.next_trade_id - 1,
        "resting_orders": len(engine.orders),
        "price_levels": len(engine.bid_levels) + len(engine.ask_levels),
    }


BENCHMARKS: dict[str, Callable[[], dict[str, object]]] = {"matcher.engine": engine_benchmark}


# ---------------------------------------------------------------------- durability


async def _wal_throughput(data_dir: Path, commands: list[tuple[Any, ...]]) -> dict[str, object]:
    sequencer = await _sequencer(data_dir)
    try:
        return await _throughput(sequencer, commands)
    finally:
        await sequencer.close()


async def _throughput(sequencer: Sequencer, commands: list[tuple[Any, ...]]) -> dict[str, object]:
    """Durable commands/s: 64 concurrent callers, each submitting small batches."""
    data_dir = sequencer.data_dir
    chunks = [commands[i : i + 16] for i in range(0, len(commands), 16)]
    queue = iter(chunks)
    start = time.perf_counter()

    async def caller() -> None:
        for chunk in queue:
            await sequencer.submit([(c, "") for c in chunk])

    await asyncio.gather(*(caller() for _ in range(64)))
    elapsed = time.perf_counter() - start
    records = list(wal.read(data_dir / "wal"))
    return {
        "ops_per_s": round(len(commands) / elapsed),
        "fsyncs": len(records),
        "commands_per_fsync": round(len(commands) / len(records), 1),
    }


async def _wal_latency(
    data_dir: Path, commands: list[tuple[Any, ...]], rate: int
) -> dict[str, float]:
    sequencer = await _sequencer(data_dir)
    try:
        return await _latency(sequencer, commands, rate)
    finally:
        await sequencer.close()


async def _latency(
    sequencer: Sequencer, commands: list[tuple[Any, ...]], rate: int
) -> dict[str, float]:
    """Submit-to-durable latency at a fixed offered rate (chunks every 2 ms)."""
    tick = 0.002
    per_tick = max(1, int(rate * tick))
    latencies: list[float] = []
    waits = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def timed(sent: float, last_seq: int, count: int) -> None:
        await sequencer.durable(last_seq)
        latencies.extend([time.perf_counter() - sent] * count)

    for i in range(0, len(commands), per_tick):
        await asyncio.sleep(max(0.0, start + (i // per_tick) * tick - loop.time()))
        sent = time.perf_counter()
        chunk = commands[i : i + per_tick]
        executed = sequencer.execute_nowait([(c, "") for c in chunk])
        waits.append(asyncio.create_task(timed(sent, executed.last_seq, len(chunk))))
    await asyncio.gather(*waits)
    latencies.sort()
    return {
        "offered_per_s": rate,
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
    }


async def _sequencer(data_dir: Path) -> Sequencer:
    fencing = FileEpoch(data_dir / "epoch", "bench")
    epoch = await fencing.acquire()
    sequencer = Sequencer(
        e.Engine(bench_spec()), data_dir, epoch, fencing, SequencerSettings(snapshot_every=0)
    )
    sequencer.start()
    return sequencer


def wal_benchmark(count: int = 300_000) -> dict[str, object]:
    commands = generate(count)
    tune_runtime()  # as the matcher process does after recovery
    with tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR")) as first:
        throughput = asyncio.run(_wal_throughput(Path(first), commands))
    with tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR")) as second:
        latency = asyncio.run(_wal_latency(Path(second), commands[:200_000], 50_000))
    return {"commands": count, **throughput, **latency}


def write_log(
    data_dir: Path, commands: list[tuple[Any, ...]]
) -> tuple[int, tuple[int, int, dict[str, Any]]]:
    """The WAL a matcher would have written for `commands` (records of 2,000, epoch 1, every
    segment sealed); the final state hash, and (seq, hash, state) half-way for a snapshot."""
    engine = e.Engine(bench_spec())
    writer = wal.WalWriter(data_dir / "wal", 1)
    batch: list[list[Any]] = []
    count = len(commands)
    half: tuple[int, int, dict[str, Any]] = (0, 0, {})
    for seq, cmd in enumerate(commands, 1):
        ts = seq * 1000
        events = engine.execute(cmd, seq, ts)
        batch.append([ts, cmd, events, "", engine.state_hash])
        if len(batch) == 2000 or seq == count:
            first = seq - len(batch) + 1
            writer.write(wal.encode(first, 1, engine.state_hash, batch), first)
            batch = []
        if seq == count // 2:
            half = (seq, engine.state_hash, engine.to_state())
    writer.rotate(count + 1)
    writer.close()
    return engine.state_hash, half


def recovery_benchmark(count: int = 1_000_000) -> dict[str, object]:
    """Seconds to recover `count` commands: a snapshot half-way plus the WAL tail, and WAL only."""
    commands = generate(count)
    with tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR")) as tmp:
        data_dir = Path(tmp)
        final_hash, half = write_log(data_dir, commands)
        wal_only = recovery.recover(bench_spec(), data_dir)
        assert wal_only.engine.state_hash == final_hash
        wal_only_seconds = wal_only.seconds
        del wal_only
        snapshot.write(data_dir / "snapshots", *half)
        with_snapshot = recovery.recover(bench_spec(), data_dir)
        assert with_snapshot.engine.state_hash == final_hash
    return {
        "commands": count,
        "seconds": round(with_snapshot.seconds, 2),
        "snapshot_seq": with_snapshot.snapshot_seq,
        "replayed": with_snapshot.replayed,
        "wal_only_seconds": round(wal_only_seconds, 2),
    }


BENCHMARKS.update({"matcher.wal": wal_benchmark, "matcher.recovery": recovery_benchmark})


# ---------------------------------------------------------------------- gRPC


def grpc_benchmark(seconds: float = 10.0) -> dict[str, object]:
    """A real matcher process (Kafka off) and a separate load-generator process.

    Each figure gets a matcher of its own: the batched run leaves ~600,000 commands behind,
    and the periodic snapshot they trigger (a fork of that image, serializing it) is still
    running when it ends (measured: most calls of the unary run's first 0.4 s took over
    5 ms). The unary figure is the latency of single calls at a steady 2,000/s, not of the
    cleanup after another benchmark; at that rate a snapshot comes every 100 s.

    `bare_server_*`: the same unary load against `bare_server` (replies ready at once, no
    engine, no WAL), the floor the two Python gRPC stacks set on this machine in this run.
    """
    results: dict[str, object] = {}
    for args in (["batched", str(seconds)], ["unary", str(seconds), "2000"]):
        with tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR")) as tmp:
            matcher = MatcherProcess(Path(tmp), kafka_bootstrap="")
            matcher.start()
            try:
                results.update(_loadgen(matcher.target, *args))
            finally:
                matcher.stop()
    with tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR")) as tmp:
        port = free_port()
        bare = ManagedProcess(
            "bare-server",
            [sys.executable, "-m", "e2e.bench.bare_server", f"127.0.0.1:{port}"],
            Path(tmp),
        )
        bare.start()
        try:
            bare.wait_ready(lambda: port_open("127.0.0.1", port), timeout=30)
            floor = _loadgen(f"127.0.0.1:{port}", "unary", str(seconds), "2000")
        finally:
            bare.stop()
    results.update(bare_server_p50_ms=floor["p50_ms"], bare_server_p99_ms=floor["p99_ms"])
    return results


def _loadgen(target: str, *args: str) -> dict[str, Any]:
    """`e2e.bench.matcher_loadgen` as its own process; its one JSON object."""
    out = subprocess.run(
        [sys.executable, "-m", "e2e.bench.matcher_loadgen", target, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(out.stdout)
    return figures


BENCHMARKS["matcher.grpc"] = grpc_benchmark


# ---------------------------------------------------------------------- replication


def standby_main(data_dir: str, target: str) -> None:
    """The standby's process for `matcher.replicated`: follow the leader at `target` until
    the stream ends (its own core, as the standby's pod has)."""
    from workloads.matcher.standby import Standby

    tune_runtime()
    recovered = recovery.recover(bench_spec(), Path(data_dir))
    standby = Standby(bench_spec(), Path(data_dir), recovered.engine, "bench-standby")
    asyncio.run(standby.follow(target))


async def _replicated(data_dir: Path, run: Callable[[Sequencer], Any]) -> Any:
    """A leader's sequencer with its Replication served on 127.0.0.1 and a standby process
    following it; `run(sequencer)` once the standby is in sync."""
    import grpc

    from contracts.v1 import replication_pb2_grpc
    from workloads.matcher.replication import Replication

    sequencer = await _sequencer(data_dir / "leader")
    replication = Replication(sequencer, data_dir / "leader", sequencer.epoch)
    replication.start()
    server = grpc.aio.server()
    replication_pb2_grpc.add_ReplicationServicer_to_server(replication, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    standby = ManagedProcess(
        "bench-standby",
        [sys.executable, "-c", "from e2e.bench.bench_matcher import standby_main; "
         f"standby_main({str(data_dir / 'standby')!r}, '127.0.0.1:{port}')"],
        data_dir,
    )  # fmt: skip
    standby.start()
    try:
        deadline = time.monotonic() + 30
        while not replication.in_sync:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not get in sync:\n{standby.log_tail()}")
            await asyncio.sleep(0.05)
        result = await run(sequencer)
        if not replication.in_sync:
            raise RuntimeError("the standby fell out of sync: the figures are the leader's alone")
        return result
    finally:
        standby.stop()
        await server.stop(0)
        await replication.stop()
        await sequencer.close()


def replicated_benchmark(count: int = 300_000) -> dict[str, object]:
    """Durable on leader and standby (fsync on both, the standby's ack): commands/s with 64
    concurrent callers, and the commit's p50/p99 at 50k commands/s offered; `matcher.wal`'s
    single-instance figures beside them, from the same run."""
    commands = generate(count)
    tune_runtime()
    with tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR")) as first:
        throughput = asyncio.run(
            _replicated(Path(first), lambda sequencer: _throughput(sequencer, commands))
        )
    with tempfile.TemporaryDirectory(dir=os.environ.get("EXCHANGE_BENCH_DIR")) as second:
        latency = asyncio.run(
            _replicated(
                Path(second), lambda sequencer: _latency(sequencer, commands[:200_000], 50_000)
            )
        )
    single = wal_benchmark(count)
    return {
        "commands": count,
        **throughput,
        **latency,
        "single_ops_per_s": single["ops_per_s"],
        "single_p99_ms": single["p99_ms"],
    }


BENCHMARKS["matcher.replicated"] = replicated_benchmark
