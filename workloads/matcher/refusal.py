"""An instance that does not lead: it answers GetStatus and refuses every command.

Two cases. A hot standby follows the leader's WAL (`standby.py`) and answers commands with
FAILED_PRECONDITION "NOT_LEADER" (clients retry on the leader). And a matcher whose recovered
log ends below a seq its market already published (`outbox.PublishedAhead`) refuses with
"REFUSING: <why>": sequencing on from there would give a second command a seq that traders,
the ledger and the topic already hold. It stays up rather than exiting, as CloudNativePG keeps
a fenced instance, so that the ledger, the operator and the engineer on call see why and what
it recovered (GetStatus `refusal`, `/readyz`), and so that the ledger's reconciliation
latches the market with the regression as its reason.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from contracts.v1 import common_pb2, matcher_pb2, matcher_pb2_grpc
from workloads.common.channels import SERVER_OPTIONS
from workloads.matcher import codec
from workloads.matcher.engine import Engine
from workloads.matcher.settings import MatcherSettings

log = logging.getLogger(__name__)


class StatusOnlyService(matcher_pb2_grpc.MatcherServicer):
    """GetStatus from `status()`; every command fails with FAILED_PRECONDITION and
    `refused()` as its detail."""

    def __init__(
        self,
        status: Callable[[], matcher_pb2.MatcherStatus],
        refused: Callable[[], str],
    ) -> None:
        self.status = status
        self.refused = refused

    async def GetStatus(
        self, request: matcher_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.MatcherStatus:
        return self.status()

    async def _refuse(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.refused())

    PlaceOrder = CancelOrder = CancelAll = SetSymbolMode = ApplyFunding = _refuse
    SubmitBatch = GetOrderBook = GetReservations = GetBalances = _refuse


def engine_status(engine: Engine, epoch: int, **fields: Any) -> matcher_pb2.MatcherStatus:
    """A MatcherStatus of an engine that does not lead (`fields`: the rest; its durable seq
    is the engine's unless they say otherwise)."""
    return matcher_pb2.MatcherStatus(
        symbol=engine.spec.symbol,
        seq=engine.seq,
        epoch=epoch,
        mode=common_pb2.SymbolMode.ValueType(engine.mode),
        state_hash=codec.hash_bytes(engine.state_hash),
        leader=False,
        **({"last_durable_seq": engine.seq} | fields),
    )


class StatusServer:
    """The gRPC server of an instance that does not lead (yet), on the matcher's port."""

    def __init__(self, settings: MatcherSettings, service: StatusOnlyService) -> None:
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        matcher_pb2_grpc.add_MatcherServicer_to_server(service, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")

    async def start(self) -> None:
        await self.server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self) -> None:
        await self.server.stop(grace=0.5)


async def refuse(
    settings: MatcherSettings, engine: Engine, epoch: int, published: int, why: str
) -> None:
    """Serve GetStatus until SIGTERM/SIGINT (the ops endpoints are up already, `/readyz`
    saying why)."""
    log.critical(
        "refusing to serve",
        extra={"why": why, "recovered_seq": engine.seq, "published_seq": published},
    )
    status = engine_status(engine, epoch, last_published_seq=published, refusal=why,
                           role="refusing")  # fmt: skip
    server = StatusServer(settings, StatusOnlyService(lambda: status, lambda: f"REFUSING: {why}"))
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
