"""The matchers behind the gateway: one gRPC channel per market, orders coalesced.

Concurrent orders for a market are gathered for about a millisecond and sent as one
`SubmitBatch`; each caller gets its own `CommandReply`. There is no local fallback: with
EDGE_DISABLE_CORE, a sample market, or a matcher that cannot be reached, order routes
answer `core_unavailable`; a matcher that does not lead answers `not_leader` (retry).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from contracts.v1 import matcher_pb2
from workloads.common.channels import LeaderChannel, not_leader
from workloads.gateway.batching import MicroBatcher
from workloads.gateway.errors import ApiError, Code
from workloads.gateway.markets import Market


def core_error(exc: grpc.aio.AioRpcError) -> ApiError:
    if not_leader(exc):
        return ApiError(
            Code.NOT_LEADER,
            "the matcher is not the market's leader; retry",
            503,
            {"Retry-After": "1"},
        )
    return ApiError(
        Code.CORE_UNAVAILABLE,
        f"the matcher did not answer ({exc.code().name})",
        503,
        {"Retry-After": "1"},
    )


class MarketCore:
    """One market's matcher."""

    def __init__(self, market: Market, window: float, max_size: int, timeout: float) -> None:
        self.market = market
        self.timeout = timeout
        self.leader = LeaderChannel(market.matcher, ("grpc.max_receive_message_length", 64 << 20))
        self.batcher = MicroBatcher[matcher_pb2.Command, matcher_pb2.CommandReply](
            f"matcher_{market.symbol}",
            self._submit,
            window=window,
            max_size=max_size,
            max_inflight=4,
        )

    async def _submit(
        self, commands: list[matcher_pb2.Command]
    ) -> Sequence[matcher_pb2.CommandReply]:
        try:
            reply = await self.leader.stub.SubmitBatch(
                matcher_pb2.CommandBatch(commands=commands), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise await self._failed(exc) from None
        return list(reply.replies)

    async def _failed(self, exc: grpc.aio.AioRpcError) -> ApiError:
        if not_leader(exc):
            await self.leader.reset()
        return core_error(exc)

    async def submit(self, command: matcher_pb2.Command) -> matcher_pb2.CommandReply:
        return await self.batcher.submit(command)

    async def submit_batch(
        self, commands: list[matcher_pb2.Command]
    ) -> Sequence[matcher_pb2.CommandReply]:
        """`commands` in one SubmitBatch of their own: sequenced in this order, together."""
        return await self._submit(commands)

    async def book(self, depth: int) -> matcher_pb2.OrderBookSnapshot:
        request = matcher_pb2.GetOrderBookRequest(symbol=self.market.symbol, depth=depth)
        snapshot: matcher_pb2.OrderBookSnapshot = await self._query("GetOrderBook", request)
        return snapshot

    async def balances(self) -> matcher_pb2.BalancesSnapshot:
        request = matcher_pb2.GetBalancesRequest(symbol=self.market.symbol)
        snapshot: matcher_pb2.BalancesSnapshot = await self._query("GetBalances", request)
        return snapshot

    async def status(self) -> matcher_pb2.MatcherStatus:
        request = matcher_pb2.GetStatusRequest(symbol=self.market.symbol)
        status: matcher_pb2.MatcherStatus = await self._query("GetStatus", request)
        return status

    async def _query(self, method: str, request: Any) -> Any:
        """A read of the leader; a NOT_LEADER answer resets the channel for the next call."""
        try:
            return await getattr(self.leader.stub, method)(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise await self._failed(exc) from None

    async def close(self) -> None:
        await self.batcher.close()
        await self.leader.close()


class Core:
    def __init__(
        self,
        markets: Sequence[Market],
        *,
        disabled: bool,
        window: float,
        max_size: int,
        timeout: float,
    ) -> None:
        self.disabled = disabled
        self.markets: dict[str, MarketCore] = {}
        if not disabled:
            for market in markets:
                if market.live:
                    self.markets[market.symbol] = MarketCore(market, window, max_size, timeout)

    def of(self, symbol: str) -> MarketCore:
        core = self.markets.get(symbol)
        if core is None:
            why = "EDGE_DISABLE_CORE is set" if self.disabled else f"{symbol} has no matcher"
            raise ApiError(Code.CORE_UNAVAILABLE, f"orders are unavailable: {why}", 503)
        return core

    async def close(self) -> None:
        for core in self.markets.values():
            await core.close()
