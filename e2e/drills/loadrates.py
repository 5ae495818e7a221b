"""load: an open-loop order load at fixed rates through both gateway replicas, a minute at
each rate in the full form (500, 1,000 and 2,000 orders/s), with p50/p99/p999 and the
errors per rate, then the usual audit of every order it placed.

The generator is a process of its own (`openloop.py`). Its traders are the drill's, enough
of them that none goes past 700 requests a minute at the highest rate: the gateway's rate
limit (EDGE_RATE_LIMIT_PER_MINUTE, 1,000 per trader in `make up`) stays what it is, and the
load is what many traders send, not one trader's flood.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from e2e.drills.harness import Context, exercise
from e2e.drills.orderflow import Answer
from e2e.drills.report import Plan, Result
from e2e.drills.stackvenue import DrillVenue

FORMS = {False: ((100, 10.0), (200, 10.0)), True: ((500, 60.0), (1000, 60.0), (2000, 60.0))}
"""Short and full form: (orders/s, seconds) in turn."""
PER_TRADER_PER_MINUTE = 700
CONNECTIONS = 64
"""Keep-alive connections per gateway replica."""


def traders_for(full: bool) -> int:
    highest = max(rate for rate, _ in FORMS[full])
    return 2 * math.ceil(highest * 60 / PER_TRADER_PER_MINUTE / 2)  # even: sells and buys


async def generate(ctx: Context, rate: int, seconds: float, scratch: Path) -> dict[str, Any]:
    """One rate: the generator's figures; its answers join the flow's for the audit."""
    flow = ctx.flow
    spec = {
        "gateways": ctx.venue.gateway_urls,
        "traders": [[t.account, t.client.api_key, t.client.secret] for t in flow.traders],
        "symbol": flow.symbol, "price": flow.price, "quantity": flow.quantity,
        "rate": rate, "seconds": seconds, "connections": CONNECTIONS,
        "tag": f"{flow.tag}r{rate}",
    }  # fmt: skip
    (scratch / "spec.json").write_text(json.dumps(spec))
    answers = scratch / f"answers-{rate}.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "e2e.drills.openloop", str(scratch / "spec.json"), str(answers),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), seconds + 180)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"the generator failed at {rate}/s: {err.decode()[-800:]}")
    loop = asyncio.get_running_loop()
    for line in answers.read_text().splitlines():
        key, account, status, order_id, state, seq, code, fills, latency = json.loads(line)
        flow.answers.append(Answer(key, account, status, loop.time(), latency, order_id, state,
                                   seq, code, tuple(fills)))  # fmt: skip
    flow.sent += int(rate * seconds)
    figures: dict[str, Any] = json.loads(out)
    return figures


async def rates(ctx: Context) -> None:
    result = ctx.result
    per_rate: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="drill-load-") as scratch:
        for rate, seconds in FORMS[ctx.plan.full]:
            per_rate[str(rate)] = await generate(ctx, rate, seconds, Path(scratch))
            result.figures["cycles"] = len(per_rate)
            await asyncio.sleep(3)  # let the ledger and the feeds catch up between rates
    result.figures.update(
        {
            "p50_ms": {r: f["p50_ms"] for r, f in per_rate.items()},
            "p99_ms": {r: f["p99_ms"] for r, f in per_rate.items()},
            "p999_ms": {r: f["p999_ms"] for r, f in per_rate.items()},
            "errors": {r: f["errors"] for r, f in per_rate.items()},
            "achieved_per_s": {r: f["achieved_per_s"] for r, f in per_rate.items()},
            "traders": len(ctx.flow.traders),
        }
    )
    result.details["rates"] = per_rate
    failed = {r: f["statuses"] for r, f in per_rate.items() if f["errors"]}
    if failed:
        result.problems.append(f"orders answered other than 200/201: {failed}")


async def run(venue: DrillVenue, plan: Plan) -> Result:
    return await exercise(venue, plan, rates, traders=traders_for(plan.full), rate=5.0)
