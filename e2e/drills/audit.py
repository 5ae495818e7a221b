"""The checks made after a drill, from the outside: what the traders were told, held against
the events topic, the ledger's book and the gateways' order lists, and the ledger's health.

- Every acknowledged order is in the topic once, under the order id and the client order id
  the trader was given, and every gateway replica lists it the same way; no client order id
  was placed twice (a retry answered with the original result, not a second order).
- Every trade the topic holds is booked exactly once by the ledger, under its trade id, and
  nothing else is; in particular every fill a trader saw in an order's reply.
- The market's seqs are gapless and every event id appears once.
- The invariants pass, the balance rebuild agrees, the reconciliation comes back to lag 0,
  and no evaluation during the drill was a breach.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import grpc

from e2e.drills.orderflow import Answer, OrderFlow
from e2e.drills.stackvenue import DrillVenue
from e2e.drills.verify import envelope, read_topic
from workloads.gateway.client import GatewayClient

GATEWAY_CHECKED = 50_000
"""At most this many of the newest acknowledged orders are looked up in the gateways' order
lists: a gateway keeps the newest EDGE_ORDER_CACHE_SIZE (200,000) orders of the venue."""


@dataclass
class Watch:
    """The reconciliation as seen every half second during a drill."""

    max_lag: int = 0
    max_behind: float = 0.0
    max_unobserved: float = 0.0
    """The longest the ledger went without observing the matcher's seq (its stale bound
    is 30 s)."""
    polls: int = 0
    unanswered: int = 0

    async def run(self, venue: DrillVenue, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                market = await venue.reconciliation()
            except (aiohttp.ClientError, OSError, TimeoutError, KeyError, ValueError,
                    StopIteration):  # fmt: skip
                self.unanswered += 1  # the ledger is down (a kill) or not ready yet
            else:
                self.polls += 1
                self.max_lag = max(self.max_lag, market["lag"] or 0)
                self.max_behind = max(self.max_behind, market["behind_seconds"] or 0.0)
                if market.get("engine_seen_at_ms"):
                    unobserved = time.time() - market["engine_seen_at_ms"] / 1000
                    self.max_unobserved = max(self.max_unobserved, unobserved)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def figures(self) -> dict[str, Any]:
        return {"max_lag": self.max_lag, "max_behind_seconds": round(self.max_behind, 1),
                "max_matcher_unobserved_seconds": round(self.max_unobserved, 1)}  # fmt: skip


async def breach_mark(venue: DrillVenue) -> int:
    """The newest reconciliation evaluation so far: breaches are counted after it."""
    conn = await asyncpg.connect(venue.dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM reconciliation_history"))
    finally:
        await conn.close()


async def settle(venue: DrillVenue, within: float = 180.0) -> dict[str, Any]:
    """Wait until the ledger has applied everything the matcher has now, at lag 0; the
    market's reconciliation status then (`lag_zero` false in it if that never came)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    market: dict[str, Any] = {}
    target = 0
    while loop.time() < deadline:
        with contextlib.suppress(
            aiohttp.ClientError, OSError, TimeoutError, grpc.aio.AioRpcError, StopIteration
        ):
            target = target or (await venue.status()).seq
            market = await venue.reconciliation()
            if market["lag"] == 0 and (market["applied_seq"] or 0) >= target:
                return {**market, "lag_zero": True}
        await asyncio.sleep(0.25)
    return {**market, "lag_zero": False, "target_seq": target}


async def audit(
    venue: DrillVenue, flow: OrderFlow, mark: int
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """The figures, the problems and the details of the checks above."""
    problems: list[str] = []
    market = await settle(venue)
    if not market["lag_zero"]:
        problems.append(f"the reconciliation did not come back to lag 0: {market}")
    events = [
        e for e in await read_topic(venue.broker.bootstrap, venue.topic, within=600)
        if envelope(e).symbol == venue.symbol
    ]  # fmt: skip
    figures = {**orders_known(events, flow.acked, problems), **topic_whole(events, problems)}
    trades = {e.trade_executed.trade_id for e in events if e.HasField("trade_executed")}
    figures.update(await booked_once(venue, trades, flow.acked, problems))
    figures["gateway_unknown"] = await gateways_know(venue, flow, problems)
    figures.update(await ledger_healthy(venue, problems))
    found = await breaches_since(venue, mark)
    if found:
        problems.append(f"{len(found)} reconciliation breaches, e.g. {found[:2]}")
    figures.update({"lag_zero": market["lag_zero"], "breaches": len(found),
                    "latched": bool(market.get("latched"))})  # fmt: skip
    return figures, problems, {"reconciliation": market, "breaches": found[:20]}


def orders_known(events: list[Any], acked: list[Answer], problems: list[str]) -> dict[str, Any]:
    accepted = [e.order_accepted for e in events if e.HasField("order_accepted")]
    times = Counter(a.order_id for a in accepted)
    by_order = {a.order_id: (a.client_order_id, a.account) for a in accepted}
    lost = []
    for answer in acked:
        order = answer.order_id.rpartition(":")[2]
        if times[order] != 1 or by_order.get(order) != (answer.key, answer.account):
            lost.append(f"{answer.order_id} ({answer.key}): in the topic {times[order]}x as "
                        f"{by_order.get(order)}")  # fmt: skip
    if lost:
        problems.append(f"{len(lost)} acknowledged orders lost or changed, e.g. {lost[:3]}")
    placed = Counter((a.account, a.client_order_id) for a in accepted)
    twice = [k for k, n in placed.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} client order ids placed twice, e.g. {twice[:3]}")
    return {"acked_lost": len(lost), "duplicate_orders": len(twice)}


def topic_whole(events: list[Any], problems: list[str]) -> dict[str, Any]:
    ids = Counter(envelope(e).event_id for e in events)
    twice = [i for i, n in ids.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} event ids published more than once, e.g. {twice[:3]}")
    seqs = sorted({envelope(e).seq for e in events})
    gapless = seqs == list(range(1, len(seqs) + 1))
    if not gapless:
        problems.append(f"seqs are not gapless from 1: {len(seqs)} seqs up to {seqs[-1:]}")
    return {"events": len(events), "last_seq": seqs[-1] if seqs else 0, "seqs_gapless": gapless}


async def booked_once(
    venue: DrillVenue, trades: set[str], acked: list[Answer], problems: list[str]
) -> dict[str, Any]:
    conn = await asyncpg.connect(venue.dsn)
    try:
        rows = await conn.fetch(
            "SELECT trade_id FROM journal WHERE kind = 'trade' AND market = $1", venue.symbol
        )
    finally:
        await conn.close()
    booked = Counter(r["trade_id"] for r in rows)
    duplicates = sum(n - 1 for n in booked.values() if n > 1)
    if duplicates:
        problems.append(f"{duplicates} trades booked more than once")
    unbooked = trades - set(booked)
    unknown = set(booked) - trades
    if unbooked or unknown:
        problems.append(
            f"the ledger's trades differ from the topic's: {len(unbooked)} not booked"
            f" (e.g. {sorted(unbooked)[:3]}), {len(unknown)} unknown"
        )
    seen = {t for a in acked for t in a.trade_ids}
    fills_unbooked = sorted(t for t in seen if booked[t] != 1)
    if fills_unbooked:
        problems.append(f"{len(fills_unbooked)} fills the traders saw are not booked once, "
                        f"e.g. {fills_unbooked[:3]}")  # fmt: skip
    return {
        "trades": len(trades),
        "duplicates_settled": duplicates,
        "trades_unbooked": len(unbooked),
        "fills_booked": len(seen) - len(fills_unbooked),
        "fills_unbooked": len(fills_unbooked),
    }


async def gateways_know(venue: DrillVenue, flow: OrderFlow, problems: list[str]) -> int:
    """The newest acknowledged orders each replica does not list under the same client
    order id (retried for a while: a restarted replica rebuilds its cache from the topic)."""
    newest = sorted(flow.acked, key=lambda a: a.seq)[-GATEWAY_CHECKED:]
    wanted: dict[str, dict[str, str]] = defaultdict(dict)
    for answer in newest:
        wanted[answer.account][answer.order_id] = answer.key
    oldest = newest[0].seq if newest else 0
    missing = 0
    for replica in range(len(venue.gateways)):
        for _ in range(60):
            missing = 0
            for n, trader in enumerate(flow.traders):
                if trader.account in wanted:
                    listed = await listed_orders(flow.clients[n][replica], venue.symbol, oldest)
                    missing += sum(
                        1 for o, key in wanted[trader.account].items() if listed.get(o) != key
                    )
            if not missing:
                break
            await asyncio.sleep(0.5)
        if missing:
            problems.append(f"gateway replica {replica + 1} does not list {missing} "
                            "acknowledged orders under their client order ids")  # fmt: skip
            return missing
    return missing


async def listed_orders(client: GatewayClient, symbol: str, down_to_seq: int) -> dict[str, str]:
    """order id -> client order id of a trader's orders, newest first, to `down_to_seq`."""
    found: dict[str, str] = {}
    path = f"/v1/orders?symbol={symbol}&status=all&limit=500"
    cursor = ""
    while True:
        reply = await client.call("GET", path + (f"&cursor={cursor}" if cursor else ""))
        if reply.status != 200:
            raise RuntimeError(f"listing orders: {reply.status} {reply.body}")
        orders = reply.body["orders"]
        found.update({o["order_id"]: o["client_order_id"] for o in orders})
        cursor = reply.body["next_cursor"] or ""
        if not cursor or (orders and orders[-1]["seq"] < down_to_seq):
            return found


async def ledger_healthy(venue: DrillVenue, problems: list[str]) -> dict[str, Any]:
    status, report = await venue.admin("POST", "/v1/admin/invariants/check")
    invariants = status == 200 and report.get("ok") is True
    if not invariants:
        problems.append(f"invariants: {status} {str(report)[:500]}")
    status, rebuild = await venue.admin("POST", "/v1/admin/rebuild-balances", {})
    consistent = status == 200 and rebuild.get("consistent") is True
    if not consistent:
        problems.append(f"the balance rebuild disagrees: {status} {str(rebuild)[:500]}")
    return {"invariants_ok": invariants and consistent}


async def breaches_since(venue: DrillVenue, mark: int) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(venue.dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, evaluated_at, lag, reasons, action FROM reconciliation_history"
            " WHERE market = $1 AND breach AND id > $2 ORDER BY id",
            venue.symbol,
            mark,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]
