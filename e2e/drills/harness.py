"""What every drill shares: traders signed up through the gateway and funded through the
ledger, their signed crossing orders flowing through both gateway replicas while the drill
does its own thing (kill, bounce, inject, fuzz, restore), then the audit from the outside
and the state hash's continuity, gathered into the drill's `Result`."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from e2e.drills import audit
from e2e.drills.hashchain import HashChain
from e2e.drills.orderflow import OrderFlow
from e2e.drills.report import Plan, Result
from e2e.drills.stackvenue import DrillVenue
from e2e.drills.traders import Trader, deposit

HEADLINE = ("cycles", "orders_acked", "acked_lost", "duplicates_settled", "invariants_ok",
            "hash_continuous")  # fmt: skip
"""The figures every drill's JSON line starts with (the issue's common keys)."""
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class Context:
    """What a drill's action works with, and where it puts what it finds."""

    venue: DrillVenue
    plan: Plan
    flow: OrderFlow
    chain: HashChain
    http: aiohttp.ClientSession
    result: Result = field(default_factory=Result)


Action = Callable[[Context], Awaitable[None]]


async def sign_up(
    http: aiohttp.ClientSession, venue: DrillVenue, count: int, prefix: str, parallel: int = 4
) -> list[Trader]:
    """`count` traders, each signed up with an API key (through both replicas in turn) and
    funded through the ledger with plenty of both assets."""
    gate = asyncio.Semaphore(parallel)
    base, _, quote = venue.symbol.partition("-")
    token = venue.admin_headers.get("X-Admin-Token", "")

    async def one(n: int) -> Trader:
        async with gate:
            url = venue.gateway_urls[n % len(venue.gateway_urls)]
            trader = await Trader.signup(http, url, f"{prefix}{n}")
            for asset, amount in ((base, 10**12), (quote, 10**15)):
                await deposit(http, venue.ledger.url, token, venue.symbol, trader.account, asset,
                              amount)  # fmt: skip
            return trader

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def exercise(
    venue: DrillVenue,
    plan: Plan,
    action: Action,
    *,
    traders: int = 8,
    rate: float = 60.0,
    warmup: float = 2.0,
    cooldown: float = 3.0,
) -> Result:
    """Run `action` in the middle of a crossing order flow, then check everything."""
    mark = await audit.breach_mark(venue)
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        people = await sign_up(http, venue, traders, plan.drill.replace("-", ""))
        flow = OrderFlow(people, venue.gateway_urls, venue.symbol, rate=rate)
        context = Context(venue, plan, flow, HashChain(), http)
        result = context.result
        await context.chain.sample(venue, "start")
        stop, watch = asyncio.Event(), audit.Watch()
        running = [asyncio.create_task(flow.run(stop)), asyncio.create_task(watch.run(venue, stop))]
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(warmup)
            try:
                await action(context)
            except Exception as exc:  # the audit still says what state it left
                result.problems.append(f"the drill's action failed: {exc!r}")
                result.details["action_error"] = traceback.format_exc()
            over = loop.time()
            await asyncio.sleep(cooldown)
        finally:
            stop.set()
            await asyncio.gather(*running)
        figures, problems, details = await audit.audit(venue, flow, mark)
        hashes, hash_problems = await context.chain.verify(venue)
    if flow.rate > 0 and not flow.acked_after(over):
        problems.append("no order was acknowledged after the drill's faults: trading stopped")
    result.problems[:0] = [*problems, *hash_problems]
    everything = {**flow.tally(), **figures, **hashes, **watch.figures(), **result.figures,
                  "acked_after_faults": flow.acked_after(over)}  # fmt: skip
    everything.setdefault("cycles", 0)
    result.figures = {**{k: everything[k] for k in HEADLINE}, **everything}
    result.details.update(details)
    result.details["hash_samples"] = context.chain.to_json()
    result.details["hash_samples_missed"] = context.chain.missed
    result.details["unanswered"] = [vars(a) for a in flow.answers if a.http == 0][:50]
    return result


def timed(figures: dict[str, Any], name: str, started: float) -> None:
    """Put the seconds since `started` (time.monotonic) into `figures[name]`."""
    figures[name] = round(time.monotonic() - started, 2)
