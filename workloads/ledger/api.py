"""The ledger's HTTP API (aiohttp): one app factory, middlewares, the route table.

- `/healthz`, `/readyz`, `/metrics`: open.
- `/v1/admin/**`, `/v1/internal/**`, `/v1/balances`: with admin tokens configured, the
  `X-Admin-Token` header must name an admin (401 otherwise); the admin's name is
  `request[ADMIN]`.
- Every 4xx is `{"code", "message"}` with a stable code (`errors.Code`), and is counted in
  `ledger_api_errors_total{code}`. Bodies above `LEDGER_MAX_BODY_BYTES` get 413.
- Every response carries `X-Trace-Id` (an incoming `traceparent` is continued); with
  LEDGER_OTEL_ENDPOINT set, each request is a server span (`tracing.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from opentelemetry import trace
from opentelemetry.propagate import extract
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workloads.common import logs
from workloads.ledger import metrics, tracing, views_admin, views_internal, views_wallets
from workloads.ledger.appkeys import ADMIN, LEDGER, TOKENS
from workloads.ledger.auth import AdminTokens
from workloads.ledger.errors import ApiError, Code
from workloads.ledger.service import Ledger

log = logging.getLogger(__name__)

PROTECTED = ("/v1/admin/", "/v1/internal/", "/v1/balances")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: Code.INVALID_PAYLOAD,
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.PAYLOAD_TOO_LARGE,
}


def error_response(code: Code, message: str) -> web.Response:
    metrics.API_ERRORS.labels(code.name_).inc()
    return web.json_response({"code": code.name_, "message": message}, status=code.status)


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A server span per request when spans are exported; `X-Trace-Id` on every response."""
    ledger = request.app[LEDGER]
    if ledger.tracer_provider is None:
        parent = request.headers.get("traceparent")
        trace_id = tracing.incoming_trace_id(parent) or tracing.new_trace_id()
        token = logs.TRACE_ID.set(trace_id)  # the logs of this request carry it
        try:
            response = await handler(request)
        finally:
            logs.TRACE_ID.reset(token)
        if not response.prepared:
            response.headers["X-Trace-Id"] = trace_id
        return response
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    with ledger.tracer.start_as_current_span(
        f"{request.method} {route}", kind=trace.SpanKind.SERVER, context=extract(request.headers)
    ) as span:
        response = await handler(request)
        if span.is_recording():
            span.set_attributes(
                {"http.method": request.method, "http.route": route,
                 "http.status_code": response.status}
            )  # fmt: skip
        if not response.prepared:
            response.headers["X-Trace-Id"] = format(span.get_span_context().trace_id, "032x")
        return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status)
        if code is None:
            raise
        return error_response(code, exc.reason or code.name_)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    tokens = request.app[TOKENS]
    if request.path.startswith(PROTECTED):
        if tokens.enabled:
            admin = tokens.identify(request.headers.get("X-Admin-Token"))
            if admin is None:
                raise ApiError(Code.UNAUTHORIZED, "a valid X-Admin-Token header is required")
            request[ADMIN] = admin
        else:
            request[ADMIN] = None
    return await handler(request)


def build_app(ledger: Ledger) -> web.Application:
    app = web.Application(
        middlewares=[traced, errors, authenticate],
        client_max_size=ledger.settings.http.max_body_bytes,
    )
    app[LEDGER] = ledger
    app[TOKENS] = AdminTokens(ledger.settings.http.admin_tokens)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, why = ledger.ready()
        return web.json_response({"ready": ok, "detail": why}, status=200 if ok else 503)

    async def prometheus(_: web.Request) -> web.Response:
        if ledger.consumer is not None:
            ledger.consumer.status()  # refreshes the consumer lag gauge
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    views_internal.add_routes(app.router)
    views_admin.add_routes(app.router)
    views_wallets.add_routes(app.router)
    return app
