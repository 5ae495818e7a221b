"""`make up`'s venue for the drills: the same processes `make up` runs (`e2e.env.stack`), on
free 127.0.0.1 ports in a run directory of their own, plus a second gateway replica (two
replicas share their state in PostgreSQL, as behind a load balancer), with handles on the
parts the drills fault and on the ledger's admin API and the matcher's status."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from contracts.v1 import matcher_pb2, matcher_pb2_grpc
from e2e.env.gateway import GatewayProcess
from e2e.env.kafka import KafkaBroker
from e2e.env.ledger import LedgerProcess
from e2e.env.matcher import MatcherProcess
from e2e.env.postgres import PostgresServer
from e2e.env.process import free_port
from e2e.env.service import ServiceProcess
from e2e.env.stack import EVENTS_TOPIC, Stack, StackSettings
from workloads.common.channels import matcher_channel

T = TypeVar("T")
ADMIN_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass
class DrillVenue:
    run_dir: Path
    stack: Stack = field(init=False)
    gateways: list[GatewayProcess] = field(default_factory=list)

    def start(self) -> None:
        """Start everything, or stop what started and raise."""
        self.stack = Stack(StackSettings.on_free_ports(self.run_dir))
        try:
            self.stack.start()
            first = self.stack.gateway
            assert first is not None
            second = dataclasses.replace(first, name="gateway-2", http_port=free_port(),
                                         extra_env=dict(first.extra_env), process=None)  # fmt: skip
            second.start()
            self.gateways = [first, second]
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for gateway in self.gateways[1:]:
            gateway.stop()
        self.stack.stop()

    # ------------------------------------------------------------------ the parts

    def _part(self, kind: type[T]) -> T:
        found = [p for p in self.stack.parts if isinstance(p, kind)]
        assert found, f"no {kind.__name__} in the stack"
        return found[0]

    @property
    def matcher(self) -> MatcherProcess:
        assert self.stack.matcher is not None
        return self.stack.matcher

    @property
    def ledger(self) -> LedgerProcess:
        assert self.stack.ledger is not None
        return self.stack.ledger

    @property
    def broker(self) -> KafkaBroker:
        return self._part(KafkaBroker)

    @property
    def postgres(self) -> PostgresServer:
        return self._part(PostgresServer)

    @property
    def symbol(self) -> str:
        return self.stack.settings.symbol

    @property
    def dsn(self) -> str:
        """The ledger's database (its tables are in the default schema)."""
        return self.postgres.dsn

    @property
    def topic(self) -> str:
        return EVENTS_TOPIC

    @property
    def gateway_urls(self) -> list[str]:
        return [g.url for g in self.gateways]

    # ------------------------------------------------------------------ the ledger's admin API

    @property
    def admin_headers(self) -> dict[str, str]:
        """The first of LEDGER_ADMIN_TOKENS (`name:token,...`), which the stack's ledger
        reads; none when unset (then the admin routes are open, as in `make up`)."""
        tokens = os.environ.get("LEDGER_ADMIN_TOKENS", "")
        first = tokens.split(",")[0].partition(":")[2]
        return {"X-Admin-Token": first} if first else {}

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(timeout=ADMIN_TIMEOUT) as session,
            session.request(
                method, self.ledger.url + path, json=body, headers=self.admin_headers
            ) as response,
        ):
            return response.status, await response.json()

    async def reconciliation(self) -> dict[str, Any]:
        """The ledger's reconciliation status of the venue's market."""
        _, status = await self.admin("GET", "/v1/admin/reconciliation/status")
        market: dict[str, Any] = next(m for m in status["markets"] if m["symbol"] == self.symbol)
        return market

    # ------------------------------------------------------------------ the matcher

    async def status(self, within: float = 2.0) -> matcher_pb2.MatcherStatus:
        async with matcher_channel(self.matcher.target) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            request = matcher_pb2.GetStatusRequest(symbol=self.symbol)
            status: matcher_pb2.MatcherStatus = await stub.GetStatus(request, timeout=within)
            return status

    async def book(self, depth: int = 1000) -> tuple[list[Any], list[Any]]:
        async with matcher_channel(self.matcher.target) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            request = matcher_pb2.GetOrderBookRequest(symbol=self.symbol, depth=depth)
            book = await stub.GetOrderBook(request, timeout=5)
        bids, asks = ([(x.price, x.quantity, x.orders) for x in side]
                      for side in (book.bids, book.asks))  # fmt: skip
        return bids, asks

    async def restart(self, part: ServiceProcess) -> float:
        """Start a killed or stopped process again; the seconds until it is ready."""
        return await asyncio.to_thread(part.start)
