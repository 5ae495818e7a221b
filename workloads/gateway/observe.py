"""The outermost middleware: a span per request, `X-Trace-Id`, metrics, typed errors.

Every failure leaves as `{"code", "message"}`: an `ApiError` with its status, aiohttp's
own HTTP errors (404, 405, 413) with a code, and anything unexpected as a logged 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from opentelemetry import context, trace
from opentelemetry.propagate import extract
from prometheus_client import Counter, Histogram

from workloads.gateway.errors import ApiError, Code
from workloads.gateway.keys import TRACER

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


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = route_of(request)
    tracer = request.app[TRACER]
    span = tracer.start_span(
        f"{request.method} {route}", kind=trace.SpanKind.SERVER, context=extract(request.headers)
    )
    recording = span.is_recording()  # most spans are not sampled: skip their attributes
    if recording:
        span.set_attributes({"http.method": request.method, "http.route": route})
    token = context.attach(trace.set_span_in_context(span))
    trace_id = format(span.get_span_context().trace_id, "032x")
    status = 599  # the client went away (the request task was cancelled)
    try:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, Code.BAD_REQUEST)
            response = ApiError(code, exc.reason or code, exc.status).response()
        except Exception:
            log.exception("unhandled error", extra={"route": route, "trace_id": trace_id})
            response = ApiError(Code.INTERNAL, "internal error; quote X-Trace-Id", 500).response()
        if not response.prepared:
            response.headers["X-Trace-Id"] = trace_id
        status = response.status
        if recording:
            span.set_attribute("http.status_code", status)
        return response
    finally:
        context.detach(token)
        span.end()
        REQUESTS.labels(route, request.method, str(status)).inc()
        LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
