"""Wallets and transfers against a real matcher, Kafka and PostgreSQL: a deposit lands in
the wallet (no matcher), a transfer moves funds between the wallet and a market exactly
once (retried, raced, refused), and the invariants and the rebuild agree throughout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts.v1 import matcher_pb2
from workloads.ledger.funding import request_from_row
from workloads.ledger.tests.conftest import Desk

pytestmark = pytest.mark.integration


async def wallet_and_market(desk: Desk, account: str, asset: str) -> tuple[int, int]:
    row = await desk.ledger.pool.fetchrow(
        """SELECT b.wallet, b.available FROM balances b JOIN accounts a ON a.id = b.account_id
            WHERE a.owner = $1 AND a.asset = $2""",
        account,
        asset,
    )
    return (row["wallet"], row["available"]) if row else (0, 0)


async def in_matcher(desk: Desk, account: str) -> int:
    """The account's USDT available in the matcher (its own view, at a committed seq)."""
    snapshot = await desk.stub.GetBalances(matcher_pb2.GetBalancesRequest(symbol="BTC-USDT"))
    return next((a.quote_available for a in snapshot.accounts if a.account == account), 0)


async def transfer(desk: Desk, ident: str, amount: int | str, direction: str) -> tuple[int, Any]:
    return await desk.call(
        "/v1/admin/transfers",
        {"transfer_id": ident, "account": "wendy", "symbol": "BTC-USDT", "asset": "USDT",
         "amount": str(amount), "direction": direction, "wait_ms": 10_000},
    )  # fmt: skip


async def consistent(desk: Desk) -> None:
    status, checked = await desk.call("/v1/admin/invariants/check")
    assert status == 200 and checked["ok"], checked
    status, rebuilt = await desk.call("/v1/admin/rebuild-balances", {})
    assert status == 200 and rebuilt["consistent"], rebuilt


async def test_deposit_transfer_in_and_out_exactly_once(desk: Desk) -> None:
    deposit = {"deposit_id": "dep-w1", "account": "wendy", "asset": "USDT", "amount": "1000"}
    status, first = await desk.call("/v1/admin/deposits", deposit)
    assert (status, first["duplicate"]) == (201, False), first
    status, again = await desk.call("/v1/admin/deposits", deposit)
    assert (status, again["journal_id"], again["duplicate"]) == (200, first["journal_id"], True)
    status, other = await desk.call("/v1/admin/deposits", {**deposit, "amount": "999"})
    assert (status, other["code"]) == (409, "idempotency_conflict")
    assert await wallet_and_market(desk, "wendy", "USDT") == (1000, 0)
    assert await in_matcher(desk, "wendy") == 0  # a deposit allocates to no market

    status, moved = await transfer(desk, "tr-1", 600, "to_market")
    assert status == 202 and (moved["status"], moved["booked"]) == ("accepted", True), moved
    assert await wallet_and_market(desk, "wendy", "USDT") == (400, 600)
    assert await in_matcher(desk, "wendy") == 600
    status, same = await transfer(desk, "tr-1", 600, "to_market")  # a retry: the same transfer
    assert (status, same["journal_id"]) == (202, moved["journal_id"])
    status, changed = await transfer(desk, "tr-1", 601, "to_market")
    assert (status, changed["code"]) == (409, "idempotency_conflict")

    status, short = await transfer(desk, "tr-2", 401, "to_market")
    assert (status, short["code"]) == (409, "insufficient_funds")
    status, unknown = await desk.get("/v1/admin/transfers/tr-2")  # nothing was kept
    assert status == 404, unknown

    status, back = await transfer(desk, "tr-3", 200, "to_wallet")
    assert (status, back["status"], back["booked"]) == (202, "accepted", True), back
    assert await wallet_and_market(desk, "wendy", "USDT") == (600, 400)
    assert await in_matcher(desk, "wendy") == 400
    status, refused = await transfer(desk, "tr-4", 401, "to_wallet")  # more than the market has
    assert (status, refused["status"], refused["booked"]) == (202, "rejected", False), refused
    assert refused["reject_reason"] == "REJECT_REASON_INSUFFICIENT_FUNDS"
    assert await wallet_and_market(desk, "wendy", "USDT") == (600, 400)

    # Two transfers race for the same 600: the settlement lock lets one spend it.
    raced = await asyncio.gather(transfer(desk, "tr-5", 600, "to_market"),
                                 transfer(desk, "tr-6", 600, "to_market"))  # fmt: skip
    assert sorted(s for s, _ in raced) == [202, 409], raced
    assert await wallet_and_market(desk, "wendy", "USDT") == (0, 1000)
    assert await in_matcher(desk, "wendy") == 1000

    status, withdrawn = await desk.call(
        "/v1/admin/withdrawals",
        {"withdrawal_id": "wd-1", "account": "wendy", "asset": "USDT", "amount": "1"},
    )
    assert (status, withdrawn["code"]) == (409, "insufficient_funds")

    status, listed = await desk.get("/v1/admin/accounts/wendy/transfers?limit=10")
    order = [t["transfer_id"] for t in listed["transfers"]]  # newest first; refused: not kept
    assert len(order) == 4 and order[-3:] == ["tr-4", "tr-3", "tr-1"], order
    ids = {t["transfer_id"]: t["status"] for t in listed["transfers"]}
    assert ids["tr-1"] == "accepted" and ids["tr-4"] == "rejected" and "tr-2" not in ids
    assert await wallet_and_market(desk, "@transfers", "USDT") == (0, 0)  # nothing in flight
    await consistent(desk)


async def test_a_transfer_the_matcher_refuses_goes_back_to_the_wallet_once(desk: Desk) -> None:
    """The matcher refuses a credit that would overflow the account's balance there."""
    await desk.deposit("wendy", "USDT", 1 << 62)  # straight into the market (an adjustment)
    status, _ = await desk.call(
        "/v1/admin/deposits",
        {"deposit_id": "dep-big", "account": "wendy", "asset": "USDT", "amount": str(1 << 62)},
    )
    assert status == 201
    status, refused = await transfer(desk, "tr-big", 1 << 62, "to_market")
    assert (status, refused["status"]) == (202, "rejected"), refused
    assert refused["reject_reason"] == "REJECT_REASON_BALANCE_OVERFLOW"
    assert await wallet_and_market(desk, "wendy", "USDT") == (1 << 62, 1 << 62)
    refunds = await desk.ledger.pool.fetchval(
        "SELECT count(*) FROM journal WHERE reference = 'wallet:refund:tr-big'"
    )
    assert refunds == 1
    row = await desk.ledger.pool.fetchrow(
        "SELECT * FROM funding_requests WHERE funding_id = 'tr-big'"
    )
    await desk.ledger.funding.send(request_from_row(row))  # answered before: nothing more
    assert await wallet_and_market(desk, "wendy", "USDT") == (1 << 62, 1 << 62)
    assert await wallet_and_market(desk, "@transfers", "USDT") == (0, 0)
    await consistent(desk)
