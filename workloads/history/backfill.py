"""Backfill: the market history from the ledger's trades (the book of record), for a store
that was added late or lost.

`python -m workloads.history backfill --ledger-dsn DSN --symbol BTC-USDT --lot-size 10000
[--from MS] [--to MS]` reads the ledger's settled trades of the market in the range (its
`journal`, with each trade's postings), writes those ClickHouse does not hold yet, and
recomputes the candles of the minutes it wrote. Idempotent: a trade already stored (same
`seq` and event index) is never written again, so a second run writes nothing and the
writer's own rows are never replaced.

Prices and amounts come from the postings (`workloads/common/booked.py`). The taker's side is
not in the ledger; backfilled trades carry `taker_side` 0 (unknown).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg

from workloads.common.booked import booked_trade
from workloads.history.store import HistoryStore, as_time


@dataclass(frozen=True)
class Backfilled:
    settled: int
    """Trades the ledger holds in the range."""
    written: int
    """Of those, the ones ClickHouse did not hold."""


def trade_row(symbol: str, lot_size: int, journal: Any, postings: list[Any]) -> tuple[object, ...]:
    """A `trades` row (store.TRADE_COLUMNS) from a journal entry and its postings."""
    base, _, quote = symbol.partition("-")
    trade = booked_trade(
        base, quote, ((p["owner"], p["asset"], p["bucket"], p["amount"]) for p in postings)
    )
    index = int(str(journal["reference"]).rsplit(":", 1)[-1])
    occurred = int(journal["occurred_at"])
    return (
        symbol, as_time(occurred), occurred, int(journal["seq"]), index, str(journal["trade_id"]),
        trade.price(lot_size), trade.quantity, trade.quote_amount, 0, int(journal["epoch"]),
    )  # fmt: skip


async def backfill(
    store: HistoryStore,
    ledger_dsn: str,
    symbol: str,
    lot_size: int,
    start_ns: int = 0,
    end_ns: int = 1 << 62,
) -> Backfilled:
    conn = await asyncpg.connect(ledger_dsn)
    try:
        journal = await conn.fetch(
            """SELECT id, reference, seq, epoch, trade_id, occurred_at FROM journal
                WHERE kind = 'trade' AND market = $1 AND occurred_at >= $2 AND occurred_at < $3
                ORDER BY seq, reference""",
            symbol, start_ns, end_ns,
        )  # fmt: skip
        lines = await conn.fetch(
            """SELECT p.tx_id, a.owner, p.asset, p.bucket, p.amount
                 FROM postings p JOIN accounts a ON a.id = p.account_id
                WHERE p.tx_id = ANY($1::bigint[])""",
            [j["id"] for j in journal],
        )
    finally:
        await conn.close()
    by_tx: dict[int, list[Any]] = defaultdict(list)
    for line in lines:
        by_tx[line["tx_id"]].append(line)
    rows = [trade_row(symbol, lot_size, j, by_tx[j["id"]]) for j in journal]
    stored = await _stored_keys(store, symbol, start_ns, end_ns)
    missing = [r for r in rows if (r[3], r[4]) not in stored]
    await store.insert_trades(missing)
    if missing:
        times = [as_time(int(str(r[2]))) for r in missing]
        await store.recompute_candles({symbol: (min(times), max(times))})
    return Backfilled(len(rows), len(missing))


async def _stored_keys(
    store: HistoryStore, symbol: str, start_ns: int, end_ns: int
) -> set[tuple[int, int]]:
    try:
        found = await store.execute(
            "SELECT seq, idx FROM trades FINAL WHERE symbol = %(symbol)s "
            "AND ts_ns >= %(start)s AND ts_ns < %(end)s",
            {"symbol": symbol, "start": start_ns, "end": end_ns},
        )
    except Exception:
        await store.migrate()
        return set()
    return {(int(seq), int(idx)) for seq, idx in found}
