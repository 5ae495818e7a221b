"""The Matcher gRPC service (grpc.aio): the edge between protobuf and the sequencer.

Requests that cannot become a valid command (unknown market, malformed enums, quantity
off the lot, price off the tick, oversized batch...) get a typed reject here, are counted,
and never reach the WAL. Everything else is sequenced, and the reply leaves only once the
WAL record is durable. A command sent to an instance that does not lead fails with
FAILED_PRECONDITION and the detail "NOT_LEADER".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter

from contracts.v1 import common_pb2, funding_pb2, matcher_pb2, matcher_pb2_grpc
from workloads.matcher import codec
from workloads.matcher import engine as e
from workloads.matcher.sequencer import NotLeader, Result, Sequencer, SequencerFailed
from workloads.matcher.spec import MarketSpec

BAD_REQUESTS = Counter(
    "matcher_bad_requests_total", "Requests rejected before sequencing", ["reason"]
)
MAX_BATCH = 5_000
MAX_DEPTH = 1_000


class MatcherService(matcher_pb2_grpc.MatcherServicer):
    def __init__(
        self, spec: MarketSpec, sequencer: Sequencer, published_seq: Callable[[], int]
    ) -> None:
        self.spec = spec
        self.sequencer = sequencer
        self.published_seq = published_seq

    # ------------------------------------------------------------------ helpers

    def _reply(self, result: Result) -> matcher_pb2.CommandReply:
        spec = self.spec
        return matcher_pb2.CommandReply(
            status=matcher_pb2.CommandStatus.ValueType(result.status),
            reject_reason=common_pb2.RejectReason.ValueType(result.reason),
            seq=result.seq,
            epoch=result.epoch,
            order_id=str(result.order_id) if result.order_id else "",
            events=[
                codec.event_proto(
                    spec, ev, result.seq, i, result.epoch, result.ts, result.correlation_id
                )
                for i, ev in enumerate(result.events)
            ],
        )

    def _refused(self, reason: int) -> matcher_pb2.CommandReply:
        typed = common_pb2.RejectReason.ValueType(reason)
        BAD_REQUESTS.labels(common_pb2.RejectReason.Name(typed)).inc()
        return matcher_pb2.CommandReply(
            status=matcher_pb2.COMMAND_STATUS_REJECTED,
            reject_reason=typed,
            epoch=self.sequencer.epoch,
        )

    async def _submit(
        self, items: list[tuple[tuple[Any, ...], str]], context: grpc.aio.ServicerContext[Any, Any]
    ) -> list[Result]:
        try:
            return await self.sequencer.submit(items)
        except NotLeader:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "NOT_LEADER")
        except SequencerFailed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "WAL_FAILED")
        raise AssertionError("unreachable: abort raises")

    async def _one(
        self, cmd: tuple[Any, ...], correlation_id: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        (result,) = await self._submit([(cmd, correlation_id)], context)
        return self._reply(result)

    def _wrong_market(self, symbol: str) -> bool:
        return symbol != self.spec.symbol

    # ------------------------------------------------------------------ commands

    async def PlaceOrder(
        self, request: matcher_pb2.PlaceOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        if self._wrong_market(request.symbol):
            return self._refused(common_pb2.REJECT_REASON_UNKNOWN_MARKET)
        cmd = codec.place_command(request)
        reason = e.validate_place(self.spec, cmd)
        if reason:
            return self._refused(reason)
        return await self._one(cmd, request.correlation_id, context)

    async def CancelOrder(
        self, request: matcher_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        if self._wrong_market(request.symbol):
            return self._refused(common_pb2.REJECT_REASON_UNKNOWN_MARKET)
        try:
            cmd = codec.cancel_command(request)
        except codec.BadCommand as bad:
            return self._refused(bad.reason)
        return await self._one(cmd, request.correlation_id, context)

    async def CancelAll(
        self, request: matcher_pb2.CancelAllRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        if self._wrong_market(request.symbol):
            return self._refused(common_pb2.REJECT_REASON_UNKNOWN_MARKET)
        return await self._one((e.C_CANCEL_ALL, request.account), request.correlation_id, context)

    async def SetSymbolMode(
        self, request: matcher_pb2.SetSymbolModeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        if self._wrong_market(request.symbol):
            return self._refused(common_pb2.REJECT_REASON_UNKNOWN_MARKET)
        try:
            cmd = codec.mode_command(request)
        except codec.BadCommand as bad:
            return self._refused(bad.reason)
        return await self._one(cmd, request.correlation_id, context)

    async def ApplyFunding(
        self, request: funding_pb2.FundingCommand, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        return await self._one(codec.funding_command(request), request.correlation_id, context)

    async def SubmitBatch(
        self, request: matcher_pb2.CommandBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandBatchReply:
        if len(request.commands) > MAX_BATCH:
            BAD_REQUESTS.labels("REJECT_REASON_BATCH_TOO_LARGE").inc()
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"REJECT_REASON_BATCH_TOO_LARGE: at most {MAX_BATCH} commands per batch",
            )
        replies: list[matcher_pb2.CommandReply | None] = []
        items: list[tuple[tuple[Any, ...], str]] = []
        for wrapped in request.commands:
            try:
                cmd, symbol, correlation_id = codec.command(self.spec, wrapped)
                if self._wrong_market(symbol):
                    raise codec.BadCommand(common_pb2.REJECT_REASON_UNKNOWN_MARKET, symbol)
            except codec.BadCommand as bad:
                replies.append(self._refused(bad.reason))
                continue
            replies.append(None)
            items.append((cmd, correlation_id))
        results = iter(await self._submit(items, context))
        return matcher_pb2.CommandBatchReply(
            replies=[
                reply if reply is not None else self._reply(next(results)) for reply in replies
            ],
            epoch=self.sequencer.epoch,
        )

    # ------------------------------------------------------------------ queries

    async def GetOrderBook(
        self, request: matcher_pb2.GetOrderBookRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.OrderBookSnapshot:
        if self._wrong_market(request.symbol):
            await context.abort(grpc.StatusCode.NOT_FOUND, "REJECT_REASON_UNKNOWN_MARKET")
        depth = min(request.depth or 20, MAX_DEPTH)
        engine = self.sequencer.engine
        bids, asks = engine.depth(depth)
        return matcher_pb2.OrderBookSnapshot(
            symbol=self.spec.symbol,
            seq=engine.seq,
            epoch=self.sequencer.epoch,
            bids=[matcher_pb2.PriceLevel(price=p, quantity=q, orders=n) for p, q, n in bids],
            asks=[matcher_pb2.PriceLevel(price=p, quantity=q, orders=n) for p, q, n in asks],
        )

    async def GetStatus(
        self, request: matcher_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.MatcherStatus:
        if request.symbol and self._wrong_market(request.symbol):
            await context.abort(grpc.StatusCode.NOT_FOUND, "REJECT_REASON_UNKNOWN_MARKET")
        sequencer = self.sequencer
        engine = sequencer.engine
        published = self.published_seq()
        return matcher_pb2.MatcherStatus(
            symbol=self.spec.symbol,
            seq=engine.seq,
            epoch=sequencer.epoch,
            mode=common_pb2.SymbolMode.ValueType(engine.mode),
            state_hash=codec.hash_bytes(engine.state_hash),
            last_durable_seq=sequencer.durable_seq,
            last_published_seq=published,
            outbox_lag=max(sequencer.durable_seq - published, 0),
            leader=sequencer.fencing.is_leader(),
        )

    async def GetReservations(
        self,
        request: matcher_pb2.GetReservationsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> matcher_pb2.Reservations:
        if request.symbol and self._wrong_market(request.symbol):
            await context.abort(grpc.StatusCode.NOT_FOUND, "REJECT_REASON_UNKNOWN_MARKET")
        engine = self.sequencer.engine
        counts = {name: len(orders) for name, orders in engine.account_orders.items() if orders}
        return matcher_pb2.Reservations(
            symbol=self.spec.symbol,
            seq=engine.seq,
            epoch=self.sequencer.epoch,
            base_asset=self.spec.base_asset,
            quote_asset=self.spec.quote_asset,
            accounts=[
                matcher_pb2.AccountReservation(
                    account=account,
                    base_hold=base,
                    quote_hold=quote,
                    open_orders=counts.get(account, 0),
                )
                for account, (base, quote) in sorted(engine.reserved().items())
            ],
        )
