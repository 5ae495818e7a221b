"""The app factory (`init_app`): routes, middlewares, and resources in `cleanup_ctx`.

Resources open in order and close in reverse: the PostgreSQL store, the matcher channels,
then the projection with its feed (events topic), the WebSocket hub and the janitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workloads.gateway import (
    tracing,
    views_account,
    views_auth,
    views_market,
    views_orders,
    views_transfers,
    webui,
)
from workloads.gateway.core import Core
from workloads.gateway.feed import Feed
from workloads.gateway.guard import guard
from workloads.gateway.history import History
from workloads.gateway.hub import Hub
from workloads.gateway.keys import (
    CORE,
    FEED,
    HISTORY,
    HUB,
    LEDGER,
    PASSWORDS,
    PROJECTION,
    SETTINGS,
    STORE,
    TRACER,
)
from workloads.gateway.ledger import LedgerReader
from workloads.gateway.marketdata import Projection
from workloads.gateway.observe import observe
from workloads.gateway.openapi import document
from workloads.gateway.passwords import Passwords
from workloads.gateway.settings import GatewaySettings
from workloads.gateway.store import Store
from workloads.gateway.ws import ws_handler

log = logging.getLogger(__name__)
BACKGROUND = web.AppKey("background", list)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    if not feed.ready.is_set():
        return web.json_response(
            {"ready": False, "detail": "catching up with the events topic"}, status=503
        )
    try:
        await request.app[STORE].pool.fetchval("SELECT 1")
    except Exception as exc:  # the database is part of readiness
        return web.json_response({"ready": False, "detail": f"database: {exc!r}"}, status=503)
    return web.json_response({"ready": True, "detail": "ok"})


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(_: web.Request) -> web.Response:
    return web.json_response(document())


def spawn(app: web.Application, coro: Coroutine[Any, Any, None], name: str) -> None:
    task = asyncio.get_running_loop().create_task(coro, name=name)
    app[BACKGROUND].append(task)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    if not s.db.dsn:
        raise RuntimeError("EDGE_DB_DSN is required (users, keys, sessions, edge state)")
    app[STORE] = await Store.open(
        s.db.dsn,
        s.db.schema,
        s.db.pool_size,
        static_keys=s.auth.api_secrets,
        rate_limit=s.auth.rate_limit_per_minute,
        replay_ttl=s.auth.replay_ttl_sec,
        idempotency_ttl=s.auth.idempotency_ttl_hours * 3600,
        batch_window=s.db.batch_window_ms / 1000,
    )
    yield
    await app[STORE].close()


async def core_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS].core
    app[CORE] = Core(
        s.markets,
        disabled=s.disabled,
        window=s.batch_window_ms / 1000,
        max_size=s.batch_max,
        timeout=s.grpc_timeout_sec,
    )
    yield
    await app[CORE].close()


async def data_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    projection = Projection({m.symbol: m for m in s.core.markets}, s.core.order_cache_size)
    if s.seed_market_data:
        # Sample data only where no live data can come: a market without a matcher, or
        # every market when the core is disabled and no events topic is configured.
        offline = s.core.disabled and not s.kafka.brokers
        projection.seed_samples({m.symbol for m in s.core.markets if offline or not m.live})
    app[PROJECTION] = projection
    app[HISTORY] = History(s.history_url)
    app[LEDGER] = LedgerReader(s.ledger_url, s.ledger_token)
    hub = app[HUB] = Hub(s.ws, projection)
    client_id = f"{s.kafka.group_id}-{s.http.instance}"
    feed = app[FEED] = Feed(
        s.kafka, projection, app[CORE], client_id, tracer=tracing.exporting(app[TRACER])
    )
    feed.on_resync.append(hub.book_resynced)
    app[BACKGROUND] = []
    spawn(app, feed.run(), "feed")
    spawn(app, hub.run(), "hub")
    spawn(app, hub.keepalive(), "ws-keepalive")
    spawn(app, janitor(app[STORE]), "janitor")
    yield
    close_sockets(hub)
    for task in app[BACKGROUND]:
        task.cancel()
    for task in app[BACKGROUND]:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await app[HISTORY].close()
    await app[LEDGER].close()


def close_sockets(hub: Hub) -> None:
    for conn in tuple(hub.conns):
        hub.close(conn, 1001, "server shutting down")


async def close_sockets_on_shutdown(app: web.Application) -> None:
    """Before the server waits for its handlers (up to its shutdown timeout): a WebSocket's
    handler returns only once its socket is closed, so close them first (1001, going away)."""
    if HUB in app:
        close_sockets(app[HUB])


async def janitor(store: Store, every: float = 30.0) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await store.sweep()
        except Exception as exc:  # the next sweep tries again
            log.warning("sweep failed", extra={"why": repr(exc)})


def init_app(
    settings: GatewaySettings, span_exporter: SpanExporter | None = None
) -> web.Application:
    app = web.Application(middlewares=[observe, guard], client_max_size=64 << 10)
    app[SETTINGS] = settings
    app[TRACER] = tracing.tracer(settings.otel, span_exporter)
    app[PASSWORDS] = Passwords()
    app.cleanup_ctx.extend([store_ctx, core_ctx, data_ctx])
    app.on_shutdown.append(close_sockets_on_shutdown)
    router = app.router
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics)
    router.add_get("/openapi.json", openapi)
    views_auth.add_routes(router)
    views_account.add_routes(router)
    views_transfers.add_routes(router)
    views_orders.add_routes(router)
    views_market.add_routes(router)
    if settings.smoke_routes:  # test-only; without it the route does not exist (404)
        from workloads.gateway import views_smoke

        views_smoke.add_routes(router)
    router.add_get("/ws", ws_handler)
    ui = webui.web_dir(settings.web_dir)
    if ui is not None:
        webui.add_routes(router, ui)
    return app
