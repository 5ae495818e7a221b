"""exactly-once: the seed's duplicate injection (`exactly_once_stress.sh`; here
`e2e/bench/ledger_stress.py`) into the venue's ledger while the traders trade.

- One trade injected `duplicates` times (full form 1,000,000) by 64 concurrent workers over
  HTTP (`POST /v1/internal/trades/executed`): applied once.
- A sweep: one order that takes `distinct` resting orders (full form 10,000 trades, one
  command), each trade injected `copies` times (full form 100) by the 64 workers in order,
  so that copies of a trade overtake the one before it: those are parked behind the gap
  and settled, once, when the gap is filled.

`applied` (journal entries of the injected trades) must equal `distinct` (the distinct
trades injected), and the balances must show one settlement of each. The stress markets are
two that no matcher feeds: the ledger is restarted with them and, at the end, without them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from google.protobuf import json_format

from contracts.v1 import events_pb2
from e2e.bench import ledger_stress as stress
from e2e.bench import simulate
from e2e.drills.harness import Context, exercise
from e2e.drills.report import Plan, Result
from e2e.drills.stackvenue import DrillVenue
from workloads.ledger import rules
from workloads.ledger.applier import Applier
from workloads.matcher import engine as e
from workloads.matcher.spec import MarketSpec

SINGLE, SWEEP = "STRESS-USD", "SWEEP-USD"
FORMS = {False: (20_000, 1_000, 10), True: (1_000_000, 10_000, 100)}
"""Short and full form: (duplicates of one trade, distinct trades, copies of each)."""
CONCURRENCY = 64


@dataclass(frozen=True)
class Sweep:
    trades: list[events_pb2.Event]
    expected: dict[tuple[str, str], tuple[int, int]]


async def with_markets(venue: DrillVenue, extra: list[str]) -> None:
    """Restart the ledger with the venue's own market(s) plus `extra`."""
    ledger = venue.ledger
    own = [m for m in ledger.markets.split(",") if m.partition("=")[0] not in (SINGLE, SWEEP)]
    ledger.markets = ",".join(own + extra)
    await asyncio.to_thread(ledger.stop)
    await venue.restart(ledger)


async def applied_seq(dsn: str, symbol: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        seq = await conn.fetchval("SELECT applied_seq FROM market_state WHERE market = $1", symbol)
    finally:
        await conn.close()
    return int(seq or 0)


async def seed_sweep(target: stress.Target, trades: int) -> Sweep:
    """Makers rest `trades` one-lot sells, a taker's buy takes them all; everything up to
    the trades is applied through the settlement path itself, the trades are returned."""
    base, _, quote = target.symbol.partition("-")
    spec = MarketSpec(target.symbol, base, quote, maker_fee_bps=10, taker_fee_bps=20)
    run = uuid.uuid4().hex[:8]
    per_maker = spec.max_open_orders
    makers = [f"maker{i}-{run}" for i in range(-(-trades // per_maker))]
    taker = f"taker-{run}"
    sim = simulate.Simulator(spec)
    sim.engine.seq = await applied_seq(target.dsn, target.symbol)  # continue the market
    events = sim.start_epoch(1) + sim.run(simulate.funding([*makers, taker], spec, 10**12))
    events += sim.run(
        [(e.C_PLACE, makers[i // per_maker], f"s{i}", e.SELL, e.LIMIT, e.GTC, 1000, 1, False, 0)
         for i in range(trades)]
    )  # fmt: skip
    accepted, *fills = sim.run([(e.C_PLACE, taker, "sweep", e.BUY, e.LIMIT, e.GTC, 1000, trades,
                                 False, 0)])  # fmt: skip
    kinds = Counter(f.WhichOneof("body") for f in fills)
    if accepted.WhichOneof("body") != "order_accepted" or kinds != {"trade_executed": trades}:
        raise RuntimeError(f"the sweep did not come out as {trades} trades: {kinds}")
    applier = Applier(target.dsn, "fees")
    await applier.start()
    try:
        decoded = [rules.decode(ev.SerializeToString(), "fees") for ev in [*events, accepted]]
        for start in range(0, len(decoded), 2000):
            await applier.submit(decoded[start : start + 2000])
    finally:
        await applier.stop()
    owners = {*makers, taker}
    return Sweep(fills, {k: v for k, v in sim.balances().items() if k[0] in owners})


async def inject(target: stress.Target, bodies: list[bytes], copies: int) -> Counter[str]:
    """Each body `copies` times, in order, by CONCURRENCY workers; the replies' outcomes."""
    counts: Counter[str] = Counter()
    total = len(bodies) * copies
    taken = 0
    url = f"{target.url}/v1/internal/trades/executed"
    headers = {"Content-Type": "application/json", "X-Admin-Token": target.token}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal taken
        while taken < total:
            body = bodies[taken // copies]
            taken += 1
            async with session.post(url, data=body, headers=headers) as response:
                reply = await response.json()
            if response.status == 200 and reply.get("applied") is True:
                counts["applied"] += 1
            elif response.status == 200 and reply.get("outcome") == "duplicate":
                counts["duplicate"] += 1
            elif response.status == 202:
                counts["parked"] += 1
            else:
                counts["other"] += 1

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    return counts


async def booked(target: stress.Target, trade_ids: list[str], within: float = 300) -> int:
    """How many of `trade_ids` the ledger booked, once nothing of the market is parked."""
    conn = await asyncpg.connect(target.dsn)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            parked = await conn.fetchval(
                "SELECT count(*) FROM parked_events WHERE market = $1", target.symbol
            )
            entries = await conn.fetchval(
                "SELECT count(*) FROM journal WHERE market = $1 AND trade_id = ANY($2)",
                target.symbol,
                trade_ids,
            )
            if (parked == 0 and entries >= len(trade_ids)) or loop.time() > deadline:
                return int(entries)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def sweep(target: stress.Target, distinct: int, copies: int) -> dict[str, Any]:
    seeded = await seed_sweep(target, distinct)
    bodies = [
        json.dumps(json_format.MessageToDict(t.trade_executed, preserving_proto_field_name=True))
        .encode() for t in seeded.trades
    ]  # fmt: skip
    started = time.perf_counter()
    counts = await inject(target, bodies, copies)
    seconds = time.perf_counter() - started
    entries = await booked(target, [t.trade_executed.trade_id for t in seeded.trades])
    checked = await stress.verify(target, stress.Seeded(seeded.trades[0], seeded.expected))
    return {
        "distinct_trades": distinct,
        "copies_each": copies,
        "applied_distinct": entries,
        "http": dict(counts),
        "distinct_rate_per_s": round(distinct * copies / seconds),
        "balances_ok": checked["balances_ok"],
    }


async def injections(ctx: Context) -> None:
    venue, result = ctx.venue, ctx.result
    duplicates, distinct, copies = FORMS[ctx.plan.full]
    token = venue.admin_headers.get("X-Admin-Token", "")
    await with_markets(venue, [SINGLE, SWEEP])
    try:
        target = stress.Target(venue.ledger.url, venue.dsn, token, SINGLE)
        single = await stress.run(target, duplicates, CONCURRENCY, 0)
        result.figures["cycles"] = 1
        swept = await sweep(stress.Target(venue.ledger.url, venue.dsn, token, SWEEP), distinct,
                            copies)  # fmt: skip
        result.figures["cycles"] = 2
    finally:
        await with_markets(venue, [])
    result.figures.update(
        {
            "duplicates": duplicates,
            "applied_single": single["trade_transactions"],
            "rate_per_s": single["injections_per_s"],
            **swept,
            "distinct": 1 + distinct,
            "applied": single["trade_transactions"] + swept["applied_distinct"],
            "errors": single["errors"] + swept["http"].get("other", 0),
        }
    )
    result.details["single"] = single
    figures = result.figures
    if figures["applied"] != figures["distinct"]:
        result.problems.append(f"applied {figures['applied']} != distinct {figures['distinct']}")
    if figures["errors"]:
        result.problems.append(f"{figures['errors']} injections answered with an error")
    if not (single["balances_single_settlement"] and swept["balances_ok"]):
        result.problems.append("the balances do not show exactly one settlement of each trade")


async def run(venue: DrillVenue, plan: Plan) -> Result:
    return await exercise(venue, plan, injections, rate=20.0)
