"""A client that hears "not the leader" reconnects through the Service and reaches the new
leader: the Service here is a TCP proxy on 127.0.0.1 that, like kube-proxy, sends each new
connection to the backend current at that moment and keeps established ones where they are."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from contracts.v1 import matcher_pb2, matcher_pb2_grpc
from workloads.common.channels import LeaderChannel, not_leader
from workloads.matcher.refusal import StatusOnlyService

pytestmark = pytest.mark.unit


class Leading(StatusOnlyService):
    """Accepts orders (the rest of the service refuses, as unused here)."""

    async def PlaceOrder(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> matcher_pb2.CommandReply:
        return matcher_pb2.CommandReply(status=matcher_pb2.COMMAND_STATUS_ACCEPTED, epoch=2)


class Service:
    """Forwards each new connection to `backend` as it is when the connection arrives."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.server: asyncio.Server | None = None
        self.streams: list[asyncio.StreamWriter] = []
        self.pipes: list[asyncio.Task[None]] = []

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend)
        self.streams += [writer, up_writer]
        self.pipes += [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for stream in self.streams:
            stream.close()
        await asyncio.gather(*self.pipes, return_exceptions=True)
        for stream in self.streams:
            with contextlib.suppress(ConnectionError):
                await stream.wait_closed()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def serving(servicer: matcher_pb2_grpc.MatcherServicer) -> AsyncIterator[int]:
    server = grpc.aio.server()
    matcher_pb2_grpc.add_MatcherServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(grace=None)


async def test_a_reset_after_not_leader_reaches_the_pod_the_service_routes_to_now() -> None:
    former = StatusOnlyService(matcher_pb2.MatcherStatus, lambda: "NOT_LEADER")
    leader = Leading(matcher_pb2.MatcherStatus, str)
    async with serving(former) as former_port, serving(leader) as leader_port:
        service = Service(former_port)
        channel = LeaderChannel(f"127.0.0.1:{await service.start()}")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.stub.PlaceOrder(matcher_pb2.PlaceOrderRequest(), timeout=5)
            assert not_leader(refused.value)

            service.backend = leader_port  # the Service now lists the new leader only
            await channel.reset()
            reply = await channel.stub.PlaceOrder(matcher_pb2.PlaceOrderRequest(), timeout=5)
            assert reply.status == matcher_pb2.COMMAND_STATUS_ACCEPTED and reply.epoch == 2
        finally:
            await channel.close()
            await service.stop()
