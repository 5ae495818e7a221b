"""gRPC clients of the markets' matchers: status, reservations, modes and funding.

One channel per market with a matcher target. Every call has a deadline: reconciliation
must notice a silent matcher (staleness), never hang on it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import grpc

from contracts.v1 import common_pb2, funding_pb2, matcher_pb2
from workloads.common.channels import LeaderChannel, not_leader
from workloads.ledger.settings import Market

MODES = {
    "NORMAL": common_pb2.SYMBOL_MODE_NORMAL,
    "CANCEL_ONLY": common_pb2.SYMBOL_MODE_CANCEL_ONLY,
    "SOFT_HALT": common_pb2.SYMBOL_MODE_SOFT_HALT,
    "HARD_HALT": common_pb2.SYMBOL_MODE_HARD_HALT,
}


class NoMatcher(LookupError):
    """The market has no matcher target configured (its seq is pushed over HTTP)."""


def mode_name(mode: int) -> str:
    return common_pb2.SymbolMode.Name(mode).removeprefix("SYMBOL_MODE_")  # type: ignore[arg-type]


@dataclass
class MatcherClients:
    markets: tuple[Market, ...]
    timeout: float = 2.0
    _channels: dict[str, LeaderChannel] = field(default_factory=dict, init=False)

    def _leader(self, symbol: str) -> LeaderChannel:
        leader = self._channels.get(symbol)
        if leader is None:
            market = next((m for m in self.markets if m.symbol == symbol), None)
            if market is None or not market.matcher_target:
                raise NoMatcher(symbol)
            leader = self._channels[symbol] = LeaderChannel(market.matcher_target)
        return leader

    async def _call(self, symbol: str, method: str, request: Any) -> Any:
        """`method` on the market's leader; an instance that does not lead makes the next
        call connect through the Service again (`LeaderChannel`)."""
        leader = self._leader(symbol)
        try:
            return await getattr(leader.stub, method)(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if not_leader(exc):
                await leader.reset()
            raise

    def has(self, symbol: str) -> bool:
        return any(m.symbol == symbol and m.matcher_target for m in self.markets)

    async def status(self, symbol: str) -> matcher_pb2.MatcherStatus:
        reply: matcher_pb2.MatcherStatus = await self._call(
            symbol, "GetStatus", matcher_pb2.GetStatusRequest(symbol=symbol)
        )
        if not reply.leader:  # a standby answers its status: look for the leader next time
            await self._leader(symbol).reset()
        return reply

    async def reservations(self, symbol: str) -> matcher_pb2.Reservations:
        reply: matcher_pb2.Reservations = await self._call(
            symbol, "GetReservations", matcher_pb2.GetReservationsRequest(symbol=symbol)
        )
        return reply

    async def set_mode(self, symbol: str, mode: str, reason: str) -> matcher_pb2.CommandReply:
        request = matcher_pb2.SetSymbolModeRequest(
            symbol=symbol, mode=MODES[mode], reason=reason, correlation_id="ledger"
        )
        reply: matcher_pb2.CommandReply = await self._call(symbol, "SetSymbolMode", request)
        return reply

    async def fund(
        self, symbol: str, command: funding_pb2.FundingCommand
    ) -> matcher_pb2.CommandReply:
        reply: matcher_pb2.CommandReply = await self._call(symbol, "ApplyFunding", command)
        return reply

    async def close(self) -> None:
        for leader in self._channels.values():
            with contextlib.suppress(Exception):
                await leader.close()
        self._channels.clear()
