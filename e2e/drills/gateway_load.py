"""Signed orders through the gateway at a fixed rate, as traders' clients send them: each
sell followed by a buy at the same price (they trade), every reply recorded.

A client retries a request that failed in transport (a connection a rolling gateway closed)
with the same Idempotency-Key, as the API asks of clients: the gateway answers a retry with
the original result, so a retried order is placed once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from dataclasses import dataclass, field

import aiohttp

from e2e.drills.traders import Trader


@dataclass(frozen=True)
class Placed:
    at: float
    """The event loop's clock when the answer came."""
    http: int
    """0: no answer after the retries."""
    order_id: str = ""
    status: str = ""
    reason: str = ""
    epoch: int = 0
    code: str = ""
    """The error code of a refusal (`core_unavailable`, `market_cancel_only`, ...)."""
    retries: int = 0


@dataclass
class GatewayLoad:
    traders: list[Trader]
    symbol: str = "BTC-USDT"
    price: str = "60000.00"
    quantity: str = "0.0100"
    rate: float = 10.0
    results: list[Placed] = field(default_factory=list)

    @property
    def accepted(self) -> list[Placed]:
        return [p for p in self.results if p.http == 201]

    def refused(self, code: str) -> list[Placed]:
        return [p for p in self.results if p.code == code or p.reason == code]

    def failed(self) -> list[Placed]:
        """Orders that got neither an acceptance nor a sequenced reject."""
        return [p for p in self.results if p.http not in (200, 201)]

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        next_at, n = loop.time(), 0
        while not stop.is_set():
            task = asyncio.create_task(self.place(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            next_at += 1 / self.rate
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
        if pending:
            await asyncio.gather(*pending)

    async def place(self, n: int) -> None:
        trader = self.traders[n % len(self.traders)]
        body = {"symbol": self.symbol, "side": "SELL" if n % 2 == 0 else "BUY", "type": "LIMIT",
                "price": self.price, "quantity": self.quantity}  # fmt: skip
        key = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        for attempt in range(5):
            try:
                reply = await trader.client.call("POST", "/v1/orders", body, idempotency_key=key)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            answer = reply.body if isinstance(reply.body, dict) else {}
            self.results.append(
                Placed(
                    loop.time(),
                    reply.status,
                    str(answer.get("order_id") or ""),
                    str(answer.get("status") or ""),
                    str(answer.get("reject_reason") or ""),
                    int(answer.get("epoch") or 0),
                    str(answer.get("code") or ""),
                    attempt,
                )
            )
            return
        self.results.append(Placed(loop.time(), 0, retries=5))


def longest_gap(results: list[Placed]) -> float:
    """The longest time between two accepted orders (how long the market did not trade)."""
    times = sorted(p.at for p in results if p.http == 201)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
