"""A matcher that refuses to serve: it answers GetStatus and refuses every command.

Run instead of the real service when the recovered log ends below a seq its market already
published (`outbox.PublishedAhead`): sequencing on from there would give a second command a
seq that traders, the ledger and the topic already hold. It stays up rather than exiting,
as CloudNativePG keeps a fenced instance, so that the ledger, the operator and the engineer
on call see why and what it recovered (GetStatus `refusal`, `/readyz`), and so that the
ledger's reconciliation latches the market with the regression as its reason.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from contracts.v1 import common_pb2, matcher_pb2, matcher_pb2_grpc
from workloads.matcher import codec
from workloads.matcher.engine import Engine
from workloads.matcher.settings import MatcherSettings

log = logging.getLogger(__name__)


class RefusingService(matcher_pb2_grpc.MatcherServicer):
    """GetStatus from the recovered engine; FAILED_PRECONDITION "REFUSING: <why>" for the rest."""

    def __init__(self, engine: Engine, epoch: int, published_seq: int, refusal: str) -> None:
        self.engine = engine
        self.epoch = epoch
        self.published_seq = published_seq
        self.refusal = refusal

    async def GetStatus(
        self, request: matcher_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.MatcherStatus:
        engine = self.engine
        return matcher_pb2.MatcherStatus(
            symbol=engine.spec.symbol,
            seq=engine.seq,
            epoch=self.epoch,
            mode=common_pb2.SymbolMode.ValueType(engine.mode),
            state_hash=codec.hash_bytes(engine.state_hash),
            last_durable_seq=engine.seq,
            last_published_seq=self.published_seq,
            leader=False,
            refusal=self.refusal,
        )

    async def _refuse(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"REFUSING: {self.refusal}")

    PlaceOrder = CancelOrder = CancelAll = SetSymbolMode = ApplyFunding = _refuse
    SubmitBatch = GetOrderBook = GetReservations = _refuse


async def refuse(
    settings: MatcherSettings, engine: Engine, epoch: int, published: int, why: str
) -> None:
    """Serve GetStatus until SIGTERM/SIGINT (the ops endpoints are up already, `/readyz`
    saying why)."""
    log.critical(
        "refusing to serve",
        extra={"why": why, "recovered_seq": engine.seq, "published_seq": published},
    )
    server = grpc.aio.server()
    matcher_pb2_grpc.add_MatcherServicer_to_server(
        RefusingService(engine, epoch, published, why), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop(grace=1)
