"""OpenTelemetry tracing from the seed's LEDGER_OTEL_*: a span per HTTP request and per
settlement batch, and every response's `X-Trace-Id` (mirrors the gateway's EDGE_OTEL_*).

The provider and its exporters are `workloads.common.tracing`'s (OTLP/HTTP for a URL with a
path, else OTLP/gRPC). With LEDGER_OTEL_ENDPOINT empty no span is built (a recorded
span nobody exports only costs CPU), and responses still carry a trace id: the incoming
`traceparent`'s, else a fresh one.

Settlement spans are per batch, never per event: a batch of thousands of events costs one
span, so tracing does not slow settling down.
"""

from __future__ import annotations

import random
import re

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracer, Tracer

from workloads.common.tracing import is_http, provider

__all__ = ["incoming_trace_id", "is_http", "new_trace_id", "provider", "tracer"]

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def tracer(provider_: TracerProvider | None) -> Tracer:
    """The ledger's tracer; without a provider (nothing exports) one that builds no span."""
    if provider_ is None:
        return NoOpTracer()
    return provider_.get_tracer("workloads.ledger")


def incoming_trace_id(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C `traceparent`, if any (continued in `X-Trace-Id`)."""
    found = _TRACEPARENT.match(traceparent) if traceparent else None
    return found[1] if found and found[1] != "0" * 32 else None


def new_trace_id() -> str:
    return format(random.getrandbits(128) or 1, "032x")
