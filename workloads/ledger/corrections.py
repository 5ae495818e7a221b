"""Corrections: request, two approvals by two other admins, apply once.

The ledger never edits history: a correction is a new entry. Two kinds:
- `adjustment`: a signed amount on one account's available balance, against
  `@corrections`;
- `reversal`: the exact opposite of an earlier funding or correction entry (a deposit
  booked to the wrong account, say), against that entry's counterparty; an entry is
  reversed at most once.
Trades and order holds are not reversible here: they are the matcher's record of what
happened on the market; a wrong trade is compensated by an adjustment.

Applying sends the correction to the market's matcher as a funding command (id
`corr.<correction id>`), so the matcher's risk balances follow, and the settlement path
books it from the matcher's event as a `correction` entry: one path for every balance
change, and the ledger stays the matcher's mirror. The rules are enforced twice: here,
for clear errors, and by the database (triggers: no self-approval, two approvals before an
application; primary key: one application).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from workloads.ledger import payloads, rules
from workloads.ledger.errors import ApiError, Code
from workloads.ledger.funding import Funding, FundingRequest
from workloads.ledger.settings import Market

REVERSIBLE = (rules.KIND_FUNDING, rules.KIND_CORRECTION)


class Corrections:
    def __init__(
        self, pool: asyncpg.Pool, funding: Funding, markets: tuple[Market, ...], fee_account: str
    ) -> None:
        self.pool = pool
        self.funding = funding
        self.markets = markets
        self.fee_account = fee_account

    async def request(self, admin: str, body: dict[str, Any]) -> dict[str, Any]:
        payloads.only(
            body,
            {"correction_id", "kind", "symbol", "account", "asset", "amount", "reverses", "reason"},
        )
        kind = body.get("kind")
        correction_id = payloads.text(body, "correction_id", payloads.ID, required=False) or (
            f"c-{uuid.uuid4().hex[:16]}"
        )
        reason = body.get("reason")
        if not isinstance(reason, str) or not 1 <= len(reason) <= 500:
            raise ApiError(Code.INVALID_FIELD, "reason is required (1 to 500 characters)")
        async with self.pool.acquire() as conn, conn.transaction():
            if kind == "adjustment":
                market = payloads.market(self.markets, payloads.text(body, "symbol", payloads.ID))
                account = payloads.text(body, "account", payloads.USER)
                asset = payloads.asset_of(market, payloads.text(body, "asset", payloads.ASSET))
                amount = payloads.amount(body, "amount", signed=True)
                if not await conn.fetchval(
                    "SELECT 1 FROM accounts WHERE owner = $1 AND asset = $2", account, asset
                ):
                    raise ApiError(Code.UNKNOWN_ACCOUNT, f"no account {account} in {asset}")
                terms: tuple[str, str, str, int, str, str | None] = (
                    market.symbol,
                    account,
                    asset,
                    amount,
                    rules.CORRECTIONS,
                    None,
                )
            elif kind == "reversal":
                reference = payloads.text(body, "reverses", payloads.NAME)
                terms = await self._reversal_terms(conn, reference)
            else:
                raise ApiError(Code.INVALID_FIELD, "kind must be adjustment or reversal")
            symbol, account, asset, amount, counterparty, reverses = terms
            try:
                await conn.execute(
                    """INSERT INTO correction_requests (id, kind, market, account, asset, amount,
                           counterparty, reverses, reason, requested_by)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
                    correction_id,
                    kind,
                    symbol,
                    account,
                    asset,
                    amount,
                    counterparty,
                    reverses,
                    reason,
                    admin,
                )
            except asyncpg.UniqueViolationError as exc:
                if "reverses" in str(exc.constraint_name):
                    raise ApiError(
                        Code.ALREADY_REVERSED, f"{reverses} is already being reversed"
                    ) from None
                raise ApiError(
                    Code.IDEMPOTENCY_CONFLICT, f"correction {correction_id} exists"
                ) from None
        return await self.get(correction_id)

    async def _reversal_terms(
        self, conn: asyncpg.Connection, reference: str
    ) -> tuple[str, str, str, int, str, str]:
        tx = await conn.fetchrow(
            "SELECT id, kind, market FROM journal WHERE reference = $1", reference
        )
        if tx is None:
            raise ApiError(Code.UNKNOWN_REFERENCE, f"no journal entry {reference}")
        if tx["kind"] not in REVERSIBLE:
            raise ApiError(
                Code.NOT_REVERSIBLE,
                f"{reference} is a {tx['kind']} entry: only funding and correction entries are"
                " reversed; compensate a trade with an adjustment",
            )
        postings = await conn.fetch(
            """SELECT a.owner, a.asset, a.system, p.amount FROM postings p
                 JOIN accounts a ON a.id = p.account_id WHERE p.tx_id = $1 ORDER BY p.line""",
            tx["id"],
        )
        users = [p for p in postings if not p["system"]]
        systems = [p for p in postings if p["system"]]
        if len(users) != 1 or len(systems) != 1:
            raise ApiError(Code.NOT_REVERSIBLE, f"{reference} is not a single-account entry")
        user, system = users[0], systems[0]
        return (
            tx["market"],
            user["owner"],
            user["asset"],
            -user["amount"],
            system["owner"],
            reference,
        )

    async def approve(self, correction_id: str, admin: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._row(conn, correction_id)
            if row["requested_by"] == admin:
                raise ApiError(Code.SELF_APPROVAL, "an admin cannot approve their own correction")
            if await conn.fetchval(
                "SELECT 1 FROM correction_applications WHERE correction_id = $1", correction_id
            ):
                raise ApiError(Code.ALREADY_APPLIED, f"correction {correction_id} was applied")
            inserted = await conn.fetchval(
                """INSERT INTO correction_approvals (correction_id, admin) VALUES ($1, $2)
                   ON CONFLICT DO NOTHING RETURNING 1""",
                correction_id,
                admin,
            )
            if not inserted:
                raise ApiError(Code.ALREADY_APPROVED, f"{admin} already approved {correction_id}")
        return await self.get(correction_id)

    async def apply(self, correction_id: str, admin: str, wait: float) -> dict[str, Any]:
        funding_id = f"{rules.CORRECTION_FUNDING_PREFIX}{correction_id}"
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._row(conn, correction_id, lock=True)
            if await conn.fetchval(
                "SELECT 1 FROM correction_applications WHERE correction_id = $1", correction_id
            ):
                raise ApiError(Code.ALREADY_APPLIED, f"correction {correction_id} was applied")
            approvers = await conn.fetchval(
                """SELECT count(DISTINCT admin) FROM correction_approvals
                    WHERE correction_id = $1 AND admin <> $2""",
                correction_id,
                row["requested_by"],
            )
            if approvers < 2:
                raise ApiError(
                    Code.INSUFFICIENT_APPROVALS,
                    f"{correction_id} has {approvers} approval(s) by other admins; 2 are needed",
                )
            request = FundingRequest(
                funding_id,
                row["market"],
                row["account"],
                row["asset"],
                abs(row["amount"]),
                "credit" if row["amount"] > 0 else "debit",
                "correction",
                row["counterparty"],
                admin,
                row["reason"],
                correction_id,
            )
            try:
                await conn.execute(
                    """INSERT INTO correction_applications (correction_id, applied_by, funding_id)
                       VALUES ($1, $2, $3)""",
                    correction_id,
                    admin,
                    funding_id,
                )
            except asyncpg.UniqueViolationError:
                raise ApiError(
                    Code.ALREADY_APPLIED, f"correction {correction_id} was applied"
                ) from None
            await self.funding.store(conn, request)
        result = await self.funding.send(request)
        if result.status == "rejected":
            raise ApiError(
                Code.MATCHER_REJECTED,
                f"the matcher refused correction {correction_id}: {result.reject_reason}",
            )
        if result.status == "accepted" and result.seq is not None and wait > 0:
            await self.funding.booked(row["market"], result.seq, wait)
        return await self.get(correction_id)

    async def _row(self, conn: asyncpg.Connection, correction_id: str, lock: bool = False) -> Any:
        row = await conn.fetchrow(
            "SELECT * FROM correction_requests WHERE id = $1" + (" FOR UPDATE" if lock else ""),
            correction_id,
        )
        if row is None:
            raise ApiError(Code.UNKNOWN_CORRECTION, f"no correction {correction_id}")
        return row

    async def get(self, correction_id: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            row = await self._row(conn, correction_id)
            approvals = await conn.fetch(
                "SELECT admin, approved_at FROM correction_approvals WHERE correction_id = $1"
                " ORDER BY approved_at",
                correction_id,
            )
            applied = await conn.fetchrow(
                """SELECT a.applied_by, a.applied_at, a.funding_id, r.status, r.reject_reason,
                          r.seq
                     FROM correction_applications a
                     LEFT JOIN funding_results r USING (funding_id)
                    WHERE a.correction_id = $1""",
                correction_id,
            )
            journal = await conn.fetchrow(
                "SELECT id, reference FROM journal WHERE correction_id = $1", correction_id
            )
        others = {a["admin"] for a in approvals} - {row["requested_by"]}
        if journal is not None:
            status = "booked"
        elif applied is not None:
            status = {"accepted": "applied", "rejected": "rejected"}.get(
                applied["status"], "pending"
            )
        else:
            status = "approved" if len(others) >= 2 else "requested"
        return {
            "correction_id": row["id"],
            "kind": row["kind"],
            "status": status,
            "symbol": row["market"],
            "account": row["account"],
            "asset": row["asset"],
            "amount": str(row["amount"]),
            "counterparty": row["counterparty"],
            "reverses": row["reverses"],
            "reason": row["reason"],
            "requested_by": row["requested_by"],
            "requested_at": row["requested_at"].isoformat(),
            "approvals": [a["admin"] for a in approvals],
            "applied_by": applied["applied_by"] if applied else None,
            "funding_id": applied["funding_id"] if applied else None,
            "matcher_status": applied["status"] if applied else None,
            "reject_reason": applied["reject_reason"] if applied else None,
            "journal_id": journal["id"] if journal else None,
            "journal_reference": journal["reference"] if journal else None,
        }
