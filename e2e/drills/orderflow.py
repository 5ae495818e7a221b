"""Signed crossing orders through the gateway replicas at a fixed rate, as traders' clients
send them, every final answer recorded: what a drill's audit holds the venue to.

Each order goes to one replica (in turn, as a load balancer spreads them): a sell, then a
buy at the same price from another trader, so that they trade and settle. A client retries
an order under the same Idempotency-Key, which is also its client order id:
- after a transport failure (its replica was killed), on the other replica;
- after a 5xx (`core_unavailable` while the matcher restarts; a 5xx releases the key's
  claim), a 429 or a 409 `idempotency_in_progress` (the replica that claimed the key died
  before storing its answer; another replica takes such a claim over after 30 s), after an
  exponential backoff with jitter, at least the answer's Retry-After;
until it has a final answer or `give_up_after` seconds have passed. The gateway answers a
retry with the original result (its stored reply, `Idempotent-Replayed: true`, or the
matcher's own `duplicate`), so a retried order is placed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from e2e.drills.traders import Trader
from workloads.gateway.client import GatewayClient

RETRYABLE_CODES = frozenset({"idempotency_in_progress", "rate_limited"})


def backoff(attempts: int, at_least: float) -> float:
    """Seconds before the next attempt: exponential from 0.1 s to 5 s with jitter, and at
    least what the server asked for (Retry-After), so that the clients of an outage do not
    flood the venue when it comes back (or spend their rate limit on retries)."""
    ceiling: float = min(5.0, 0.1 * 2.0 ** (attempts - 1))
    return max(at_least, ceiling * random.uniform(0.5, 1.0))


@dataclass(frozen=True)
class Answer:
    """The final answer to one order, after any retries."""

    key: str
    """The Idempotency-Key, which the gateway also makes the client order id."""
    account: str
    http: int
    """The final HTTP status; 0: no final answer within `give_up_after`."""
    sent_at: float
    """The event loop's clock when the first attempt was sent."""
    latency: float
    order_id: str = ""
    status: str = ""
    """ACCEPTED, PARTIALLY_FILLED, FILLED, CANCELED or REJECTED."""
    seq: int = 0
    code: str = ""
    """An error code, or a sequenced rejection's reason."""
    trade_ids: tuple[str, ...] = ()
    """The trades of this order's fills, as its reply showed them to the trader."""
    attempts: int = 1
    failovers: int = 0
    """Attempts that met a transport failure (a killed replica)."""
    replayed: bool = False
    """Answered with the original result: a stored reply or the matcher's duplicate."""

    @property
    def acked(self) -> bool:
        """Acknowledged: the venue said the order was accepted (it must never be lost)."""
        return self.http in (200, 201) and bool(self.order_id) and self.status != "REJECTED"


@dataclass
class OrderFlow:
    traders: list[Trader]
    gateways: list[str]
    symbol: str = "BTC-USDT"
    price: str = "60000.00"
    quantity: str = "0.0100"
    rate: float = 60.0
    """Orders per second offered, whatever the answers (an open loop)."""
    give_up_after: float = 75.0
    answers: list[Answer] = field(default_factory=list)
    sent: int = 0
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    clients: list[list[GatewayClient]] = field(init=False)
    """Per trader, per replica: the trader's signed client of that replica."""

    pending: set[asyncio.Task[None]] = field(default_factory=set)
    retry_reasons: Counter[str] = field(default_factory=Counter)
    """Why attempts were retried: a transport error's type, an error code or status."""
    held: bool = False
    """While set, no new order is offered (trading stopped, as for a disaster)."""

    def __post_init__(self) -> None:
        self.clients = [[t.client.on(url) for url in self.gateways] for t in self.traders]

    @property
    def acked(self) -> list[Answer]:
        return [a for a in self.answers if a.acked]

    def acked_after(self, at: float) -> int:
        return sum(1 for a in self.answers if a.acked and a.sent_at > at)

    def tally(self) -> dict[str, Any]:
        """The answers in figures: what was sent, acknowledged, refused, retried."""
        acked = self.acked
        refused = Counter(a.code or str(a.http) for a in self.answers if not a.acked and a.http)
        return {
            "orders_sent": self.sent,
            "orders_acked": len(acked),
            "unanswered": sum(1 for a in self.answers if a.http == 0),
            "refused": dict(refused),
            "refused_by_mode": sum(n for code, n in refused.items() if code.startswith("market_")),
            "retried": sum(1 for a in self.answers if a.attempts > 1),
            "retry_reasons": dict(self.retry_reasons),
            "failed_over": sum(1 for a in self.answers if a.failovers),
            "replayed": sum(1 for a in self.answers if a.replayed),
            "fills_seen": len({t for a in acked for t in a.trade_ids}),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Offer orders until `stop` is set, then wait for the answers still coming."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            if not self.held:
                self._launch(self.sent % len(self.gateways))
            next_at += 1 / self.rate
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
        await self.drained()

    async def drained(self) -> None:
        """Until every order sent has its final answer."""
        while self.pending:
            await asyncio.gather(*self.pending)

    def burst(self, count: int, replica: int) -> list[str]:
        """`count` more orders at once, all first sent to `replica` (to be in flight there
        when it is killed); their Idempotency-Keys."""
        return [self._launch(replica) for _ in range(count)]

    def _launch(self, replica: int) -> str:
        task = asyncio.create_task(self.place(self.sent, replica))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        self.sent += 1
        return self.key(self.sent - 1)

    def key(self, n: int) -> str:
        return f"{self.tag}-{n:07d}"

    async def place(self, n: int, replica: int) -> None:
        who = n % len(self.traders)
        key = self.key(n)
        # The client order id in the body makes every order's signature its own: two equal
        # bodies signed in the same millisecond would be one signature, refused as a replay.
        body = {"symbol": self.symbol, "side": "SELL" if n % 2 == 0 else "BUY", "type": "LIMIT",
                "price": self.price, "quantity": self.quantity, "client_order_id": key}  # fmt: skip
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts = failovers = 0
        last = ""
        while loop.time() - started < self.give_up_after:
            attempts += 1
            try:
                reply = await self.clients[who][replica].call(
                    "POST", "/v1/orders", body, idempotency_key=key
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failovers += 1
                last = type(exc).__name__
                self.retry_reasons[last] += 1
                replica = (replica + 1) % len(self.gateways)
                await asyncio.sleep(backoff(attempts, 0.05))
                continue
            answer: dict[str, Any] = reply.body if isinstance(reply.body, dict) else {}
            code = str(answer.get("code") or answer.get("reject_reason") or "")
            if reply.status >= 500 or code in RETRYABLE_CODES:
                last = code or str(reply.status)
                self.retry_reasons[last] += 1
                after = reply.headers.get("Retry-After", "")
                await asyncio.sleep(backoff(attempts, float(after) if after.isdigit() else 0.0))
                continue
            fills = answer.get("fills") or []
            self.answers.append(
                Answer(
                    key, self.traders[who].account, reply.status, started,
                    loop.time() - started, str(answer.get("order_id") or ""),
                    str(answer.get("status") or ""), int(answer.get("seq") or 0), code,
                    tuple(str(f["trade_id"]) for f in fills), attempts, failovers,
                    reply.headers.get("Idempotent-Replayed") == "true"
                    or answer.get("duplicate") is True,
                )
            )  # fmt: skip
            return
        self.answers.append(
            Answer(key, self.traders[who].account, 0, started, loop.time() - started,
                   code=last, attempts=attempts, failovers=failovers)
        )  # fmt: skip
