"""`python -m workloads.gateway` (console script `exchange-gateway`): one gateway replica.

Reads `EDGE_*` (see README), serves REST, `/ws` and the ops endpoints on
EDGE_HTTP_HOST:EDGE_HTTP_PORT until SIGTERM or SIGINT, then closes WebSockets (1001),
stops the feed and closes the database pool.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web

from workloads.common import logs
from workloads.gateway.app import init_app
from workloads.gateway.settings import GatewaySettings, SettingsError

log = logging.getLogger("workloads.gateway")
GC_THRESHOLDS = (10_000, 10, 100)
"""With CPython's default (700, 10, 10) the cyclic collector took about a tenth of the
gateway's CPU under load: young collections ran dozens of times a second over the objects
of the requests in flight, and full collections (tens to hundreds of ms, every few seconds)
over the order cache set the tail latency. Less often, with the cache mostly untracked (see
orders.py): a young collection (under 10 ms) about once a second at 1,500 orders/s, full
ones minutes apart; the collector's share of the CPU fell to about 3%."""


async def serve(settings: GatewaySettings) -> None:
    app = init_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port, backlog=1024)
    await site.start()
    # What startup made lives as long as the process: keep it out of every full collection.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    print(
        f"gateway serving on http://{settings.http.host}:{settings.http.port}",
        file=sys.stderr,
        flush=True,
    )
    log.info(
        "serving",
        extra={"port": settings.http.port, "markets": [m.symbol for m in settings.core.markets]},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()


def main() -> None:
    logs.configure("gateway")
    try:
        settings = GatewaySettings.from_env()
    except SettingsError as exc:
        sys.exit(f"gateway: invalid setting: {exc}")
    if not settings.db.dsn:
        sys.exit("gateway: invalid setting: EDGE_DB_DSN is required")
    import uvloop

    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
