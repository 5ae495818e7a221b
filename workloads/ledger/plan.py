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
from workloads.ledger.rules import HOLD, Entry, Incoming

Posting = tuple[int, int, int, str, str, int]  # tx_id, line, account_id, asset, bucket, amount
JournalRow = tuple[int, str, str, str, int, int, str | None, str | None, int]


class Outcome(NamedTuple):
    verdict: Verdict
    tx_id: int | None = None


class Rows(NamedTuple):
    """What a batch writes, in the shape of its statements."""

    journal: list[JournalRow]
    postings: list[Posting]
    deltas: dict[int, list[int]]  # account id -> [available delta, hold delta]
    holds: dict[tuple[str, int], int]  # (market, account id) -> hold delta


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
    (KeyError: an account missing from `ids`)."""
    journal: list[JournalRow] = []
    postings: list[Posting] = []
    add = postings.append
    deltas: dict[int, list[int]] = {}
    holds: dict[tuple[str, int], int] = {}
    for entry, tx in zip(entries, tx_ids, strict=True):
        market = entry.market
        journal.append(
            (tx, entry.kind, entry.reference, market, entry.seq, entry.epoch, entry.trade_id,
             entry.correction_id, entry.occurred_at)
        )  # fmt: skip
        line = 0
        for owner, asset, bucket, amount in entry.postings:
            account = ids[(owner, asset)]
            add((tx, line, account, asset, bucket, amount))
            line += 1  # noqa: SIM113  (cheaper than enumerate in the hottest loop)
            delta = deltas.get(account)
            if delta is None:
                delta = deltas[account] = [0, 0]
            if bucket == HOLD:
                delta[1] += amount
                key = (market, account)
                holds[key] = holds.get(key, 0) + amount
            else:
                delta[0] += amount
    return Rows(journal, postings, deltas, holds)


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
    for item in items:
        market = item.market
        st = state.get(market)
        if st is None:
            cursor = cursors.get(market)
            if cursor is None or cursor.stalled:
                return None
            st = state[market] = [cursor.seq, cursor.idx, cursor.max_epoch, 0]
        seq, idx, epoch = item.seq, item.idx, item.epoch
        verdict = classify(st[0], st[1], st[2], seq, idx, epoch)
        if verdict is apply:
            st[0], st[1] = seq, idx
            if epoch > st[2]:
                st[2] = epoch
            entry = item.entry
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
