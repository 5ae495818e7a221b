"""The settlement transaction: a batch of events applied exactly once, in one DB transaction.

Per batch, whatever its size, a fixed handful of round trips (PERFORMANCE.md: batching is
what makes PostgreSQL settle tens of thousands of trades per second):
1. a transaction-scoped advisory lock: one writer per ledger schema, so replicas and the
   HTTP injection path never interleave (and never deadlock on balance rows);
2. the markets' cursors; each event is classified (apply, duplicate, stale epoch, gap);
3. new accounts (and their balance rows), in one statement;
4. journal rows by binary COPY, ids assigned under the lock; the unique event id and trade
   id are the exactly-once guarantee, inside this transaction (a conflict falls back to
   `INSERT ... ON CONFLICT DO NOTHING RETURNING`, which writes exactly the new rows);
5. postings by binary COPY (the double-entry trigger checks them once per statement);
6. balance and per-market hold deltas, aggregated per account, set-based (one UPDATE per
   table from arrays);
7. the cursors (and parked events behind a gap).
Kafka offsets are committed by the caller only after this transaction commits.

Two ways in: `execute` writes a plan computed ahead (`plan.plan`) in five round trips and
checks, under the lock and before the commit, that the database is what the plan assumed
(else `PlanRejected`, nothing kept); `apply_batch` does all of it inside the transaction,
including what plans decline (gaps, parking, funding counterparties, new accounts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import asyncpg

from workloads.ledger import rules
from workloads.ledger.cursor import Cursor, Verdict
from workloads.ledger.plan import Outcome, Plan, Rows, rows
from workloads.ledger.rules import Entry, FundingOrigin, Incoming

PLAN_REFUSED = "LP001"
"""SQLSTATE of `ledger_apply_plan` when the database is not what a plan assumed."""
APPLY_LOCK = "SELECT pg_advisory_xact_lock(hashtext('exchange-ledger-apply:' || current_schema()))"

_LOAD_CURSORS = """
SELECT market, applied_seq, applied_index, max_epoch, stalled, stall_reason, stale_rejected
  FROM market_state WHERE market = ANY($1::text[])
"""
_NEW_ACCOUNTS = """
WITH k AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bool[]) AS k(owner, asset, system)),
new AS (
    INSERT INTO accounts (owner, asset, system) SELECT owner, asset, system FROM k
    ON CONFLICT (owner, asset) DO NOTHING RETURNING id, owner, asset
),
bal AS (INSERT INTO balances (account_id) SELECT id FROM new)
SELECT id, owner, asset FROM new
UNION ALL
SELECT a.id, a.owner, a.asset FROM accounts a JOIN k USING (owner, asset)
"""
_JOURNAL_COLUMNS = (
    "id",
    "kind",
    "reference",
    "market",
    "seq",
    "epoch",
    "trade_id",
    "correction_id",
    "occurred_at",
)
_NEXT_ID = "SELECT coalesce(max(id), 0) + 1 FROM journal"
# The transaction's start and the lock in one round trip (the simple query protocol).
BEGIN_LOCKED = f"BEGIN; {APPLY_LOCK}"
# A plan's check, then its balance, hold and cursor updates (migration 0002).
_APPLY_PLAN = f"SELECT ledger_apply_plan({', '.join(f'${i}' for i in range(1, 22))})"
# Balance and market hold deltas, and the cursors, in one round trip.
_AFTER_BATCH = """
SELECT ledger_after_batch($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[],
                          $6::bigint[], $7::text[], $8::bigint[], $9::int[], $10::bigint[],
                          $11::bool[], $12::text[], $13::bigint[])
"""
_JOURNAL = """
INSERT INTO journal (id, kind, reference, market, seq, epoch, trade_id, correction_id,
                     occurred_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                     $6::bigint[], $7::text[], $8::text[], $9::bigint[])
ON CONFLICT DO NOTHING
RETURNING id, reference
"""
_POSTING_COLUMNS = ("tx_id", "line", "account_id", "asset", "bucket", "amount")
_ORIGINS = """
SELECT funding_id, counterparty, origin, direction, correction_id
  FROM funding_requests WHERE funding_id = ANY($1::text[])
"""
_WALLET_DELTAS = """
UPDATE balances b SET wallet = b.wallet + d.w, version = b.version + 1, updated_at = now()
  FROM unnest($1::bigint[], $2::bigint[]) AS d(id, w) WHERE b.account_id = d.id
"""
_PARK = """
INSERT INTO parked_events (market, seq, idx, event_id, payload)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::text[], $5::bytea[])
ON CONFLICT DO NOTHING
"""
_PARKED = """
SELECT payload FROM parked_events WHERE market = $1 ORDER BY seq, idx
"""
_UNPARK = """
DELETE FROM parked_events p USING unnest($1::text[], $2::bigint[], $3::int[]) AS d(m, s, i)
 WHERE p.market = d.m AND p.seq = d.s AND p.idx = d.i
"""


class _Batch(NamedTuple):
    outcomes: list[Outcome]
    accepted: list[tuple[int, Incoming]]  # (position in the batch, or -1 if parked before)
    parked: list[tuple[int, Incoming]]  # to park now: behind a gap
    unpark: list[Incoming]  # parked before, settled now


class BatchResult(NamedTuple):
    outcomes: list[Outcome]
    cursors: dict[str, Cursor]  # after the batch, for its markets
    new_accounts: dict[tuple[str, str], int]
    postings: int
    next_id: int  # the next free journal id
    stale: dict[str, int]  # market -> events rejected for a stale epoch
    gaps: list[str]  # markets that stalled in this batch


class PlanRejected(Exception):
    """The database is not what the plan assumed (another writer, a conflict): nothing was
    written; the batch must take the full path."""


class AccountCache:
    """(owner, asset) -> account id. Accounts are never deleted, so a cached id stays true;
    ids created by a transaction are added only once it has committed."""

    def __init__(self, fee_account: str) -> None:
        self.fee_account = fee_account
        self.ids: dict[tuple[str, str], int] = {}

    async def resolve(
        self, conn: asyncpg.Connection, keys: Iterable[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """(ids of all `keys`, the ids not cached before)."""
        ids = self.ids
        missing = [k for k in set(keys) if k not in ids]
        if not missing:
            return ids, {}
        owners = [k[0] for k in missing]
        assets = [k[1] for k in missing]
        systems = [rules.is_system(o, self.fee_account) for o in owners]
        rows = await conn.fetch(_NEW_ACCOUNTS, owners, assets, systems)
        found = {(r["owner"], r["asset"]): r["id"] for r in rows}
        if len(found) != len(missing):
            raise RuntimeError(f"accounts not resolved: {sorted(set(missing) - set(found))}")
        return {**ids, **found}, found

    def commit(self, new: dict[tuple[str, str], int]) -> None:
        self.ids.update(new)


def cursor_from_row(row: Any) -> Cursor:
    return Cursor(
        row["market"],
        row["applied_seq"],
        row["applied_index"],
        row["max_epoch"],
        row["stalled"],
        row["stall_reason"],
        row["stale_rejected"],
    )


async def load_cursors(conn: asyncpg.Connection, markets: Sequence[str]) -> dict[str, Cursor]:
    rows = await conn.fetch(_LOAD_CURSORS, list(markets))
    cursors = {m: Cursor(m) for m in markets}
    cursors.update({r["market"]: cursor_from_row(r) for r in rows})
    return cursors


async def execute(conn: asyncpg.Connection, plan: Plan) -> BatchResult:
    """Write a plan made ahead, if the database is as it assumed; else `PlanRejected`.

    Five round trips, whatever the batch's size (each waits for the event loop, which is
    busy planning ahead): the transaction's start with the lock, the journal and the
    postings by COPY, the check with the balance, hold and cursor updates
    (`ledger_apply_plan`), the commit. No savepoint: a conflicting event or trade id aborts
    the whole transaction, and the batch takes the full path, which writes exactly the new
    rows."""
    changed = [c for m, c in plan.after.items() if c != plan.before[m]]
    before = list(plan.before.values())
    try:
        await conn.execute(BEGIN_LOCKED)
        if plan.rows.journal:
            await _copy_journal(conn, plan.rows)
            await conn.copy_records_to_table(
                "postings", records=plan.rows.postings, columns=_POSTING_COLUMNS
            )
        await conn.execute(
            _APPLY_PLAN,
            *_cursor_columns(before),
            plan.next_id,
            *_delta_columns(plan.rows),
            *_cursor_columns(changed),
        )
        await conn.execute("COMMIT")
    except BaseException as exc:
        await _rollback(conn)
        if isinstance(exc, asyncpg.UniqueViolationError):
            raise PlanRejected("an event or trade id exists already") from None
        if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate == PLAN_REFUSED:
            raise PlanRejected(str(exc)) from None
        raise
    return BatchResult(
        plan.outcomes, plan.after, {}, len(plan.rows.postings), plan.next_id, plan.stale, []
    )


async def _rollback(conn: asyncpg.Connection) -> None:
    """End a failed transaction if the connection can still say so; a broken connection is
    closed by the caller, which ends it on the server."""
    if not conn.is_closed() and conn.is_in_transaction():
        with contextlib.suppress(Exception):
            await conn.execute("ROLLBACK")


def _delta_columns(written: Rows) -> tuple[list[Any], ...]:
    available, hold = written.available, written.hold
    accounts = list(available.keys() | hold.keys())
    markets: list[str] = []
    holders: list[int] = []
    amounts: list[int] = []
    for market, deltas in written.holds.items():
        markets += [market] * len(deltas)
        holders += deltas.keys()
        amounts += deltas.values()
    return (
        accounts,
        [available.get(a, 0) for a in accounts],
        [hold.get(a, 0) for a in accounts],
        markets,
        holders,
        amounts,
    )


def _cursor_columns(changed: list[Cursor]) -> tuple[list[Any], ...]:
    return (
        [c.market for c in changed],
        [c.seq for c in changed],
        [c.idx for c in changed],
        [c.max_epoch for c in changed],
        [c.stalled for c in changed],
        [c.stall_reason for c in changed],
        [c.stale_rejected for c in changed],
    )


async def apply_batch(
    conn: asyncpg.Connection, items: Sequence[Incoming], accounts: AccountCache
) -> BatchResult:
    """Apply `items` (in order) in one transaction, deciding everything inside it."""
    async with conn.transaction():
        await conn.execute(APPLY_LOCK)
        markets = sorted({item.market for item in items})
        before = await load_cursors(conn, markets)
        cursors = dict(before)
        batch = _Batch([Outcome(Verdict.DUPLICATE)] * len(items), [], [], [])
        outcomes, accepted, parked = batch.outcomes, batch.accepted, batch.parked
        stale: dict[str, int] = {}
        for i, item in enumerate(items):
            market = item.market
            cursor = cursors[market]
            verdict = cursor.classify(item.seq, item.idx, item.epoch)
            if verdict is Verdict.APPLY and not cursor.stalled:
                cursors[market] = cursor.advance(item.seq, item.idx, item.epoch)
                accepted.append((i, item))
            elif verdict is Verdict.GAP or verdict is Verdict.APPLY:
                # Behind a gap, or after one: a stalled market applies only through the
                # ordered drain below, which sees everything parked so far. (The next seq's
                # first event looks contiguous even when the current command's last events
                # are missing; parked ones of the current command give that away.)
                cursors[market] = cursor.stall(item.seq, item.idx)
                parked.append((i, item))
                outcomes[i] = Outcome(Verdict.GAP)
            elif verdict is Verdict.STALE_EPOCH:
                cursors[market] = cursor.rejected_stale()
                outcomes[i] = Outcome(Verdict.STALE_EPOCH)
                stale[market] = stale.get(market, 0) + 1
        for market in markets:
            if cursors[market].stalled:
                await _drain(conn, market, cursors, accounts.fee_account, batch, stale)
        unpark = batch.unpark
        gaps = [m for m in markets if not before[m].stalled and cursors[m].stalled]

        entries = [item.entry for _, item in accepted if item.entry is not None]
        tx_ids, new_accounts, postings, next_id = await book(conn, entries, accounts)
        for i, item in accepted:
            tx = tx_ids.get(item.entry.reference) if item.entry is not None else None
            verdict = Verdict.DUPLICATE if item.entry is not None and tx is None else Verdict.APPLY
            if i >= 0:
                outcomes[i] = Outcome(verdict, tx)
        if parked:
            await conn.execute(
                _PARK,
                [p.market for _, p in parked],
                [p.seq for _, p in parked],
                [p.idx for _, p in parked],
                [p.event_id for _, p in parked],
                [p.payload for _, p in parked],
            )
        if unpark:
            await conn.execute(
                _UNPARK,
                [p.market for p in unpark],
                [p.seq for p in unpark],
                [p.idx for p in unpark],
            )
        await _save_cursors(conn, [c for m, c in cursors.items() if c != before[m]])
    return BatchResult(outcomes, cursors, new_accounts, postings, next_id, stale, gaps)


async def _save_cursors(conn: asyncpg.Connection, changed: list[Cursor]) -> None:
    if changed:
        await conn.execute(_AFTER_BATCH, *([] for _ in range(6)), *_cursor_columns(changed))


async def _drain(
    conn: asyncpg.Connection,
    market: str,
    cursors: dict[str, Cursor],
    fee_account: str,
    batch: _Batch,
    stale: dict[str, int],
) -> None:
    """Apply what a stalled market's parked events allow now, in order; stop at a gap.

    Candidates are the events parked earlier (in the database) and those parked by this
    batch. Events that become applicable leave the parked set, so do those that turned out
    to be duplicates; when none is left, the stall ends.
    """
    stored = [rules.decode(r["payload"], fee_account) for r in await conn.fetch(_PARKED, market)]
    fresh = [(i, p) for i, p in batch.parked if p.market == market]
    candidates = sorted([(-1, p) for p in stored] + fresh, key=lambda c: (c[1].seq, c[1].idx, c[0]))
    cursor = cursors[market]
    settled: set[int] = set()  # positions of this batch's items that are no longer parked
    remaining = 0
    for position, item in candidates:
        verdict = cursor.classify(item.seq, item.idx, item.epoch)
        if verdict is Verdict.GAP or (remaining and verdict is Verdict.APPLY):
            remaining += 1  # everything after the first gap stays parked
            continue
        if position < 0:
            batch.unpark.append(item)
        else:
            settled.add(position)
        if verdict is Verdict.APPLY:
            cursor = cursor.advance(item.seq, item.idx, item.epoch)
            batch.accepted.append((position, item))
        elif position >= 0:
            batch.outcomes[position] = Outcome(verdict)
            if verdict is Verdict.STALE_EPOCH:
                cursor = cursor.rejected_stale()
                stale[market] = stale.get(market, 0) + 1
    if settled:
        batch.parked[:] = [(i, p) for i, p in batch.parked if i not in settled]
    cursors[market] = cursor if remaining else cursor.unstall()


async def book(
    conn: asyncpg.Connection, entries: list[Entry], accounts: AccountCache
) -> tuple[dict[str, int], dict[tuple[str, str], int], int, int]:
    """Write the journal rows, postings and balance deltas of `entries`.

    Returns the journal ids of the entries written (an entry missing from it was a
    duplicate), the accounts created, the number of postings and the next free journal id.
    """
    first = int(await conn.fetchval(_NEXT_ID))
    if not entries:
        return {}, {}, 0, first
    funding_ids = [e.funding_id for e in entries if e.funding_id]
    if funding_ids:
        entries = await _with_origins(conn, entries, funding_ids)
    ids, new_accounts = await accounts.resolve(
        conn, {(p[0], p[1]) for e in entries for p in e.postings}
    )
    tx_ids = range(first, first + len(entries))
    written = rows(entries, tx_ids, ids)
    try:
        async with conn.transaction():
            await _copy_journal(conn, written)
    except asyncpg.UniqueViolationError:
        # COPY cannot skip a conflict: write exactly the new rows, and only their postings.
        returned = await conn.fetch(_JOURNAL, *zip(*written.journal, strict=True))
        fresh = {r["reference"]: r["id"] for r in returned}
        kept = [(e, tx) for e, tx in zip(entries, tx_ids, strict=True) if e.reference in fresh]
        written = rows([e for e, _ in kept], [tx for _, tx in kept], ids)
    await _write(conn, written)
    ids_by_reference = {row[2]: row[0] for row in written.journal}
    return ids_by_reference, new_accounts, len(written.postings), first + len(entries)


async def _copy_journal(conn: asyncpg.Connection, written: Rows) -> None:
    await conn.copy_records_to_table("journal", records=written.journal, columns=_JOURNAL_COLUMNS)


async def _write(conn: asyncpg.Connection, written: Rows) -> None:
    """Postings (the journal rows are in already), then balance and market hold deltas."""
    if not written.postings:
        return
    await conn.copy_records_to_table("postings", records=written.postings, columns=_POSTING_COLUMNS)
    await conn.execute(_AFTER_BATCH, *_delta_columns(written), *_cursor_columns([]))
    if written.wallet:
        await conn.execute(_WALLET_DELTAS, list(written.wallet), list(written.wallet.values()))


async def _with_origins(
    conn: asyncpg.Connection, entries: list[Entry], funding_ids: list[str]
) -> list[Entry]:
    """Re-point funding entries at the counterparty of the ledger's own funding request."""
    origins = {r["funding_id"]: origin_of(r) for r in await conn.fetch(_ORIGINS, funding_ids)}
    if not origins:
        return entries
    out: list[Entry] = []
    for e in entries:
        origin = origins.get(e.funding_id) if e.funding_id else None
        out.append(rules.with_origin(e, origin) if origin is not None else e)
    return out


def origin_of(request: Any) -> FundingOrigin:
    """The other side of a funding request's event. A transfer into a market settles
    against `@transfers` (its wallet side was booked when it was asked); one out of a market
    lands in the account's own wallet."""
    origin = request["origin"]
    if origin == "transfer":
        if request["direction"] == "debit":
            return FundingOrigin(request["counterparty"], rules.KIND_TRANSFER, None, rules.WALLET)
        return FundingOrigin(request["counterparty"], rules.KIND_TRANSFER, None)
    kind = rules.KIND_CORRECTION if origin == "correction" else rules.KIND_FUNDING
    return FundingOrigin(request["counterparty"], kind, request["correction_id"])
