"""`python -m workloads.history` (console script `exchange-history`): the history writer.

Start: the ops endpoints, then the ClickHouse migrations (retried until ClickHouse answers;
`/readyz` says why meanwhile), then the writer. SIGTERM or SIGINT: finish the batch in hand
(its offsets committed only if it was written), exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from workloads.common import logs, ops_http
from workloads.history.settings import HistorySettings, SettingsError
from workloads.history.store import HistoryStore
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


def main() -> None:
    logs.configure("history")
    try:
        settings = HistorySettings.from_env()
    except SettingsError as exc:
        sys.exit(f"history: invalid setting: {exc}")
    import uvloop

    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
