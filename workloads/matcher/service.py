"""The Matcher gRPC service (grpc.aio): the edge between protobuf and the sequencer.

Requests that cannot become a valid command (unknown market, malformed enums, quantity
off the lot, price off the tick, oversized batch...) get a typed reject here, are counted,
and never reach the WAL. Everything else is sequenced, and the reply leaves only once the
WAL record is durable. A command sent to an instance that does not lead fails with
FAILED_PRECONDITION and the detail "NOT_LEADER".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter

from contracts.v1 import common_pb2, funding_pb2, matcher_pb2, matcher_pb2_grpc
from workloads.matcher import codec
from workloads.matcher import engine as e
from workloads.matcher.archive import Archiver
from workloads.matcher.outbox import EncodedEvents
from workloads.matcher.replication import Replication
from workloads.matcher.sequencer import (
    COMMIT_SECONDS,
    Executed,
    NotLeader,
    Result,
    Sequencer,
    SequencerFailed,
)
from workloads.matcher.spec import MarketSpec
from workloads.matcher.tracing import MatcherTracing, sampled_positions

BAD_REQUESTS = Counter(
    "matcher_bad_requests_total", "Requests rejected before sequencing", ["reason"]
)
MAX_BATCH = 5_000
SERVICE_NAME = "exchange.v1.Matcher"
MAX_DEPTH = 1_000


class MatcherService(matcher_pb2_grpc.MatcherServicer):
    """The servicer. Command RPCs are implemented once, returning the reply's wire bytes
    (`*_wire`); `add_to_server` serves those bytes as they are, while the generated
    `add_MatcherServicer_to_server` still works through the message-returning methods."""

    def __init__(
        self,
        spec: MarketSpec,
        sequencer: Sequencer,
        published_seq: Callable[[], int],
        encoded: EncodedEvents | None = None,
    ) -> None:
        """`encoded`: where to leave the serialized events of each reply for the outbox."""
        self.spec = spec
        self.sequencer = sequencer
        self.published_seq = published_seq
        self.encoder = codec.EventEncoder(spec)
        self.encoded = encoded
        self.replication: Replication | None = None
        self.archiver: Archiver | None = None
        """The leader's replication to its standby, when it has one (for GetStatus)."""
        self.tracing: MatcherTracing | None = None
        """Spans for the commands of sampled orders (MATCHER_OTEL_ENDPOINT); None: none."""

    # ------------------------------------------------------------------ helpers

    def _reply(self, result: Result) -> bytes:
        """A `CommandReply` on the wire, its events encoded straight from the engine's."""
        encoder = self.encoder
        seq, epoch = result.seq, result.epoch
        events: list[bytes] = []
        if result.events:  # sequenced now (a duplicate's reply carries no events)
            events = encoder.command_events(
                result.events, seq, epoch, result.ts, result.correlation_id, result.command_kind
            )
            if self.encoded is not None:
                self.encoded.put(seq, events)
        return encoder.reply(result.status, result.reason, seq, epoch, result.order_id, events)

    def _refused(self, reason: int) -> bytes:
        typed = common_pb2.RejectReason.ValueType(reason)
        BAD_REQUESTS.labels(common_pb2.RejectReason.Name(typed)).inc()
        return self.encoder.reply(
            matcher_pb2.COMMAND_STATUS_REJECTED, reason, 0, self.sequencer.epoch, 0, []
        )

    async def _submit(
        self,
        items: list[tuple[tuple[Any, ...], str]],
        context: grpc.aio.ServicerContext[Any, Any],
        started_ns: int = 0,
    ) -> Executed:
        try:
            if self.tracing is not None and (sampled := sampled_positions(items)):
                return await self._submit_traced(items, sampled, started_ns or time.time_ns())
            return await self.sequencer.submit(items)
        except NotLeader:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "NOT_LEADER")
        except SequencerFailed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "WAL_FAILED")
        raise AssertionError("unreachable: abort raises")

    async def _submit_traced(
        self, items: list[tuple[tuple[Any, ...], str]], sampled: list[int], started_ns: int
    ) -> Executed:
        """`sequencer.submit`, with the instants the spans need taken on the way; the spans
        are built once the reply is on its way."""
        assert self.tracing is not None
        sequencer = self.sequencer
        executed = sequencer.execute_nowait(items)
        executed_ns = time.time_ns()
        started = time.perf_counter()
        await sequencer.durable(executed.last_seq)
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        asyncio.get_running_loop().call_soon(
            self.tracing.batch_spans, items, sampled, executed, started_ns, executed_ns,
            time.time_ns(),
        )  # fmt: skip
        return executed

    async def _one(
        self, cmd: tuple[Any, ...], correlation_id: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        (result,) = (await self._submit([(cmd, correlation_id)], context)).results()
        return self._reply(result)

    def _wrong_market(self, symbol: str) -> bool:
        return symbol != self.spec.symbol

    # ------------------------------------------------------------------ commands (wire)

    async def place_order_wire(
        self, request: matcher_pb2.PlaceOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        if self._wrong_market(request.symbol):
            return self._refused(common_pb2.REJECT_REASON_UNKNOWN_MARKET)
        cmd = codec.place_command(request)
        reason = e.validate_place(self.spec, cmd)
        if reason:
            return self._refused(reason)
        return await self._one(cmd, request.correlation_id, context)

    async def cancel_order_wire(
        self, request: matcher_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        if self._wrong_market(request.symbol):
            return self._refused(common_pb2.REJECT_REASON_UNKNOWN_MARKET)
        try:
            cmd = codec.cancel_command(request)
        except codec.BadCommand as bad:
            return self._refused(bad.reason)
        return await self._one(cmd, request.correlation_id, context)

    async def cancel_all_wire(
        self, request: matcher_pb2.CancelAllRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        if self._wrong_market(request.symbol):
            return self._refused(common_pb2.REJECT_REASON_UNKNOWN_MARKET)
        return await self._one((e.C_CANCEL_ALL, request.account), request.correlation_id, context)

    async def set_symbol_mode_wire(
        self, request: matcher_pb2.SetSymbolModeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        if self._wrong_market(request.symbol):
            return self._refused(common_pb2.REJECT_REASON_UNKNOWN_MARKET)
        try:
            cmd = codec.mode_command(request)
        except codec.BadCommand as bad:
            return self._refused(bad.reason)
        return await self._one(cmd, request.correlation_id, context)

    async def apply_funding_wire(
        self, request: funding_pb2.FundingCommand, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        return await self._one(codec.funding_command(request), request.correlation_id, context)

    async def submit_batch_wire(
        self, request: matcher_pb2.CommandBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        started_ns = time.time_ns() if self.tracing is not None else 0
        if len(request.commands) > MAX_BATCH:
            BAD_REQUESTS.labels("REJECT_REASON_BATCH_TOO_LARGE").inc()
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"REJECT_REASON_BATCH_TOO_LARGE: at most {MAX_BATCH} commands per batch",
            )
        replies: list[bytes | None] = []
        items: list[tuple[tuple[Any, ...], str]] = []
        spec = self.spec
        symbol = spec.symbol
        for wrapped in request.commands:
            try:
                cmd, command_symbol, correlation_id = codec.command(spec, wrapped)
                if command_symbol != symbol:
                    raise codec.BadCommand(common_pb2.REJECT_REASON_UNKNOWN_MARKET, command_symbol)
            except codec.BadCommand as bad:
                replies.append(self._refused(bad.reason))
                continue
            replies.append(None)
            items.append((cmd, correlation_id))
        results = (await self._submit(items, context, started_ns)).results()
        reply = self._reply
        return codec.batch_reply(
            [done if done is not None else reply(next(results)) for done in replies],
            self.sequencer.epoch,
        )

    # ------------------------------------------------------------------ commands (messages)

    async def PlaceOrder(
        self, request: matcher_pb2.PlaceOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        return _CommandReply(await self.place_order_wire(request, context))

    async def CancelOrder(
        self, request: matcher_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        return _CommandReply(await self.cancel_order_wire(request, context))

    async def CancelAll(
        self, request: matcher_pb2.CancelAllRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        return _CommandReply(await self.cancel_all_wire(request, context))

    async def SetSymbolMode(
        self, request: matcher_pb2.SetSymbolModeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        return _CommandReply(await self.set_symbol_mode_wire(request, context))

    async def ApplyFunding(
        self, request: funding_pb2.FundingCommand, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        return _CommandReply(await self.apply_funding_wire(request, context))

    async def SubmitBatch(
        self, request: matcher_pb2.CommandBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandBatchReply:
        return matcher_pb2.CommandBatchReply.FromString(
            await self.submit_batch_wire(request, context)
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
        replication = self.replication
        archive = self.archiver.status() if self.archiver is not None else None
        return matcher_pb2.MatcherStatus(
            symbol=self.spec.symbol,
            seq=engine.seq,
            epoch=sequencer.epoch,
            mode=common_pb2.SymbolMode.ValueType(engine.mode),
            state_hash=codec.hash_bytes(engine.state_hash),
            last_durable_seq=sequencer.durable_seq,
            last_published_seq=published,
            outbox_lag=max(sequencer.committed_seq - published, 0),
            leader=sequencer.fencing.is_leader(),
            role="leader",
            standby=replication.standby if replication is not None else "",
            standby_in_sync=replication is not None and replication.in_sync,
            replication_lag=replication.lag if replication is not None else 0,
            committed_seq=sequencer.committed_seq,
            archive_enabled=archive is not None,
            archive_last_seq=archive.last_seq if archive else 0,
            archive_lag_seconds=archive.lag_seconds if archive else 0.0,
            archive_last_error=archive.last_error if archive else "",
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

    async def GetBalances(
        self,
        request: matcher_pb2.GetBalancesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> matcher_pb2.BalancesSnapshot:
        """Copied at the engine's seq (one synchronous pass: no command runs meanwhile),
        answered once that seq is committed, so a reader never starts from a state a crash
        could take back."""
        if request.symbol and self._wrong_market(request.symbol):
            await context.abort(grpc.StatusCode.NOT_FOUND, "REJECT_REASON_UNKNOWN_MARKET")
        engine = self.sequencer.engine
        snapshot = matcher_pb2.BalancesSnapshot(
            symbol=self.spec.symbol,
            seq=engine.seq,
            epoch=self.sequencer.epoch,
            base_asset=self.spec.base_asset,
            quote_asset=self.spec.quote_asset,
            accounts=[
                matcher_pb2.AccountBalance(
                    account=account,
                    base_available=b[e.AVAIL_BASE],
                    base_hold=b[e.HOLD_BASE],
                    quote_available=b[e.AVAIL_QUOTE],
                    quote_hold=b[e.HOLD_QUOTE],
                )
                for account, b in sorted(engine.balances.items())
                if any(b)
            ],
        )
        try:
            await self.sequencer.durable(snapshot.seq)
        except SequencerFailed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "WAL_FAILED")
        return snapshot


_CommandReply = matcher_pb2.CommandReply.FromString


def add_to_server(service: MatcherService, server: grpc.aio.Server) -> None:
    """Register the service so that command replies go out as the bytes built for them
    (no protobuf objects on that path); queries use the generated message types."""
    c, f = matcher_pb2, funding_pb2
    wire: dict[str, tuple[Any, Any]] = {
        "PlaceOrder": (service.place_order_wire, c.PlaceOrderRequest.FromString),
        "CancelOrder": (service.cancel_order_wire, c.CancelOrderRequest.FromString),
        "CancelAll": (service.cancel_all_wire, c.CancelAllRequest.FromString),
        "SetSymbolMode": (service.set_symbol_mode_wire, c.SetSymbolModeRequest.FromString),
        "ApplyFunding": (service.apply_funding_wire, f.FundingCommand.FromString),
        "SubmitBatch": (service.submit_batch_wire, c.CommandBatch.FromString),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=deserializer, response_serializer=None
        )
        for name, (behaviour, deserializer) in wire.items()
    }
    for name, request_type, reply_type in (
        ("GetOrderBook", c.GetOrderBookRequest, c.OrderBookSnapshot),
        ("GetStatus", c.GetStatusRequest, c.MatcherStatus),
        ("GetReservations", c.GetReservationsRequest, c.Reservations),
        ("GetBalances", c.GetBalancesRequest, c.BalancesSnapshot),
    ):
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            getattr(service, name),
            request_deserializer=request_type.FromString,
            response_serializer=reply_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
