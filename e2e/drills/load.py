"""A crossing load: traders place limit orders at a fixed rate over the matcher's gRPC, each
sell followed by a buy at the same price, so that most orders trade and settle. Every
reply is recorded, so that checks afterwards know exactly what was acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

import grpc

from contracts.v1 import common_pb2 as c
from contracts.v1 import matcher_pb2, matcher_pb2_grpc
from workloads.common.channels import matcher_channel

MODE_REJECTS = frozenset(
    {
        c.REJECT_REASON_MARKET_CANCEL_ONLY,
        c.REJECT_REASON_MARKET_SOFT_HALT,
        c.REJECT_REASON_MARKET_HARD_HALT,
    }
)


@dataclass(frozen=True)
class Ack:
    """An order the matcher acknowledged as accepted (its WAL record was durable)."""

    client_order_id: str
    account: str
    order_id: str
    seq: int
    epoch: int
    at: float  # the event loop's clock when the reply arrived


@dataclass
class CrossingLoad:
    target: str
    symbol: str = "BTC-USDT"
    traders: int = 8
    rate: float = 80.0
    """Orders per second offered, whatever the replies (an open loop)."""
    price: int = 1_000
    timeout: float = 5.0
    acked: list[Ack] = field(default_factory=list)
    refused_by_mode: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    """gRPC errors by status code: a matcher down or not leading."""
    sent: int = 0

    @property
    def accounts(self) -> list[str]:
        return [f"trader-{i}" for i in range(self.traders)]

    def acked_after(self, at: float) -> int:
        return sum(1 for ack in self.acked if ack.at > at)

    async def run(self, stop: asyncio.Event) -> None:
        """Offer orders until `stop` is set, then wait for the replies in flight."""
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task[None]] = set()
        async with matcher_channel(self.target) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            next_at = loop.time()
            while not stop.is_set():
                task = asyncio.create_task(self.place(stub, self.sent))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                self.sent += 1
                next_at += 1 / self.rate
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
            if in_flight:
                await asyncio.gather(*in_flight)

    async def run_for(self, seconds: float) -> None:
        """`run` for `seconds`, then the replies in flight."""
        stop = asyncio.Event()
        running = asyncio.create_task(self.run(stop))
        await asyncio.sleep(seconds)
        stop.set()
        await running

    async def place(self, stub: matcher_pb2_grpc.MatcherStub, n: int) -> None:
        account = self.accounts[n % self.traders]
        request = matcher_pb2.PlaceOrderRequest(
            symbol=self.symbol,
            account=account,
            client_order_id=f"{account}-{n}",
            side=c.SIDE_SELL if n % 2 == 0 else c.SIDE_BUY,
            order_type=c.ORDER_TYPE_LIMIT,
            time_in_force=c.TIME_IN_FORCE_GTC,
            price=self.price,
            quantity=1,
        )
        try:
            reply = await stub.PlaceOrder(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            self.failed[exc.code().name] += 1
            return
        if reply.status == matcher_pb2.COMMAND_STATUS_ACCEPTED:
            at = asyncio.get_running_loop().time()
            self.acked.append(
                Ack(request.client_order_id, account, reply.order_id, reply.seq, reply.epoch, at)
            )
        elif reply.reject_reason in MODE_REJECTS:
            self.refused_by_mode += 1
        else:
            self.rejected[c.RejectReason.Name(reply.reject_reason)] += 1
