"""OpenTelemetry tracing: a provider from EDGE_OTEL_*, and every response's `X-Trace-Id`.

The trace id exists even for a request that is not sampled (the SDK draws it before the
sampler decides), so a client can always quote it. With EDGE_OTEL_ENDPOINT empty no span
is exported. Sampling is decided here, once per order (EDGE_OTEL_SAMPLE_RATIO): the
request span's traceparent is the matcher command's correlation id, so the matcher, the
ledger and this gateway's feed add their spans to the traces of sampled orders only
(`workloads.common.tracing`), and the events an order produced can be found from the HTTP
request either way.

When nothing would export a span (no EDGE_OTEL_ENDPOINT and no exporter given), the gateway
does not build spans at all: `tracer()` returns `IDS_ONLY` and the request middleware draws
the trace id itself (or continues the incoming traceparent's). A recorded span that nobody
exports cost about a tenth of the gateway's CPU per order. With an exporter, the middleware
samples (observe.py) and asks this tracer for a span only for the requests it traces, so the
provider records every span it is asked for.
"""

from __future__ import annotations

from dataclasses import replace

from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import NoOpTracer, Tracer

from workloads.common.tracing import provider
from workloads.gateway.settings import OtelSettings


class IdsOnly(NoOpTracer):
    """The tracer when no span is exported: requests get trace ids, and no spans."""


IDS_ONLY = IdsOnly()


def tracer(settings: OtelSettings, exporter: SpanExporter | None = None) -> Tracer:
    if exporter is None and not settings.endpoint:
        return IDS_ONLY
    everything = replace(settings, sample_ratio=1.0)  # the middleware has sampled already
    return provider(everything, exporter).get_tracer("workloads.gateway")


def exporting(tracer_: Tracer) -> Tracer | None:
    """`tracer_` if its spans go somewhere, else None (the feed then builds none)."""
    return None if isinstance(tracer_, IdsOnly) else tracer_
