"""gRPC clients of the markets' matchers: status, reservations, modes and funding.

One channel per market with a matcher target. Every call has a deadline: reconciliation
must notice a silent matcher (staleness), never hang on it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import grpc

from contracts.v1 import common_pb2, funding_pb2, matcher_pb2, matcher_pb2_grpc
from workloads.common.channels import matcher_channel
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
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict, init=False)
    _stubs: dict[str, Any] = field(default_factory=dict, init=False)

    def stub(self, symbol: str) -> Any:
        stub = self._stubs.get(symbol)
        if stub is None:
            market = next((m for m in self.markets if m.symbol == symbol), None)
            if market is None or not market.matcher_target:
                raise NoMatcher(symbol)
            channel = matcher_channel(market.matcher_target)
            self._channels[symbol] = channel
            stub = self._stubs[symbol] = matcher_pb2_grpc.MatcherStub(channel)
        return stub

    def has(self, symbol: str) -> bool:
        return any(m.symbol == symbol and m.matcher_target for m in self.markets)

    async def status(self, symbol: str) -> matcher_pb2.MatcherStatus:
        reply: matcher_pb2.MatcherStatus = await self.stub(symbol).GetStatus(
            matcher_pb2.GetStatusRequest(symbol=symbol), timeout=self.timeout
        )
        return reply

    async def reservations(self, symbol: str) -> matcher_pb2.Reservations:
        reply: matcher_pb2.Reservations = await self.stub(symbol).GetReservations(
            matcher_pb2.GetReservationsRequest(symbol=symbol), timeout=self.timeout
        )
        return reply

    async def set_mode(self, symbol: str, mode: str, reason: str) -> matcher_pb2.CommandReply:
        reply: matcher_pb2.CommandReply = await self.stub(symbol).SetSymbolMode(
            matcher_pb2.SetSymbolModeRequest(
                symbol=symbol, mode=MODES[mode], reason=reason, correlation_id="ledger"
            ),
            timeout=self.timeout,
        )
        return reply

    async def fund(
        self, symbol: str, command: funding_pb2.FundingCommand
    ) -> matcher_pb2.CommandReply:
        reply: matcher_pb2.CommandReply = await self.stub(symbol).ApplyFunding(
            command, timeout=self.timeout
        )
        return reply

    async def close(self) -> None:
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()
        self._stubs.clear()
