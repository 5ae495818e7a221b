"""Fixtures for the gateway's tests: a real matcher process, real Kafka and PostgreSQL, and
gateway processes (or the app in-process), all on 127.0.0.1 and stopped afterwards."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from contracts.v1 import funding_pb2, matcher_pb2, matcher_pb2_grpc
from e2e.env.gateway import GatewayProcess
from e2e.env.ledger import LedgerProcess
from e2e.env.matcher import MatcherProcess
from e2e.env.pytest_plugin import Schema
from workloads.gateway.client import GatewayClient
from workloads.gateway.markets import Market, catalogue_json

SYMBOL = "BTC-USDT"
STATIC_KEY, STATIC_SECRET = "static-trader", "static-secret-123"
GATEWAY_LEDGER_TOKEN = "tok-gateway"


@dataclass
class Stack:
    market: Market
    matcher: MatcherProcess
    gateways: list[GatewayProcess]
    topic: str
    ledger: LedgerProcess | None = None
    gateway_settings: dict[str, Any] = field(default_factory=dict)
    """GatewayProcess's arguments but its name: what `add_gateway` starts one more with."""

    def add_gateway(self) -> GatewayProcess:
        """Start one more replica (stopped with the stack)."""
        gateway = GatewayProcess(
            **self.gateway_settings, name=f"gateway-{len(self.gateways)}"
        )  # fmt: skip
        self.gateways.append(gateway)
        gateway.start()
        return gateway

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        if self.ledger is not None:
            self.ledger.stop()
        self.matcher.stop()

    @property
    def url(self) -> str:
        return self.gateways[0].url

    async def matcher_seq(self) -> int:
        async with grpc.aio.insecure_channel(self.matcher.target) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            status = await stub.GetStatus(matcher_pb2.GetStatusRequest(symbol=SYMBOL))
            return int(status.seq)

    async def fund(self, account: str, base: int = 10**12, quote: int = 10**15) -> None:
        """Credit balances in the matcher directly (the ledger owns this in production)."""
        commands = [
            matcher_pb2.Command(
                funding=funding_pb2.FundingCommand(
                    funding_id=f"fund-{account}-{asset}-{uuid.uuid4().hex[:8]}",
                    account=account,
                    asset=asset,
                    amount=amount,
                    direction=funding_pb2.FUNDING_DIRECTION_CREDIT,
                )
            )
            for asset, amount in (("BTC", base), ("USDT", quote))
        ]
        async with grpc.aio.insecure_channel(self.matcher.target) as channel:
            stub = matcher_pb2_grpc.MatcherStub(channel)
            reply = await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=commands))
            assert all(r.status == matcher_pb2.COMMAND_STATUS_ACCEPTED for r in reply.replies)


def start_stack(
    run_dir: Path,
    pg: Schema,
    kafka_bootstrap: str,
    topic: str,
    replicas: int = 1,
    gateway_env: dict[str, str] | None = None,
    ledger: bool = False,
) -> Stack:
    """A matcher and `replicas` gateways; with `ledger`, the ledger too (settling the topic
    into its own schema), which the gateways read fills from."""
    matcher = MatcherProcess(
        run_dir,
        symbol=SYMBOL,
        kafka_bootstrap=kafka_bootstrap,
        events_topic=topic,
    )
    market = Market(SYMBOL, "BTC", "USDT", matcher=matcher.target)
    matcher.extra_env.update(market.matcher_env())
    matcher.start()
    gateways: list[GatewayProcess] = []
    made = Stack(market, matcher, gateways, topic)
    env = {"EDGE_SEED_MARKET_DATA": "false", **(gateway_env or {})}
    try:
        if ledger:
            made.ledger = LedgerProcess(
                run_dir,
                pg.server_dsn,
                kafka_bootstrap,
                topic,
                markets=f"{SYMBOL}={matcher.target}",
                group_id=f"ledger-{topic}",
                admin_tokens=f"gateway:{GATEWAY_LEDGER_TOKEN}",
                extra_env={"LEDGER_DB_SCHEMA": f"ledger_{pg.name}"},
            )
            made.ledger.start()
            env = {"EDGE_LEDGER_URL": made.ledger.url,
                   "EDGE_LEDGER_ADMIN_TOKEN": GATEWAY_LEDGER_TOKEN, **env}  # fmt: skip
        made.gateway_settings = {
            "run_dir": run_dir,
            "dsn": pg.server_dsn,
            "markets": catalogue_json((market,)),
            "kafka_bootstrap": kafka_bootstrap,
            "events_topic": topic,
            "schema": pg.name,
            "api_secrets": f"{STATIC_KEY}:{STATIC_SECRET}",
            "extra_env": env,
        }
        for _ in range(replicas):
            made.add_gateway()
    except BaseException:
        made.stop()
        raise
    return made


@pytest.fixture
def stack_dir(run_dir: Path) -> Path:
    path = run_dir / f"gw-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


StackFactory = Callable[..., Stack]


@pytest.fixture
def make_stack(
    stack_dir: Path, pg_schema: Schema, kafka_bootstrap: str, kafka_topic: str
) -> Iterator[StackFactory]:
    """Start a matcher and gateway replicas with extra EDGE_* settings; all stopped after."""
    started: list[Stack] = []

    def make(replicas: int = 1, ledger: bool = False, **env: str) -> Stack:
        made = start_stack(
            stack_dir, pg_schema, kafka_bootstrap, kafka_topic, replicas, env, ledger
        )
        started.append(made)
        return made

    try:
        yield make
    finally:
        for made in started:
            made.stop()


@pytest.fixture
def stack(make_stack: StackFactory) -> Stack:
    return make_stack()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def new_trader(
    http: aiohttp.ClientSession, url: str, stack: Stack | None = None
) -> tuple[GatewayClient, str]:
    """A signed-up user with an API key (signing client) and, if a stack is given, funds."""
    client = GatewayClient(http, url)
    email = f"t-{uuid.uuid4().hex[:10]}@example.com"
    login = await client.login(email, "correct horse battery", signup=True)
    key, secret = await client.new_api_key("test")
    signed = GatewayClient(http, url, api_key=key, secret=secret)
    account = str(login["account"])
    if stack is not None:
        await stack.fund(account)
    return signed, account


async def poll(check: Any, within: float = 15.0, interval: float = 0.05) -> Any:
    """Await `check()` until it returns something truthy; fail after `within` seconds."""
    import asyncio

    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s: last value {value!r}")
        await asyncio.sleep(interval)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class WsReader:
    """Collects every JSON message of a WebSocket in the background."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        import asyncio

        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self.closed_code: int | None = None
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))
                self.received_at.append(time.time())
        self.closed_code = self.ws.close_code

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    def of(self, channel: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        control = ("subscribed", "unsubscribed", "error", "pong", "authenticated")
        return [
            m
            for m in self.messages
            if (channel is None or m.get("channel") == channel)
            and (m.get("type") == kind if kind is not None else m.get("type") not in control)
        ]

    async def wait_for(self, check: Callable[[], Any], within: float = 15.0) -> Any:
        async def probe() -> Any:
            return check()

        return await poll(probe, within)

    async def close(self) -> None:
        await self.ws.close()
        await self.task


async def open_ws(
    http: aiohttp.ClientSession,
    url: str,
    client: GatewayClient | None = None,
    headers: dict[str, str] | None = None,
) -> WsReader:
    from workloads.gateway.client import signed_headers

    sent = dict(headers or {})
    if client is not None and client.api_key:
        sent.update(signed_headers(client.api_key, client.secret, "GET", "/ws", b""))
    ws = await http.ws_connect(url + "/ws", headers=sent, autoping=True)
    return WsReader(ws)


async def pump_trades(
    stack: Stack, pairs: int, per_batch: int = 250, price: int = 6_000_000, rate: float = 0
) -> None:
    """`pairs` trades straight through the matcher (a resting sell, then a crossing buy),
    at `rate` trades per second (0: as fast as the matcher takes them)."""
    import asyncio

    from contracts.v1 import common_pb2 as c

    await stack.fund("pump-maker")
    await stack.fund("pump-taker")
    lot = stack.market.lot_size
    tag = uuid.uuid4().hex[:6]
    async with grpc.aio.insecure_channel(stack.matcher.target) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        done = 0
        started = time.monotonic()
        while done < pairs:
            if rate:
                await asyncio.sleep(max(0.0, started + done / rate - time.monotonic()))
            commands = []
            for i in range(done, min(pairs, done + per_batch)):
                for account, side in (("pump-maker", c.SIDE_SELL), ("pump-taker", c.SIDE_BUY)):
                    commands.append(
                        matcher_pb2.Command(
                            place_order=matcher_pb2.PlaceOrderRequest(
                                symbol=SYMBOL,
                                account=account,
                                client_order_id=f"{tag}-{account}-{i}",
                                side=side,
                                order_type=c.ORDER_TYPE_LIMIT,
                                time_in_force=c.TIME_IN_FORCE_GTC,
                                price=price + (i % 7),
                                quantity=lot,
                            )
                        )
                    )
            reply = await stub.SubmitBatch(matcher_pb2.CommandBatch(commands=commands))
            assert all(r.status == matcher_pb2.COMMAND_STATUS_ACCEPTED for r in reply.replies)
            done += len(commands) // 2
