"""Deposits, withdrawals and correction legs: funding commands from the ledger to a matcher.

The matcher must know balances to accept orders, so every change of an available balance
that does not come from trading goes through the market's matcher as `ApplyFunding`, and
the ledger books it only when it consumes the resulting FundsCredited / FundsDebited event.
Neither lost nor double-booked, by construction:
1. the request is stored first (`funding_requests`, keyed by `funding_id`): an accepted
   request survives a crash;
2. it is sent with `funding_id` as the matcher's idempotency key; a request without an
   answer is resent every `LEDGER_FUNDING_RETRY_MS` with the same id, so the matcher
   applies it once, whether the earlier send was lost before or after it got there;
3. the money is booked by the settlement path, exactly once by event id, against the
   counterparty the request names (`@external` for deposits, `@corrections` for
   corrections); the matcher's answer (accepted, or rejected with its reason) is recorded.
The matcher remembers funding ids for its idempotency window (1,000,000 by default); a
request is resent only until it is answered, so in practice well within it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc

from contracts.v1 import common_pb2, funding_pb2, matcher_pb2
from workloads.ledger import metrics
from workloads.ledger.errors import ApiError, Code
from workloads.ledger.matchers import MatcherClients, NoMatcher

log = logging.getLogger(__name__)

_DIRECTIONS = {
    "credit": funding_pb2.FUNDING_DIRECTION_CREDIT,
    "debit": funding_pb2.FUNDING_DIRECTION_DEBIT,
}
_FIELDS = ("market", "account", "asset", "amount", "direction", "origin", "counterparty")


@dataclass(frozen=True)
class FundingRequest:
    funding_id: str
    market: str
    account: str
    asset: str
    amount: int  # > 0
    direction: str  # "credit" | "debit"
    origin: str  # "adjustment" | "correction"
    counterparty: str
    requested_by: str
    reason: str = ""
    correction_id: str | None = None


@dataclass(frozen=True)
class FundingResult:
    status: str  # "accepted" | "rejected" | "pending"
    reject_reason: str | None = None
    seq: int | None = None
    epoch: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reject_reason": self.reject_reason,
            "seq": self.seq,
            "epoch": self.epoch,
        }


PENDING = FundingResult("pending")


Refused = Callable[[asyncpg.Connection, "FundingRequest"], Awaitable[None]]


class Funding:
    def __init__(self, pool: asyncpg.Pool, matchers: MatcherClients, retry_ms: int) -> None:
        self.pool = pool
        self.matchers = matchers
        self.retry_ms = retry_ms
        self.on_refused: Refused | None = None
        """Runs in the transaction that records a matcher's refusal (a transfer's refund)."""

    async def store(self, conn: asyncpg.Connection, req: FundingRequest) -> bool:
        """Record the request (in the caller's transaction); False if it existed already,
        with the same terms (different terms: `idempotency_conflict`)."""
        row = await conn.fetchrow(
            """INSERT INTO funding_requests (funding_id, market, account, asset, amount,
                   direction, origin, counterparty, correction_id, requested_by, reason)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
               ON CONFLICT (funding_id) DO NOTHING RETURNING funding_id""",
            req.funding_id,
            req.market,
            req.account,
            req.asset,
            req.amount,
            req.direction,
            req.origin,
            req.counterparty,
            req.correction_id,
            req.requested_by,
            req.reason,
        )
        if row is not None:
            return True
        existing = await conn.fetchrow(
            "SELECT * FROM funding_requests WHERE funding_id = $1", req.funding_id
        )
        if existing is None or any(existing[f] != getattr(req, f) for f in _FIELDS):
            raise ApiError(
                Code.IDEMPOTENCY_CONFLICT,
                f"{req.funding_id} was already used for a different request",
            )
        return False

    async def result(self, funding_id: str) -> FundingResult | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM funding_results WHERE funding_id = $1", funding_id
        )
        if row is None:
            return None
        return FundingResult(row["status"], row["reject_reason"], row["seq"], row["epoch"])

    async def send(self, req: FundingRequest) -> FundingResult:
        """Send (or resend) the command; record and return the matcher's answer."""
        known = await self.result(req.funding_id)
        if known is not None:
            return known
        command = funding_pb2.FundingCommand(
            funding_id=req.funding_id,
            account=req.account,
            asset=req.asset,
            amount=req.amount,
            direction=_DIRECTIONS[req.direction],
            correlation_id=req.funding_id,
        )
        try:
            reply = await self.matchers.fund(req.market, command)
        except (grpc.aio.AioRpcError, NoMatcher) as exc:
            metrics.FUNDING_SENT.labels("unanswered").inc()
            log.warning(
                "funding not answered; will resend",
                extra={"funding_id": req.funding_id, "why": repr(exc)},
            )
            return PENDING
        result = _result(reply)
        metrics.FUNDING_SENT.labels(result.status).inc()
        async with self.pool.acquire() as conn, conn.transaction():
            recorded = await conn.fetchval(
                """INSERT INTO funding_results (funding_id, status, reject_reason, seq, epoch)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (funding_id) DO NOTHING
                   RETURNING 1""",
                req.funding_id,
                result.status,
                result.reject_reason,
                result.seq,
                result.epoch,
            )
            if recorded and result.status == "rejected" and self.on_refused is not None:
                await self.on_refused(conn, req)
        return result

    async def resend_pending(self) -> int:
        rows = await self.pool.fetch(
            """SELECT r.* FROM funding_requests r
                LEFT JOIN funding_results x USING (funding_id)
               WHERE x.funding_id IS NULL AND r.created_at < now() - make_interval(secs => $1)
               ORDER BY r.created_at LIMIT 1000""",
            self.retry_ms / 1000,
        )
        for row in rows:
            await self.send(request_from_row(row))
        return len(rows)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.retry_ms / 1000)
            try:
                await self.resend_pending()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("funding resend failed", extra={"why": repr(exc)})

    async def booked(self, market: str, seq: int, wait: float) -> int | None:
        """The journal id of the funding event at `seq` once settled; None after `wait` s."""
        reference = f"{market}:{seq}:0"
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            tx = await self.pool.fetchval("SELECT id FROM journal WHERE reference = $1", reference)
            if tx is not None or asyncio.get_running_loop().time() >= deadline:
                return int(tx) if tx is not None else None
            await asyncio.sleep(0.05)


def request_from_row(row: Any) -> FundingRequest:
    return FundingRequest(
        row["funding_id"],
        row["market"],
        row["account"],
        row["asset"],
        row["amount"],
        row["direction"],
        row["origin"],
        row["counterparty"],
        row["requested_by"],
        row["reason"],
        row["correction_id"],
    )


def _result(reply: matcher_pb2.CommandReply) -> FundingResult:
    reason = reply.reject_reason
    rejected = reply.status == matcher_pb2.COMMAND_STATUS_REJECTED or (
        reply.status == matcher_pb2.COMMAND_STATUS_DUPLICATE and reason
    )
    if rejected:
        name = common_pb2.RejectReason.Name(reason)
        return FundingResult("rejected", name, reply.seq or None, reply.epoch)
    return FundingResult("accepted", None, reply.seq, reply.epoch)
