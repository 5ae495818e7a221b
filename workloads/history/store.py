"""The history's tables in ClickHouse, their migrations, the writer's inserts.

SQL that ClickHouse 18.16 (Debian's, the one these machines have) and current releases both
run: `DateTime` plus an integer nanosecond column instead of `DateTime64`, the
`toStartOf*` functions instead of `toStartOfInterval`, no `LowCardinality`, `Map`, codecs,
TTLs or query parameters (values are bound by the client), and no column named `interval`
(18.16 writes its metadata unquoted and cannot read it back).

Idempotency: 18.16 does not deduplicate inserts, so both tables are `ReplacingMergeTree`s
whose sorting key is the row's identity: a trade delivered twice is the same row twice
(`symbol, time, seq, idx`), collapsed by merges and by `FINAL` in every query before them.
A one-minute candle is recomputed from the stored trades of its minute after every batch
that touched it (`INSERT ... SELECT ... FROM trades FINAL`), with the newest version
winning: whatever was delivered twice, a candle is always its trades' aggregate.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asynch

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "trades",
        """CREATE TABLE IF NOT EXISTS trades (
            symbol String,
            time DateTime,
            ts_ns UInt64,
            seq UInt64,
            idx UInt16,
            trade_id String,
            price Int64,
            quantity Int64,
            quote_amount Int64,
            taker_side Int8,
            epoch UInt64
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMMDD(time)
        ORDER BY (symbol, time, seq, idx)""",
    ),
    (
        2,
        "candles_1m",
        """CREATE TABLE IF NOT EXISTS candles_1m (
            symbol String,
            open_time DateTime,
            open Int64,
            high Int64,
            low Int64,
            close Int64,
            volume Int64,
            quote_volume Int64,
            trades UInt64,
            version UInt64
        ) ENGINE = ReplacingMergeTree(version)
        PARTITION BY toYYYYMMDD(open_time)
        ORDER BY (symbol, open_time)""",
    ),
)
"""(version, name, statement): applied in order, once each, recorded in `history_migrations`."""

TRADE_COLUMNS = (
    "symbol", "time", "ts_ns", "seq", "idx", "trade_id", "price", "quantity", "quote_amount",
    "taker_side", "epoch",
)  # fmt: skip

_CANDLES_FROM_TRADES = """
INSERT INTO candles_1m (symbol, open_time, open, high, low, close, volume, quote_volume,
                        trades, version)
SELECT symbol, toStartOfMinute(time) AS minute,
       argMin(price, seq * 65536 + idx), max(price), min(price),
       argMax(price, seq * 65536 + idx), sum(quantity), sum(quote_amount), count(),
       %(version)s
FROM trades FINAL
WHERE symbol = %(symbol)s AND time >= %(start)s AND time < %(end)s
GROUP BY symbol, minute
"""


def as_time(ts_ns: int) -> datetime:
    """A trade's `time` column (whole seconds, UTC) from its nanosecond timestamp."""
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC)


async def ensure_database(url: str) -> None:
    """Create the URL's database unless it exists (a venue's own, named by the operator), through
    the server's `default` database; the writer does this before it migrates."""
    parts = urlsplit(url)
    database = parts.path.strip("/") or "default"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise ValueError(f"history database name {database!r} is not an identifier")
    if database == "default":
        return
    server = urlunsplit(parts._replace(path="/default"))
    async with asynch.Connection(dsn=server) as conn, conn.cursor() as cursor:
        await cursor.execute(f"CREATE DATABASE IF NOT EXISTS {database}")


class HistoryStore:
    """A pool of native-protocol connections to the history's database."""

    def __init__(self, url: str, connections: int = 4) -> None:
        self.url = url
        self.pool = asynch.Pool(minsize=1, maxsize=connections, dsn=url)

    async def open(self) -> None:
        await self.pool.startup()

    async def close(self) -> None:
        await self.pool.shutdown()

    async def execute(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        async with self.pool.connection() as conn, conn.cursor() as cursor:
            await cursor.execute(sql, args)
            rows: list[tuple[Any, ...]] = await cursor.fetchall()
            return rows

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet recorded; the versions applied now."""
        await self.execute(
            "CREATE TABLE IF NOT EXISTS history_migrations "
            "(version UInt32, name String, applied_at DateTime) ENGINE = TinyLog"
        )
        done = {row[0] for row in await self.execute("SELECT version FROM history_migrations")}
        applied = []
        for version, name, statement in MIGRATIONS:
            if version in done:
                continue
            await self.execute(statement)
            await self.execute(
                "INSERT INTO history_migrations (version, name, applied_at) VALUES",
                [(version, name, datetime.now(UTC).replace(microsecond=0))],
            )
            applied.append(version)
        return applied

    async def insert_trades(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Trades as `TRADE_COLUMNS` tuples; a redelivered one is the same row again."""
        if rows:
            await self.execute(f"INSERT INTO trades ({', '.join(TRADE_COLUMNS)}) VALUES", rows)

    async def recompute_candles(self, minutes: dict[str, tuple[datetime, datetime]]) -> None:
        """Re-aggregate the one-minute candles of each symbol's minutes from `first` up to and
        including `last` from the stored trades (the newest version wins)."""
        version = time.time_ns()
        for symbol, (first, last) in minutes.items():
            end = datetime.fromtimestamp(last.timestamp() // 60 * 60 + 60, tz=UTC)
            start = datetime.fromtimestamp(first.timestamp() // 60 * 60, tz=UTC)
            await self.execute(
                _CANDLES_FROM_TRADES,
                {"symbol": symbol, "start": start, "end": end, "version": version},
            )

    async def epochs(self) -> dict[str, int]:
        """The newest epoch stored per market: the writer's fencing floor after a restart."""
        return {
            str(symbol): int(epoch)
            for symbol, epoch in await self.execute(
                "SELECT symbol, max(epoch) FROM trades GROUP BY symbol"
            )
        }
