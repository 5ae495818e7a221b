"""Fixtures of the ledger tests: a migrated schema, the applier, an in-process API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from contracts.v1 import matcher_pb2_grpc
from e2e.env.matcher import MatcherProcess
from e2e.env.pytest_plugin import Schema
from workloads.ledger import migrate, rules
from workloads.ledger.api import build_app
from workloads.ledger.applier import Applier
from workloads.ledger.service import Ledger
from workloads.ledger.settings import (
    DatabaseSettings,
    GuardSettings,
    HttpSettings,
    KafkaSettings,
    LedgerSettings,
    ReconciliationSettings,
    parse_markets,
    parse_tokens,
)

TOKENS = "alice:tok-alice,bob:tok-bob,carol:tok-carol"


def headers(admin: str = "alice") -> dict[str, str]:
    return {"X-Admin-Token": f"tok-{admin}"}


@pytest.fixture
async def ledger_dsn(pg_schema: Schema) -> str:
    await migrate.upgrade(pg_schema.dsn)
    return pg_schema.dsn


@pytest.fixture
async def applier(ledger_dsn: str) -> AsyncIterator[Applier]:
    a = Applier(ledger_dsn, "fees", 5000)
    await a.start()
    yield a
    await a.stop()


def settings_for(
    dsn: str, markets: str = "BTC-USDT", kafka: KafkaSettings | None = None, **overrides: Any
) -> LedgerSettings:
    """Settings for an in-process ledger: no background loops unless asked for."""
    base = LedgerSettings(
        markets=parse_markets(markets),
        database=DatabaseSettings(dsn=dsn, pool_size=4, migrate_on_start=True),
        http=HttpSettings(port=0, max_body_bytes=16 * 1024, admin_tokens=parse_tokens(TOKENS, "")),
        kafka=kafka or KafkaSettings(enabled=False),
        reconciliation=ReconciliationSettings(enabled=False, interval_ms=100, stale_ms=60_000),
        guard=GuardSettings(invariant_interval_ms=0),
    )
    return replace(base, **overrides)


async def open_client(settings: LedgerSettings) -> tuple[Ledger, TestClient[Any, Any]]:
    ledger = await Ledger.open(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ledger), host="127.0.0.1"))
    await client.start_server()
    return ledger, client


async def close_client(ledger: Ledger, client: TestClient[Any, Any]) -> None:
    await client.close()
    await ledger.close()


async def balances(dsn: str) -> dict[tuple[str, str], tuple[int, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT a.owner, a.asset, b.available, b.hold FROM balances b"
            " JOIN accounts a ON a.id = b.account_id"
        )
    finally:
        await conn.close()
    return {(r["owner"], r["asset"]): (r["available"], r["hold"]) for r in rows}


async def count(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


def nonzero(b: dict[tuple[str, str], tuple[int, int]]) -> dict[tuple[str, str], tuple[int, int]]:
    return {k: v for k, v in b.items() if v != (0, 0)}


def engine_view(sim: Any) -> dict[tuple[str, str], tuple[int, int]]:
    """The simulator engine's balances, with the ledger's system counterparties left out."""
    return nonzero(sim.balances())


def user_view(b: dict[tuple[str, str], tuple[int, int]]) -> dict[tuple[str, str], tuple[int, int]]:
    return nonzero({k: v for k, v in b.items() if not k[0].startswith("@")})


def decode_all(events: list[Any], fee_account: str = "fees") -> list[rules.Incoming]:
    return [rules.from_event(ev, ev.SerializeToString(), fee_account) for ev in events]


async def wait_for(check: Any, within: float = 30.0, what: str = "condition") -> Any:
    """Poll an async `check` until it returns something truthy; fail after `within` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {within:.0f}s (last: {value!r})")
        await asyncio.sleep(0.05)


async def applied_seq(dsn: str, market: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT coalesce(max(applied_seq), 0) FROM market_state WHERE market = $1", market
            )
        )
    finally:
        await conn.close()


@dataclass
class Desk:
    ledger: Ledger
    client: TestClient[Any, Any]
    stub: Any

    async def call(self, path: str, body: Any = None, admin: str = "alice") -> tuple[int, Any]:
        response = await self.client.post(path, json=body, headers=headers(admin))
        return response.status, await response.json()

    async def get(self, path: str, admin: str = "alice") -> tuple[int, Any]:
        response = await self.client.get(path, headers=headers(admin))
        return response.status, await response.json()

    async def balance(self, account: str, asset: str) -> tuple[int, int]:
        row = await self.ledger.pool.fetchrow(
            """SELECT b.available, b.hold FROM balances b JOIN accounts a ON a.id = b.account_id
                WHERE a.owner = $1 AND a.asset = $2""",
            account,
            asset,
        )
        return (row["available"], row["hold"]) if row else (0, 0)

    async def deposit(self, account: str, asset: str, amount: int) -> dict[str, Any]:
        status, body = await self.call(
            "/v1/admin/adjustments",
            {"adjustment_id": f"dep-{uuid.uuid4().hex[:8]}", "symbol": "BTC-USDT",
             "account": account, "asset": asset, "amount": str(amount), "direction": "credit",
             "wait_ms": 10_000},
        )  # fmt: skip
        assert (status, body["booked"]) == (202, True), body
        result: dict[str, Any] = body
        return result

    async def journal_reference(self, journal_id: int) -> str:
        return str(
            await self.ledger.pool.fetchval(
                "SELECT reference FROM journal WHERE id = $1", journal_id
            )
        )


@pytest.fixture
async def desk(
    run_dir: Path, ledger_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> AsyncIterator[Desk]:
    matcher = MatcherProcess(
        run_dir / f"corr-{kafka_topic}", kafka_bootstrap=kafka_bootstrap, events_topic=kafka_topic
    )
    matcher.start()
    kafka = KafkaSettings(
        enabled=True, brokers=kafka_bootstrap, topic=kafka_topic, group_id=f"l-{kafka_topic}"
    )
    ledger, client = await open_client(
        settings_for(ledger_dsn, f"BTC-USDT={matcher.target}", kafka=kafka)
    )
    channel = grpc.aio.insecure_channel(matcher.target)
    try:
        yield Desk(ledger, client, matcher_pb2_grpc.MatcherStub(channel))
    finally:
        await channel.close()
        await close_client(ledger, client)
        matcher.stop()
