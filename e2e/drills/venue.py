"""A market's matcher and the ledger as real processes on a PostgreSQL schema and a Kafka
topic: what `make up` runs for one market, minus the gateway."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from e2e.env.ledger import LedgerProcess
from e2e.env.matcher import MatcherProcess

ADMIN = {"X-Admin-Token": "tok-alice"}
ADMIN_TOKENS = "alice:tok-alice,bob:tok-bob"


@dataclass
class Venue:
    run_dir: Path
    dsn: str
    kafka_bootstrap: str
    topic: str
    symbol: str = "BTC-USDT"
    ledger_env: dict[str, str] = field(default_factory=dict)
    """LEDGER_* settings beyond the defaults (which are what the fault tests judge)."""
    matcher: MatcherProcess = field(init=False)
    ledger: LedgerProcess = field(init=False)

    def __post_init__(self) -> None:
        self.matcher = MatcherProcess(
            self.run_dir, self.symbol, kafka_bootstrap=self.kafka_bootstrap, events_topic=self.topic
        )
        self.ledger = LedgerProcess(
            self.run_dir,
            self.dsn,
            self.kafka_bootstrap,
            self.topic,
            markets=f"{self.symbol}={self.matcher.target}",
            group_id=f"ledger-{self.topic}",
            admin_tokens=ADMIN_TOKENS,
            extra_env={"LEDGER_KAFKA_GROUP_INSTANCE_ID": f"ledger-{self.topic}", **self.ledger_env},
        )

    def start(self) -> None:
        self.matcher.start()
        self.ledger.start()

    def stop(self) -> None:
        self.ledger.stop()
        self.matcher.stop()

    async def get(self, path: str) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.ledger.url + path, headers=ADMIN) as response,
        ):
            return await response.json()

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.ledger.url + path, json=body, headers=ADMIN) as response,
        ):
            return response.status, await response.json()

    async def deposit(self, account: str, asset: str, amount: int) -> None:
        """Credit through the ledger, which funds the matcher (ApplyFunding) exactly once."""
        status, body = await self.post(
            "/v1/admin/adjustments",
            {
                "adjustment_id": f"deposit-{account}-{asset}",
                "symbol": self.symbol,
                "account": account,
                "asset": asset,
                "amount": str(amount),
                "direction": "credit",
                "wait_ms": 20_000,
            },
        )
        if (status, body.get("booked")) != (202, True):
            raise AssertionError(f"deposit of {account} {asset} refused: {status} {body}")

    async def fund(self, accounts: Iterable[str], base: int = 10**12, quote: int = 10**15) -> None:
        """Deposit `base` and `quote` (minor units) for each account, through the ledger."""
        base_asset, _, quote_asset = self.symbol.partition("-")
        for account in accounts:
            await self.deposit(account, base_asset, base)
            await self.deposit(account, quote_asset, quote)

    async def reconciliation(self) -> dict[str, Any]:
        """The ledger's reconciliation status of the market."""
        status = await self.get("/v1/admin/reconciliation/status")
        market: dict[str, Any] = next(m for m in status["markets"] if m["symbol"] == self.symbol)
        return market
