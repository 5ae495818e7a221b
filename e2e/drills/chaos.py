"""The chaos drills (chaos-core, chaos-ledger, chaos-gateway, chaos-broker, chaos-full):
faults from a seeded schedule (`schedule.py`) under a crossing order flow, each part
brought back after it, then the audit.

- matcher-kill: kill -9 of the matcher, restarted (now and then after a few seconds down);
  its (seq, hash) sampled just before and just after, for the continuity check.
- ledger-kill: kill -9 of the ledger in the middle of a settlement batch. Settlement is
  paused for a moment so that a backlog builds up, resumed, and the ledger is killed as
  soon as PostgreSQL shows its settlement transaction open (a backend of the ledger's with
  a transaction id, seen in `pg_stat_activity`), then restarted.
- gateway-kill: kill -9 of one of the two gateway replicas, restarted after a moment; the
  clients fail over to the other one and retry under their Idempotency-Keys.
- broker-bounce: Kafka stopped, a pause, started again.
- broker-freeze: Kafka SIGSTOPped past the producers' timeouts (`schedule.FREEZE_SECONDS`),
  then SIGCONTed.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from e2e.drills.harness import Context, exercise
from e2e.drills.report import Plan, Result
from e2e.drills.schedule import Fault, Step, schedule
from e2e.drills.stackvenue import DrillVenue

SETTLING = """
SELECT count(*) FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND backend_xid IS NOT NULL
   AND application_name IS DISTINCT FROM 'gateway'
"""
"""Open transactions that have written, other than the gateways': the ledger's settlement
(funding and corrections also write, but none runs during a chaos drill)."""
APPLIED = "SELECT applied_seq FROM market_state WHERE market = $1"
BURST = 20
"""Orders sent to a gateway replica just before it is killed: in flight there, some claimed
and forwarded to the matcher but not answered, so that their retries on the other replica
must get the original result."""


async def matcher_kill(ctx: Context, step: Step) -> dict[str, Any]:
    venue = ctx.venue
    before = await ctx.chain.sample(venue, f"before kill {step.n}", within=2.0)
    venue.matcher.kill()
    await asyncio.sleep(step.down)
    restart = await venue.restart(venue.matcher)
    after = await ctx.chain.sample(venue, f"after restart {step.n}")
    return {
        "seq_before": before.seq if before else None,
        "seq_after": after.seq if after else None,
        "epoch_after": after.epoch if after else None,
        "restart_seconds": round(restart, 2),
    }


async def ledger_kill(ctx: Context, step: Step) -> dict[str, Any]:
    venue = ctx.venue
    conn = await asyncpg.connect(venue.dsn)
    try:
        await venue.admin("POST", "/v1/admin/consumers/settlement/pause")
        await asyncio.sleep(1.5)  # the backlog the resumed consumer settles in batches
        engine = (await venue.status()).seq
        applied = await conn.fetchval(APPLIED, venue.symbol)
        await venue.admin("POST", "/v1/admin/consumers/settlement/resume")
        mid_batch = await settling(conn, within=3.0)
        venue.ledger.kill()
    finally:
        await conn.close()
    await asyncio.sleep(step.down)
    restart = await venue.restart(venue.ledger)
    return {
        "backlog": engine - (applied or 0),
        "mid_batch": mid_batch,
        "restart_seconds": round(restart, 2),
    }


async def settling(conn: asyncpg.Connection, within: float) -> bool:
    """Poll until the ledger's settlement transaction is open; False if none was seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if await conn.fetchval(SETTLING):
            return True
    return False


async def gateway_kill(ctx: Context, step: Step) -> dict[str, Any]:
    gateway = ctx.venue.gateways[step.replica]
    conn = await asyncpg.connect(ctx.venue.dsn)
    try:
        keys = ctx.flow.burst(BURST, step.replica)
        claimed = await claims_open(conn, gateway.schema, keys, within=2.0)
        gateway.kill()
    finally:
        await conn.close()
    await asyncio.sleep(step.down)
    restart = await ctx.venue.restart(gateway)
    return {"gateway": gateway.name, "burst": BURST, "claims_open_at_kill": claimed,
            "restart_seconds": round(restart, 2)}  # fmt: skip


async def claims_open(conn: asyncpg.Connection, schema: str, keys: list[str], within: float) -> int:
    """Poll until some of `keys` are claimed but not answered (status 0 in the gateways'
    idempotency table); how many, 0 if that was never seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    query = f'SELECT count(*) FROM "{schema}".idempotency WHERE status = 0 AND key = ANY($1)'
    while loop.time() < deadline:
        found = int(await conn.fetchval(query, keys))
        if found:
            return found
    return 0


async def broker_bounce(ctx: Context, step: Step) -> dict[str, Any]:
    broker = ctx.venue.broker
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.to_thread(broker.stop)
    stopped = loop.time() - began
    await asyncio.sleep(step.down)
    start = await asyncio.to_thread(broker.start)
    return {"stop_seconds": round(stopped, 2), "start_seconds": round(start, 2)}


async def broker_freeze(ctx: Context, step: Step) -> dict[str, Any]:
    process = ctx.venue.broker.process
    assert process is not None
    process.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(step.down)
    finally:
        process.signal(signal.SIGCONT)
    return {"frozen_seconds": step.down}


FAULTS: dict[Fault, Callable[[Context, Step], Awaitable[dict[str, Any]]]] = {
    Fault.MATCHER_KILL: matcher_kill,
    Fault.LEDGER_KILL: ledger_kill,
    Fault.GATEWAY_KILL: gateway_kill,
    Fault.BROKER_BOUNCE: broker_bounce,
    Fault.BROKER_FREEZE: broker_freeze,
}


async def faults(ctx: Context) -> None:
    """The drill's schedule, fault by fault, trading on between them."""
    plan, result = ctx.plan, ctx.result
    steps = schedule(plan.drill, plan.full, plan.seed, replicas=len(ctx.venue.gateways))
    result.details["schedule"] = [s.to_json() for s in steps]
    cycles: list[dict[str, Any]] = []
    result.details["cycles"] = cycles
    for step in steps:
        cycles.append({**step.to_json(), **await FAULTS[step.fault](ctx, step)})
        result.figures["cycles"] = len(cycles)
        await asyncio.sleep(step.gap)
    result.figures["faults"] = dict(Counter(str(s.fault) for s in steps))
    restarts = [c["restart_seconds"] for c in cycles if "restart_seconds" in c]
    if restarts:
        result.figures["restart_seconds_max"] = max(restarts)
    ledger = [c for c in cycles if c["fault"] == Fault.LEDGER_KILL]
    if ledger:
        result.figures["ledger_kills_mid_batch"] = sum(1 for c in ledger if c["mid_batch"])


async def run(venue: DrillVenue, plan: Plan) -> Result:
    return await exercise(venue, plan, faults)
