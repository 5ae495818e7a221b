"""Settlement plans: everything a batch will write, computed without the database. Pure.

Why: Python's share of settling a batch (classifying events, resolving accounts, building
journal rows, postings and balance deltas) is as large as PostgreSQL's. Computed ahead, for
batch N+1 while batch N is in the database, it leaves the critical path.

A plan is optimistic: it assumes the cursors the applier predicts (as they will be after the
batches planned before it), accounts already known, and journal ids from a predicted next
id. The writer checks those assumptions inside the transaction, under the settlement lock
(`store.execute`); if any does not hold, the batch goes through the full path instead
(`store.apply_batch`). The full path also handles everything a plan declines: a gap or a
stalled market (parking), funding (its counterparty is in the database), new accounts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from workloads.ledger.cursor import Cursor, Verdict, classify
from workloads.ledger.rules import AVAILABLE, HOLD, Entry, Incoming

Posting = tuple[int, int, int, str, str, int]  # tx_id, line, account_id, asset, bucket, amount
JournalRow = tuple[int, str, str, str, int, int, str | None, str | None, int]


class Outcome(NamedTuple):
    verdict: Verdict
    tx_id: int | None = None


class Rows(NamedTuple):
    """What a batch writes, in the shape of its statements."""

    journal: list[JournalRow]
    postings: list[Posting]
    available: dict[int, int]  # account id -> available delta
    hold: dict[int, int]  # account id -> hold delta
    holds: dict[str, dict[int, int]]  # market -> account id -> hold delta
    wallet: dict[int, int]  # account id -> wallet delta (transfers only: never in a plan)


class Plan(NamedTuple):
    outcomes: list[Outcome]
    before: dict[str, Cursor]  # what the plan assumed, per market of the batch
    after: dict[str, Cursor]
    first_id: int
    next_id: int
    rows: Rows
    stale: dict[str, int]  # market -> events rejected for a stale epoch


_APPLIED = Outcome(Verdict.APPLY)
_DUPLICATE = Outcome(Verdict.DUPLICATE)
_STALE = Outcome(Verdict.STALE_EPOCH)


def rows(
    entries: Sequence[Entry], tx_ids: Sequence[int], ids: Mapping[tuple[str, str], int]
) -> Rows:
    """Journal rows, postings and balance deltas of `entries`, with their journal ids
    (KeyError: an account missing from `ids`). The innermost loop of settlement: it runs
    for every posting, so it unpacks tuples and keeps one flat dict per delta."""
    journal: list[JournalRow] = []
    postings: list[Posting] = []
    add_entry = journal.append
    add = postings.append
    available: dict[int, int] = {}
    hold: dict[int, int] = {}
    holds: dict[str, dict[int, int]] = {}
    wallet: dict[int, int] = {}
    for entry, tx in zip(entries, tx_ids, strict=True):
        reference, kind, market, seq, epoch, occurred_at, lines, trade_id, correction_id, _ = entry
        add_entry((tx, kind, reference, market, seq, epoch, trade_id, correction_id, occurred_at))
        market_holds = holds.get(market)
        line = 0
        for owner, asset, bucket, amount in lines:
            account = ids[(owner, asset)]
            add((tx, line, account, asset, bucket, amount))
            line += 1  # noqa: SIM113  (cheaper than enumerate in the hottest loop)
            if bucket == HOLD:
                hold[account] = hold.get(account, 0) + amount
                if market_holds is None:
                    market_holds = holds[market] = {}
                market_holds[account] = market_holds.get(account, 0) + amount
            elif bucket == AVAILABLE:
                available[account] = available.get(account, 0) + amount
            else:
                wallet[account] = wallet.get(account, 0) + amount
    return Rows(journal, postings, available, hold, holds, wallet)


def plan(
    items: Sequence[Incoming],
    cursors: Mapping[str, Cursor],
    ids: Mapping[tuple[str, str], int],
    next_id: int,
) -> Plan | None:
    """The plan of `items` under the given assumptions, or None when it needs the full path.

    Per market it keeps [seq, index, max epoch, stale] in a list rather than building a
    Cursor per event: this loop runs for every event the ledger settles."""
    state: dict[str, list[int]] = {}
    outcomes: list[Outcome] = []
    entries: list[Entry] = []
    positions: list[int] = []
    stale: dict[str, int] = {}
    apply, duplicate, gap = Verdict.APPLY, Verdict.DUPLICATE, Verdict.GAP
    for market, seq, idx, epoch, _, _, entry, _ in items:
        st = state.get(market)
        if st is None:
            cursor = cursors.get(market)
            if cursor is None or cursor.stalled:
                return None
            st = state[market] = [cursor.seq, cursor.idx, cursor.max_epoch, 0]
        # The usual case inline (the next position, no older epoch); `classify` decides
        # every other one.
        applied_seq = st[0]
        if epoch >= st[2] and (
            (seq == applied_seq and idx == st[1] + 1) or (seq == applied_seq + 1 and idx == 0)
        ):
            verdict = apply
        else:
            verdict = classify(applied_seq, st[1], st[2], seq, idx, epoch)
        if verdict is apply:
            st[0], st[1] = seq, idx
            if epoch > st[2]:
                st[2] = epoch
            if entry is not None:
                if entry.funding_id is not None:
                    return None
                positions.append(len(outcomes))
                entries.append(entry)
            outcomes.append(_APPLIED)
        elif verdict is duplicate:
            outcomes.append(_DUPLICATE)
        elif verdict is gap:
            return None
        else:
            st[3] += 1
            stale[market] = st[3]
            outcomes.append(_STALE)
    tx_ids = range(next_id, next_id + len(entries))
    try:
        written = rows(entries, tx_ids, ids)
    except KeyError:
        return None  # a new account: created on the full path
    if written.wallet:
        return None  # wallet postings come from transfers, which the full path books
    for position, tx in zip(positions, tx_ids, strict=True):
        outcomes[position] = Outcome(Verdict.APPLY, tx)
    before = {market: cursors[market] for market in state}
    after = {
        market: before[market]._replace(
            seq=st[0],
            idx=st[1],
            max_epoch=st[2],
            stale_rejected=before[market].stale_rejected + st[3],
        )
        for market, st in state.items()
    }
    return Plan(outcomes, before, after, next_id, next_id + len(entries), written, stale)
