"""`python -m workloads.history` (console script `exchange-history`): the history writer.

`python -m workloads.history backfill --ledger-dsn DSN --symbol S --lot-size N [--from MS]
[--to MS]` fills the history from the ledger's trades instead (`backfill.py`) and exits.

Start: the ops endpoints, then the ClickHouse migrations (retried until ClickHouse answers;
`/readyz` says why meanwhile), then the writer. SIGTERM or SIGINT: finish the batch in hand
(its offsets committed only if it was written), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys

from workloads.common import logs, ops_http
from workloads.history.backfill import Backfilled, backfill
from workloads.history.settings import HistorySettings, SettingsError
from workloads.history.store import HistoryStore, ensure_database
from workloads.history.writer import HistoryWriter

log = logging.getLogger("workloads.history")


async def serve(settings: HistorySettings) -> None:
    store = HistoryStore(settings.clickhouse_url)
    writer = HistoryWriter(settings, store)
    runner = await ops_http.serve(
        ops_http.ops_app(writer.ready), settings.http_host, settings.http_port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        pause = 0.5
        while not stop.is_set():
            try:
                await ensure_database(settings.clickhouse_url)
                await store.open()
                applied = await store.migrate()
                break
            except Exception as exc:
                writer.problem = f"ClickHouse not reachable: {type(exc).__name__}: {exc}"
                log.warning("waiting for ClickHouse", extra={"why": writer.problem[:300]})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, 5.0)
        else:
            return
        log.info("history writer started", extra={"migrations_applied": applied,
                                                  "topic": settings.topic})  # fmt: skip
        await writer.run(stop)
    finally:
        await store.close()
        await runner.cleanup()


def backfill_command(settings: HistorySettings, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m workloads.history backfill")
    parser.add_argument("--ledger-dsn", required=True, help="the ledger's PostgreSQL")
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--lot-size", type=int, required=True, help="base minor units per lot")
    parser.add_argument("--from", dest="start", type=int, default=0, help="epoch ms")
    parser.add_argument("--to", dest="end", type=int, default=None, help="epoch ms (exclusive)")
    args = parser.parse_args(argv)

    async def run() -> Backfilled:
        await ensure_database(settings.clickhouse_url)
        store = HistoryStore(settings.clickhouse_url)
        await store.open()
        try:
            await store.migrate()
            end = args.end * 1_000_000 if args.end is not None else 1 << 62
            return await backfill(store, args.ledger_dsn, args.symbol, args.lot_size,
                                  args.start * 1_000_000, end)  # fmt: skip
        finally:
            await store.close()

    done = asyncio.run(run())
    print(json.dumps({"symbol": args.symbol, "settled": done.settled, "written": done.written}))


def main() -> None:
    logs.configure("history")
    try:
        settings = HistorySettings.from_env()
    except SettingsError as exc:
        sys.exit(f"history: invalid setting: {exc}")
    if sys.argv[1:2] == ["backfill"]:
        backfill_command(settings, sys.argv[2:])
        return
    import uvloop

    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
