"""Invariant checks and the balance rebuild.

Checks (endpoint and periodic job):
- `asset_sums_zero`: postings of every asset sum to zero (double entry, over all time);
- `balances_sum_zero`: so do the materialized balances;
- `no_negative_balances`: no available, hold or wallet below zero, except system accounts
  (counterparties such as `@external`, and the fee account);
- `holds_consistent`: each account's hold equals the sum of its per-market holds;
- `holds_match_reservations`: per market with a matcher, the ledger's holds equal what the
  matcher's open orders reserve (GetReservations), compared only at the same seq, in one
  database snapshot; a difference must persist over re-reads to count (a batch split in the
  middle of a command would otherwise look like one for a few milliseconds).

The rebuild recomputes balances and per-market holds from the postings, reports every
difference from the materialized tables and, when asked, repairs them (under the settlement
lock, so no batch interleaves).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import grpc

from workloads.ledger import metrics
from workloads.ledger.matchers import MatcherClients
from workloads.ledger.settings import Market
from workloads.ledger.store import APPLY_LOCK

ALIGN_ATTEMPTS = 20
ALIGN_DELAY = 0.05
CONFIRMATIONS = 3


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""
    items: tuple[dict[str, Any], ...] = ()
    markets: tuple[str, ...] = ()
    """Markets the failure concerns (all markets for ledger-wide failures)."""


@dataclass(frozen=True)
class InvariantReport:
    ok: bool
    checked_at: float
    checks: tuple[CheckResult, ...]

    def failed(self, allow_negative: bool = False) -> list[CheckResult]:
        return [
            c
            for c in self.checks
            if not c.ok and not (allow_negative and c.name == "no_negative_balances")
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked_at": self.checked_at,
            "checks": [
                {**asdict(c), "items": list(c.items), "markets": list(c.markets)}
                for c in self.checks
            ],
        }


@dataclass
class Invariants:
    pool: asyncpg.Pool
    matchers: MatcherClients
    markets: tuple[Market, ...]
    last: InvariantReport | None = field(default=None, init=False)

    async def check(self) -> InvariantReport:
        everywhere = tuple(m.symbol for m in self.markets)
        checks: list[CheckResult] = []
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            checks.append(await _sums(conn, "asset_sums_zero", _POSTING_SUMS, everywhere))
            checks.append(await _sums(conn, "balances_sum_zero", _BALANCE_SUMS, everywhere))
            negative = [dict(r) for r in await conn.fetch(_NEGATIVE)]
            checks.append(
                CheckResult(
                    "no_negative_balances",
                    not negative,
                    f"{len(negative)} account(s) below zero" if negative else "",
                    tuple(negative[:20]),
                    everywhere if negative else (),
                )
            )
            split = [dict(r) for r in await conn.fetch(_HOLDS_SPLIT)]
            checks.append(
                CheckResult(
                    "holds_consistent",
                    not split,
                    f"{len(split)} account(s) whose hold != sum of market holds" if split else "",
                    tuple(split[:20]),
                    everywhere if split else (),
                )
            )
        for market in self.markets:
            if self.matchers.has(market.symbol):
                checks.append(await self._reservations(market))
        report = InvariantReport(all(c.ok for c in checks), time.time(), tuple(checks))
        for c in checks:
            if not c.ok:
                metrics.INVARIANT_FAILURES.labels(c.name).inc()
        self.last = report
        return report

    async def _reservations(self, market: Market) -> CheckResult:
        name = "holds_match_reservations"
        symbol = market.symbol
        diffs: list[dict[str, Any]] = []
        confirmed = 0
        for _ in range(ALIGN_ATTEMPTS):
            try:
                reservations = await self.matchers.reservations(symbol)
            except grpc.aio.AioRpcError as exc:
                return CheckResult(
                    name, True, f"{symbol}: skipped, matcher unreachable ({exc.code().name})"
                )
            async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                applied = await conn.fetchval(
                    "SELECT applied_seq FROM market_state WHERE market = $1", symbol
                )
                if (applied or 0) != reservations.seq:
                    await asyncio.sleep(ALIGN_DELAY)
                    continue
                rows = await conn.fetch(_MARKET_HOLDS, symbol)
            ledger = {(r["owner"], r["asset"]): r["amount"] for r in rows}
            expected: dict[tuple[str, str], int] = {}
            for a in reservations.accounts:
                if a.base_hold:
                    expected[(a.account, reservations.base_asset)] = a.base_hold
                if a.quote_hold:
                    expected[(a.account, reservations.quote_asset)] = a.quote_hold
            diffs = [
                {
                    "market": symbol,
                    "account": k[0],
                    "asset": k[1],
                    "ledger_hold": ledger.get(k, 0),
                    "matcher_reserved": expected.get(k, 0),
                }
                for k in sorted(set(ledger) | set(expected))
                if ledger.get(k, 0) != expected.get(k, 0)
            ]
            if not diffs:
                return CheckResult(name, True, f"{symbol}: equal at seq {reservations.seq}")
            confirmed += 1
            if confirmed >= CONFIRMATIONS:
                return CheckResult(
                    name,
                    False,
                    f"{symbol}: {len(diffs)} hold(s) differ from the matcher's reservations",
                    tuple(diffs[:20]),
                    (symbol,),
                )
            await asyncio.sleep(ALIGN_DELAY)
        return CheckResult(name, True, f"{symbol}: skipped, ledger and matcher never at one seq")

    async def rebuild(self, repair: bool) -> dict[str, Any]:
        """Balances and market holds from postings vs the materialized ones."""
        # Repairing holds the settlement lock, and reads after taking it (read committed):
        # a repeatable-read snapshot would be taken before the lock and could be stale.
        isolation = "read_committed" if repair else "repeatable_read"
        async with self.pool.acquire() as conn, conn.transaction(isolation=isolation):
            if repair:
                await conn.execute(APPLY_LOCK)
            accounts = await conn.fetchval("SELECT count(*) FROM accounts")
            balance_diffs = [dict(r) for r in await conn.fetch(_REBUILD_BALANCES)]
            hold_diffs = [dict(r) for r in await conn.fetch(_REBUILD_HOLDS)]
            repaired = False
            if repair and (balance_diffs or hold_diffs):
                await _repair(conn, balance_diffs, hold_diffs)
                repaired = True
        return {
            "accounts": accounts,
            "consistent": not balance_diffs and not hold_diffs,
            "differences": balance_diffs,
            "market_hold_differences": hold_diffs,
            "repaired": repaired,
        }


async def _sums(
    conn: asyncpg.Connection, name: str, sql: str, markets: Sequence[str]
) -> CheckResult:
    bad = [dict(r) for r in await conn.fetch(sql)]
    detail = ", ".join(f"{r['asset']} sums to {r['total']}" for r in bad)
    return CheckResult(name, not bad, detail, tuple(bad), tuple(markets) if bad else ())


async def _repair(
    conn: asyncpg.Connection,
    balance_diffs: list[dict[str, Any]],
    hold_diffs: list[dict[str, Any]],
) -> None:
    if balance_diffs:
        await conn.execute(
            """UPDATE balances b SET available = d.a, hold = d.h, wallet = d.w,
                                     version = b.version + 1, updated_at = now()
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
                      AS d(id, a, h, w)
                WHERE b.account_id = d.id""",
            [d["account_id"] for d in balance_diffs],
            [d["rebuilt_available"] for d in balance_diffs],
            [d["rebuilt_hold"] for d in balance_diffs],
            [d["rebuilt_wallet"] for d in balance_diffs],
        )
    if hold_diffs:
        await conn.execute(
            """INSERT INTO market_holds AS m (market, account_id, amount)
               SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
               ON CONFLICT (market, account_id) DO UPDATE SET amount = EXCLUDED.amount""",
            [d["market"] for d in hold_diffs],
            [d["account_id"] for d in hold_diffs],
            [d["rebuilt"] for d in hold_diffs],
        )


_POSTING_SUMS = """
SELECT asset, sum(amount)::text AS total FROM postings GROUP BY asset HAVING sum(amount) <> 0
"""
_BALANCE_SUMS = """
SELECT a.asset, sum(b.available::numeric + b.hold + b.wallet)::text AS total
  FROM balances b JOIN accounts a ON a.id = b.account_id
 GROUP BY a.asset HAVING sum(b.available::numeric + b.hold + b.wallet) <> 0
"""
_NEGATIVE = """
SELECT a.owner AS account, a.asset, b.available, b.hold, b.wallet
  FROM balances b JOIN accounts a ON a.id = b.account_id
 WHERE NOT a.system AND (b.available < 0 OR b.hold < 0 OR b.wallet < 0)
 ORDER BY a.owner, a.asset
"""
_HOLDS_SPLIT = """
SELECT a.owner AS account, a.asset, b.hold, coalesce(m.total, 0) AS market_holds
  FROM balances b JOIN accounts a ON a.id = b.account_id
  LEFT JOIN (SELECT account_id, sum(amount)::bigint AS total FROM market_holds
              GROUP BY account_id) m ON m.account_id = b.account_id
 WHERE b.hold <> coalesce(m.total, 0)
"""
_MARKET_HOLDS = """
SELECT a.owner, a.asset, h.amount
  FROM market_holds h JOIN accounts a ON a.id = h.account_id
 WHERE h.market = $1 AND h.amount <> 0
"""
_REBUILD_BALANCES = """
WITH p AS (
    SELECT account_id,
           coalesce(sum(amount) FILTER (WHERE bucket = 'available'), 0)::bigint AS a,
           coalesce(sum(amount) FILTER (WHERE bucket = 'hold'), 0)::bigint AS h,
           coalesce(sum(amount) FILTER (WHERE bucket = 'wallet'), 0)::bigint AS w
      FROM postings GROUP BY account_id
)
SELECT acc.id AS account_id, acc.owner AS account, acc.asset,
       coalesce(p.a, 0) AS rebuilt_available, coalesce(p.h, 0) AS rebuilt_hold,
       coalesce(p.w, 0) AS rebuilt_wallet,
       b.available AS materialized_available, b.hold AS materialized_hold,
       b.wallet AS materialized_wallet
  FROM accounts acc
  JOIN balances b ON b.account_id = acc.id
  LEFT JOIN p ON p.account_id = acc.id
 WHERE coalesce(p.a, 0) <> b.available OR coalesce(p.h, 0) <> b.hold
    OR coalesce(p.w, 0) <> b.wallet
 ORDER BY acc.owner, acc.asset
"""
_REBUILD_HOLDS = """
WITH p AS (
    SELECT j.market, p.account_id, sum(p.amount)::bigint AS total
      FROM postings p JOIN journal j ON j.id = p.tx_id
     WHERE p.bucket = 'hold'
     GROUP BY j.market, p.account_id
)
SELECT coalesce(p.market, m.market) AS market, coalesce(p.account_id, m.account_id) AS account_id,
       coalesce(p.total, 0) AS rebuilt, coalesce(m.amount, 0) AS materialized
  FROM p FULL JOIN market_holds m ON m.market = p.market AND m.account_id = p.account_id
 WHERE coalesce(p.total, 0) <> coalesce(m.amount, 0)
 ORDER BY 1, 2
"""
