"""Traders as a user is one: sign up at the gateway, make an API key, get funds deposited
through the ledger's admin API, place signed orders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from workloads.gateway.client import GatewayClient, Reply

PASSWORD = "correct horse battery 1"
"""Every trader's password (a drill logs a trader in again with it)."""


@dataclass
class Trader:
    client: GatewayClient
    account: str

    @classmethod
    async def signup(cls, http: aiohttp.ClientSession, gateway: str, name: str) -> Trader:
        session = GatewayClient(http, gateway)
        await session.login(f"{name}-{uuid.uuid4().hex[:6]}@example.com", PASSWORD, signup=True)
        key, secret = await session.new_api_key(name)
        me = await session.call("GET", "/v1/auth/me")
        if me.status != 200:
            raise RuntimeError(f"{name}: /v1/auth/me answered {me.status} {me.body}")
        return cls(GatewayClient(http, gateway, api_key=key, secret=secret), me.body["account"])

    async def place(self, symbol: str, side: str, price: str, quantity: str, **extra: Any) -> Reply:
        order = {"symbol": symbol, "side": side, "type": "LIMIT", "price": price,
                 "quantity": quantity, **extra}  # fmt: skip
        return await self.client.call("POST", "/v1/orders", order)


async def deposit(
    http: aiohttp.ClientSession,
    ledger: str,
    token: str,
    symbol: str,
    account: str,
    asset: str,
    amount: int,
) -> None:
    """Credit `amount` minor units through the ledger, which funds the matcher."""
    body = {
        "adjustment_id": f"deposit-{uuid.uuid4().hex[:16]}",
        "symbol": symbol,
        "account": account,
        "asset": asset,
        "amount": amount,
        "direction": "credit",
        "reason": "test deposit",
        "wait_ms": 20_000,
    }
    headers = {"X-Admin-Token": token} if token else {}
    async with http.post(f"{ledger}/v1/admin/adjustments", json=body, headers=headers) as r:
        answer = await r.json()
        if r.status != 202 or not answer.get("booked"):
            raise RuntimeError(f"deposit of {amount} {asset} to {account}: {r.status} {answer}")
