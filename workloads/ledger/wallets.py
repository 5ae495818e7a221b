"""Wallets: each account's funds in no market, and transfers between a wallet and a market.

A matcher only knows the funds allocated to its market, so a trader's USDT in BTC-USDT
cannot buy in ETH-USDT. The ledger (the book of record) keeps a third bucket per account
and asset, `wallet`, beside `available` and `hold` (which sum the markets' allocations):
- a deposit lands in the wallet and a withdrawal leaves from it. Neither needs a matcher,
  so both work while markets are halted or their matchers down. Deposits do NOT allocate to
  a market by themselves: an allocation is exposed to its market (a halt or a latch freezes
  it, and funding it needs that matcher up), so funds rest where nothing can freeze them
  until the trader picks a market;
- a transfer into a market books the wallet's side at once (wallet -> `@transfers`), under
  the settlement lock, so two transfers cannot spend the same funds, and stores a funding
  request in the same transaction; the funding path then credits the market exactly once
  (resent with the same id until answered; booked by the matcher's event, against
  `@transfers`). A matcher's refusal refunds the wallet, in the transaction that records
  the refusal, exactly once;
- a transfer out of a market is a funding debit that the matcher checks against what the
  market has available; its event books the funds into the wallet (rules.with_origin).
`@transfers` holds exactly the transfers into markets that are asked and not yet booked.

Entries the ledger books itself have the reference `wallet:<kind>:<id>` and seq 0, and are
written by the settlement's own code (`store.book`: journal ids under the lock, the
double-entry trigger, balance deltas).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from workloads.ledger import rules, store
from workloads.ledger.errors import ApiError, Code
from workloads.ledger.funding import Funding, FundingRequest, FundingResult
from workloads.ledger.rules import TRANSFERS, WALLET, Entry, Line

TO_MARKET = "to_market"
TO_WALLET = "to_wallet"

_WALLET_OF = """
SELECT b.wallet FROM balances b JOIN accounts a ON a.id = b.account_id
 WHERE a.owner = $1 AND a.asset = $2
"""
_ENTRY_TERMS = """
SELECT a.owner, p.asset, p.amount FROM postings p JOIN accounts a ON a.id = p.account_id
 WHERE p.tx_id = $1 AND p.bucket = 'wallet'
"""
_TRANSFERS = """
SELECT r.funding_id, r.account, r.market, r.asset, r.amount, r.direction, r.created_at,
       x.status, x.reject_reason, x.seq, x.epoch, j.id AS journal_id
  FROM funding_requests r
  LEFT JOIN funding_results x USING (funding_id)
  LEFT JOIN journal j ON j.reference = r.market || ':' || x.seq || ':0'
 WHERE r.origin = 'transfer'
"""


def reference(kind: str, ident: str) -> str:
    return f"wallet:{kind}:{ident}"


@dataclass(frozen=True)
class Transfer:
    transfer_id: str
    account: str
    market: str
    asset: str
    amount: int
    direction: str  # TO_MARKET | TO_WALLET
    requested_by: str

    def funding(self) -> FundingRequest:
        into = self.direction == TO_MARKET
        return FundingRequest(
            self.transfer_id,
            self.market,
            self.account,
            self.asset,
            self.amount,
            "credit" if into else "debit",
            "transfer",
            TRANSFERS if into else self.account,
            self.requested_by,
        )


class Wallets:
    def __init__(self, pool: asyncpg.Pool, funding: Funding, fee_account: str) -> None:
        self.pool = pool
        self.funding = funding
        self.fee_account = fee_account
        funding.on_refused = self._refund

    async def deposit(self, ident: str, account: str, asset: str, amount: int) -> tuple[int, bool]:
        """Credit the wallet from `@external`: (journal id, whether it is new)."""
        lines = (
            (account, asset, WALLET, amount),
            (rules.EXTERNAL, asset, rules.AVAILABLE, -amount),
        )
        return await self._book_alone(rules.KIND_DEPOSIT, ident, account, asset, amount, lines)

    async def withdraw(self, ident: str, account: str, asset: str, amount: int) -> tuple[int, bool]:
        """Debit the wallet to `@external` (insufficient_funds if it holds less)."""
        lines = (
            (account, asset, WALLET, -amount),
            (rules.EXTERNAL, asset, rules.AVAILABLE, amount),
        )
        return await self._book_alone(rules.KIND_WITHDRAWAL, ident, account, asset, -amount, lines)

    async def _book_alone(
        self, kind: str, ident: str, account: str, asset: str, amount: int, lines: tuple[Line, ...]
    ) -> tuple[int, bool]:
        entry = _entry(kind, reference(kind, ident), "@wallet", lines)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(store.APPLY_LOCK)
            existing = await conn.fetchval(
                "SELECT id FROM journal WHERE reference = $1", entry.reference
            )
            if existing is not None:
                terms = [tuple(r) for r in await conn.fetch(_ENTRY_TERMS, existing)]
                if terms != [(account, asset, amount)]:
                    raise ApiError(
                        Code.IDEMPOTENCY_CONFLICT, f"{ident} was used for a different {kind}"
                    )
                return int(existing), False
            if amount < 0:
                await self._spend(conn, account, asset, -amount)
            return await self._book(conn, entry), True

    async def transfer(self, t: Transfer) -> FundingResult:
        """Ask for a transfer (idempotent by its id) and send it to the market's matcher."""
        request = t.funding()
        async with self.pool.acquire() as conn, conn.transaction():
            if t.direction == TO_WALLET:
                await self.funding.store(conn, request)
            else:
                await conn.execute(store.APPLY_LOCK)
                if await self.funding.store(conn, request):
                    await self._spend(conn, t.account, t.asset, t.amount)
                    lines = (
                        (t.account, t.asset, WALLET, -t.amount),
                        (TRANSFERS, t.asset, rules.AVAILABLE, t.amount),
                    )
                    ref = reference(rules.KIND_TRANSFER, t.transfer_id)
                    await self._book(conn, _entry(rules.KIND_TRANSFER, ref, t.market, lines))
        return await self.funding.send(request)

    async def _refund(self, conn: asyncpg.Connection, request: FundingRequest) -> None:
        """A refused transfer into a market: its wallet side back (in the caller's
        transaction, the one that records the refusal)."""
        if request.origin != "transfer" or request.direction != "credit":
            return
        await conn.execute(store.APPLY_LOCK)
        lines = (
            (request.account, request.asset, WALLET, request.amount),
            (TRANSFERS, request.asset, rules.AVAILABLE, -request.amount),
        )
        ref = reference("refund", request.funding_id)
        if await conn.fetchval("SELECT 1 FROM journal WHERE reference = $1", ref) is None:
            await self._book(conn, _entry(rules.KIND_TRANSFER, ref, request.market, lines))

    async def _spend(self, conn: asyncpg.Connection, account: str, asset: str, amount: int) -> None:
        held = await conn.fetchval(_WALLET_OF, account, asset) or 0
        if held < amount:
            raise ApiError(
                Code.INSUFFICIENT_FUNDS,
                f"{account}'s {asset} wallet holds {held}, less than {amount}",
            )

    async def _book(self, conn: asyncpg.Connection, entry: Entry) -> int:
        """Book `entry` with the settlement's own code (the caller holds the lock). A fresh
        account cache: an id is cached only once its transaction has committed."""
        ids, _, _, _ = await store.book(conn, [entry], store.AccountCache(self.fee_account))
        return ids[entry.reference]

    async def get(self, transfer_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(_TRANSFERS + " AND r.funding_id = $1", transfer_id)
        return transfer_json(row) if row is not None else None

    async def of(self, account: str, limit: int, before: Any = None) -> list[dict[str, Any]]:
        """`account`'s transfers, newest first (`before`: a created_at to page from)."""
        rows = await self.pool.fetch(
            _TRANSFERS
            + """ AND r.account = $1
               AND ($2::timestamptz IS NULL OR r.created_at < $2)
             ORDER BY r.created_at DESC, r.funding_id DESC LIMIT $3""",
            account,
            before,
            limit,
        )
        return [transfer_json(r) for r in rows]


def _entry(kind: str, ref: str, market: str, lines: tuple[Line, ...]) -> Entry:
    """An entry the ledger books itself: no matcher event, so seq and epoch 0."""
    return Entry(ref, kind, market, 0, 0, time.time_ns(), lines)


def transfer_json(row: Any) -> dict[str, Any]:
    return {
        "transfer_id": row["funding_id"],
        "account": row["account"],
        "symbol": row["market"],
        "asset": row["asset"],
        "amount": str(row["amount"]),
        "direction": TO_MARKET if row["direction"] == "credit" else TO_WALLET,
        "status": row["status"] or "pending",
        "reject_reason": row["reject_reason"],
        "seq": row["seq"],
        "epoch": row["epoch"],
        "booked": row["journal_id"] is not None,
        "journal_id": row["journal_id"],
        "created_at": row["created_at"].isoformat(),
    }
