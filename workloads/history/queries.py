"""History queries: candles at every interval and trades by range with a cursor, from
ClickHouse; and the same bucketing in Python, so that candles the gateway aggregates from
its live one-minute candles line up with the stored ones to the second.

Intervals are Binance's: 1m, 5m, 15m, 1h, 4h, 1d (UTC days) and 1w (weeks from Monday,
UTC). A bucket's candle is its one-minute candles' aggregate: the first one's open, the
highest high, the lowest low, the last one's close, the sums of volume, quote volume and
trades.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from workloads.history.store import HistoryStore

WEEK_OFFSET = 4 * 86_400
"""1970-01-01 was a Thursday: Monday-aligned weeks start 4 days after the epoch's multiples."""

INTERVALS: dict[str, int] = {
    "1m": 60, "5m": 300, "15m": 900, "1h": 3_600, "4h": 14_400, "1d": 86_400, "1w": 604_800,
}  # fmt: skip
"""Interval name -> its length in seconds."""

_BUCKET_SQL = {
    "1m": "open_time",
    "5m": "toStartOfFiveMinute(open_time)",
    "15m": "toStartOfFifteenMinutes(open_time)",
    "1h": "toStartOfHour(open_time)",
    "4h": "toDateTime(intDiv(toUInt32(open_time), 14400) * 14400)",
    "1d": "toStartOfDay(open_time)",
    "1w": "toDateTime(toMonday(open_time))",
}
"""The SQL of a one-minute candle's bucket (no `toStartOfInterval`: 18.16 lacks it)."""


def bucket_start(seconds: int, interval: str) -> int:
    """The start (epoch seconds, UTC) of the `interval` bucket holding `seconds`."""
    size = INTERVALS[interval]
    if interval == "1w":
        return (seconds - WEEK_OFFSET) // size * size + WEEK_OFFSET
    return seconds // size * size


@dataclass(frozen=True, slots=True)
class CandleRow:
    open_time: int
    """Epoch seconds of the bucket's start."""
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int


@dataclass(frozen=True, slots=True)
class TradeRow:
    ts_ns: int
    seq: int
    idx: int
    trade_id: str
    price: int
    quantity: int
    taker_side: int


def aggregate(minutes: Iterable[CandleRow], interval: str) -> list[CandleRow]:
    """One-minute candles (in time order) into `interval` candles, as the SQL does."""
    out: list[CandleRow] = []
    for m in minutes:
        start = bucket_start(m.open_time, interval)
        if out and out[-1].open_time == start:
            last = out[-1]
            out[-1] = CandleRow(
                start, last.open, max(last.high, m.high), min(last.low, m.low), m.close,
                last.volume + m.volume, last.quote_volume + m.quote_volume, last.trades + m.trades,
            )  # fmt: skip
        else:
            out.append(CandleRow(start, m.open, m.high, m.low, m.close, m.volume,
                                 m.quote_volume, m.trades))  # fmt: skip
    return out


LAST_SECOND = 4_102_444_800
"""2100-01-01: later bounds are clamped here (ClickHouse's DateTime ends in 2106)."""


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(min(max(seconds, 0), LAST_SECOND), tz=UTC)


async def candles(
    store: HistoryStore, symbol: str, interval: str, start: int, end: int, limit: int
) -> list[CandleRow]:
    """The newest `limit` `interval` candles whose bucket starts in [start, end) (epoch
    seconds; `start` and `end` on bucket boundaries), oldest first."""
    bucket = _BUCKET_SQL[interval]
    rows = await store.execute(
        f"""SELECT toUInt32({bucket}) AS bucket,
                   argMin(open, open_time), max(high), min(low), argMax(close, open_time),
                   sum(volume), sum(quote_volume), sum(trades)
            FROM candles_1m FINAL
            WHERE symbol = %(symbol)s AND open_time >= %(start)s AND open_time < %(end)s
            GROUP BY bucket ORDER BY bucket DESC LIMIT %(limit)s""",
        {"symbol": symbol, "start": _at(start), "end": _at(end), "limit": limit},
    )
    return [CandleRow(*(int(v) for v in row)) for row in reversed(rows)]


async def trades(
    store: HistoryStore,
    symbol: str,
    start_ns: int,
    end_ns: int,
    before: tuple[int, int] | None,
    limit: int,
) -> list[TradeRow]:
    """Trades with `start_ns <= time < end_ns`, before the (seq, index) cursor when one is
    given, newest first, at most `limit`."""
    cursor = "AND (seq < %(seq)s OR (seq = %(seq)s AND idx < %(idx)s))" if before else ""
    seq, idx = before or (0, 0)
    rows = await store.execute(
        f"""SELECT ts_ns, seq, idx, trade_id, price, quantity, taker_side
            FROM trades FINAL
            WHERE symbol = %(symbol)s AND time >= %(start)s AND time <= %(end)s
              AND ts_ns >= %(start_ns)s AND ts_ns < %(end_ns)s {cursor}
            ORDER BY seq DESC, idx DESC LIMIT %(limit)s""",
        {
            "symbol": symbol, "start": _at(start_ns // 1_000_000_000),
            "end": _at(end_ns // 1_000_000_000), "start_ns": start_ns, "end_ns": end_ns,
            "seq": seq, "idx": idx, "limit": limit,
        },
    )  # fmt: skip
    return [TradeRow(int(r[0]), int(r[1]), int(r[2]), str(r[3]), int(r[4]), int(r[5]), int(r[6]))
            for r in rows]  # fmt: skip


def merge_candles(
    stored: Sequence[CandleRow], live: Sequence[CandleRow], limit: int
) -> list[CandleRow]:
    """Stored candles before the first live one, then the live ones: the newest `limit`."""
    first_live = live[0].open_time if live else None
    older = [c for c in stored if first_live is None or c.open_time < first_live]
    return [*older, *live][-limit:]
