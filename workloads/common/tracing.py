"""A tracer provider for a service's *_OTEL_* settings, shared by the gateway and the ledger.

The endpoint says the protocol: a URL with a path (the seed's
`http://localhost:24318/v1/traces`) is OTLP/HTTP with protobuf bodies; `host:port` (or a URL
without a path) is OTLP/gRPC.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

log = logging.getLogger(__name__)


class OtelSettings(Protocol):
    @property
    def endpoint(self) -> str: ...
    @property
    def insecure(self) -> bool: ...
    @property
    def service_name(self) -> str: ...
    @property
    def sample_ratio(self) -> float: ...


class OtlpHttpExporter(SpanExporter):
    """OTLP/HTTP, protobuf bodies POSTed to the endpoint URL. Runs in the batch span
    processor's own thread, so the blocking request never touches the event loop."""

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        request = urllib.request.Request(
            self.endpoint,
            data=encode_spans(spans).SerializeToString(),
            method="POST",
            headers={"Content-Type": "application/x-protobuf"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except OSError as exc:  # URLError and HTTPError are OSErrors
            log.warning("span export failed", extra={"endpoint": self.endpoint, "why": repr(exc)})
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def is_http(endpoint: str) -> bool:
    """Whether `endpoint` names an OTLP/HTTP URL (one with a path) rather than gRPC."""
    parts = urlsplit(endpoint)
    return parts.scheme in ("http", "https") and parts.path not in ("", "/")


def exporter_for(settings: OtelSettings) -> SpanExporter:
    if is_http(settings.endpoint):
        return OtlpHttpExporter(settings.endpoint)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.endpoint, insecure=settings.insecure)


def provider(settings: OtelSettings, exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider sampling `sample_ratio` of traces (parent-based); `exporter` (tests) exports
    each span as it ends, the endpoint's exporter in batches."""
    result = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if exporter is not None:
        result.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.endpoint:
        result.add_span_processor(BatchSpanProcessor(exporter_for(settings)))
    return result
