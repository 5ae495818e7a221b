"""Tracing shared by the gateway, the matcher and the ledger: a tracer provider for a
service's *_OTEL_* settings, and the W3C trace context that carries one order's trace
across processes.

The endpoint says the protocol: a URL with a path (the seed's
`http://localhost:24318/v1/traces`) is OTLP/HTTP with protobuf bodies; `host:port` (or a URL
without a path) is OTLP/gRPC. Both are OpenTelemetry's maintained exporters, run by the
batch span processor in its own thread, so no export ever blocks an event loop.

How one order becomes one trace: the gateway's request span is the root; its `traceparent`
("00-<trace id>-<span id>-<flags>") is the matcher command's `correlation_id`, written to the
WAL and stamped on every event of the command. The matcher traces only commands whose
correlation is a *sampled* traceparent (`is_sampled`), so sampling is decided once, per
order, at the gateway. The outbox puts the traceparent of its publish span in the Kafka
headers of those commands' events (`TRACEPARENT_HEADER`), and the consumers (the ledger's
settlement, the gateway's feed) continue the trace from there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

TRACEPARENT_HEADER = "traceparent"
"""The Kafka record header (W3C Trace Context, as OpenTelemetry's messaging conventions use
it) that the matcher's outbox sets on the events of sampled commands."""

EXPORT_DELAY_MS = 500
"""Most time a finished span waits in the batch processor before it is exported (the SDK's
default is 5 s). A trace is then queryable about a second after the order; the price is
one export request per half second per busy process. `OTEL_BSP_SCHEDULE_DELAY` overrides."""

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
SAMPLED_LAST_DIGITS = frozenset("13579bdf")
"""The last hex digit of a sampled traceparent's flags (their low bit is "sampled")."""


class OtelSettings(Protocol):
    @property
    def endpoint(self) -> str: ...
    @property
    def insecure(self) -> bool: ...
    @property
    def service_name(self) -> str: ...
    @property
    def sample_ratio(self) -> float: ...


def is_http(endpoint: str) -> bool:
    """Whether `endpoint` names an OTLP/HTTP URL (one with a path) rather than gRPC."""
    parts = urlsplit(endpoint)
    return parts.scheme in ("http", "https") and parts.path not in ("", "/")


def exporter_for(settings: OtelSettings) -> SpanExporter:
    """OpenTelemetry's OTLP exporter for the endpoint: protobuf over HTTP or gRPC."""
    if is_http(settings.endpoint):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter(endpoint=settings.endpoint, timeout=10)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.endpoint, insecure=settings.insecure, timeout=10)


def provider(
    settings: OtelSettings,
    exporter: SpanExporter | None = None,
    attributes: Mapping[str, str] | None = None,
) -> TracerProvider:
    """A provider sampling `sample_ratio` of new traces (parent-based: a sampled caller's
    trace is always continued); `exporter` (tests) exports each span as it ends, the
    endpoint's exporter in batches. `attributes` join the resource (e.g. the market)."""
    result = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name, **(attributes or {})}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if exporter is not None:
        result.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.endpoint:
        delay = None if os.environ.get("OTEL_BSP_SCHEDULE_DELAY") else EXPORT_DELAY_MS
        result.add_span_processor(
            BatchSpanProcessor(exporter_for(settings), schedule_delay_millis=delay)
        )
    return result


def traceparent(context: SpanContext) -> str:
    """The W3C `traceparent` of a span: what the next hop continues."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def is_sampled(value: str) -> bool:
    """Whether `value` looks like a sampled traceparent: cheap enough to ask of every
    command of a batch (the full check is `parent_of`'s)."""
    return len(value) == 55 and value[54] in SAMPLED_LAST_DIGITS and value[:3] == "00-"


def parent_of(value: str | bytes | None) -> Context | None:
    """The context of a sampled, valid traceparent (a remote parent), else None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    found = _TRACEPARENT.match(value) if value else None
    if found is None:
        return None
    trace_id, span_id, flags = int(found[1], 16), int(found[2], 16), int(found[3], 16)
    if not trace_id or not span_id or not flags & TraceFlags.SAMPLED:
        return None
    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(remote))


def span_after(
    tracer: trace.Tracer,
    name: str,
    parent: Context | None,
    start_ns: int,
    end_ns: int,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    error: BaseException | None = None,
) -> Context:
    """A span whose timing is already known (measured on the hot path as plain integers,
    built afterwards), ended at once; returns its context, for children."""
    span = tracer.start_span(name, parent, kind, attributes, start_time=start_ns)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, repr(error)))
    span.end(end_time=end_ns)
    return trace.set_span_in_context(span)
