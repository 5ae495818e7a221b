"""The outermost middleware: a span per request, `X-Trace-Id`, metrics, typed errors.

Every failure leaves as `{"code", "message"}`: an `ApiError` with its status, aiohttp's
own HTTP errors (404, 405, 413) with a code, and anything unexpected as a logged 500.

Per request this stays O(1) and small: metric children are looked up once per (route,
method, status) and kept, and no span is built unless the request is sampled: without an
exporter never (see tracing.py), else at EDGE_OTEL_SAMPLE_RATIO, or when an incoming
`traceparent` is sampled. The decision is taken here, before the SDK is asked for anything:
an SDK span that is not sampled still cost about 10 µs per request, a request that is
not sampled costs what it costs without tracing.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from opentelemetry import context, trace
from opentelemetry.propagate import extract
from prometheus_client import Counter, Histogram

from workloads.common import logs
from workloads.gateway.errors import ApiError, Code
from workloads.gateway.keys import SETTINGS, TRACE_ID, TRACER
from workloads.gateway.tracing import IdsOnly

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "gateway_http_requests_total",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "gateway_http_request_seconds",
    "HTTP request latency by route",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
_HTTP_CODES = {
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.BAD_REQUEST,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})(?:-|$)")
_counters: dict[tuple[str, str, int], Any] = {}
_latencies: dict[tuple[str, str], Any] = {}


def record(route: str, method: str, status: int, seconds: float) -> None:
    """Count and time one request (prometheus' `labels()` costs more than the increment)."""
    counter = _counters.get((route, method, status))
    if counter is None:
        counter = _counters[(route, method, status)] = REQUESTS.labels(route, method, str(status))
    counter.inc()
    latency = _latencies.get((route, method))
    if latency is None:
        latency = _latencies[(route, method)] = LATENCY.labels(route, method)
    latency.observe(seconds)


def incoming_trace(request: web.Request) -> tuple[int, bool]:
    """The trace id of a valid W3C `traceparent` (continued) and whether the caller sampled
    it; (0, False) without one."""
    parent = request.headers.get("traceparent")
    found = _TRACEPARENT.match(parent) if parent else None
    if found is None:
        return 0, False
    trace_id = int(found[1], 16)
    return trace_id, bool(trace_id) and bool(int(found[2], 16) & 1)


def sampled(incoming: tuple[int, bool], ratio: float) -> bool:
    """Whether the request is traced: the caller's decision when it sent one (parent-based),
    else a draw at `ratio`: sampling is decided once per order, here."""
    if incoming[0]:
        return incoming[1]
    return ratio >= 1.0 or random.random() < ratio


async def respond(request: web.Request, handler: Handler, route: str) -> web.StreamResponse:
    """The handler's response, every failure turned into a typed JSON error."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, Code.BAD_REQUEST)
        return ApiError(code, exc.reason or code, exc.status).response()
    except Exception:
        log.exception("unhandled error", extra={"route": route, "trace_id": request[TRACE_ID]})
        return ApiError(Code.INTERNAL, "internal error; quote X-Trace-Id", 500).response()


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = route_of(request)
    tracer = request.app[TRACER]
    incoming = incoming_trace(request)
    if isinstance(tracer, IdsOnly) or not sampled(
        incoming, request.app[SETTINGS].otel.sample_ratio
    ):
        trace_id = format(incoming[0] or random.getrandbits(128) or 1, "032x")
        request[TRACE_ID] = trace_id
        bound = logs.TRACE_ID.set(trace_id)  # the request's logs carry it
        status = 599  # the client went away (the request task was cancelled)
        try:
            response = await respond(request, handler, route)
            if not response.prepared:
                response.headers["X-Trace-Id"] = trace_id
            status = response.status
            return response
        finally:
            logs.TRACE_ID.reset(bound)
            record(route, request.method, status, time.perf_counter() - started)
    span = tracer.start_span(
        f"{request.method} {route}", kind=trace.SpanKind.SERVER, context=extract(request.headers)
    )
    recording = span.is_recording()
    if recording:
        span.set_attributes({"http.method": request.method, "http.route": route})
    token = context.attach(trace.set_span_in_context(span))
    trace_id = request[TRACE_ID] = format(span.get_span_context().trace_id, "032x")
    status = 599
    try:
        response = await respond(request, handler, route)
        if not response.prepared:
            response.headers["X-Trace-Id"] = trace_id
        status = response.status
        if recording:
            span.set_attribute("http.status_code", status)
        return response
    finally:
        context.detach(token)
        span.end()
        record(route, request.method, status, time.perf_counter() - started)
