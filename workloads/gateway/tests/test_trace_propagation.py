"""How the gateway hands an order's trace on and takes it back: the command's correlation is
the request span's traceparent (the trace id alone without spans), and the feed's span
joins the traces named by the events' `traceparent` headers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiohttp.test_utils import make_mocked_request
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from workloads.common import tracing
from workloads.gateway import tracing as gateway_tracing
from workloads.gateway.core import Core
from workloads.gateway.feed import Feed
from workloads.gateway.keys import TRACE_ID
from workloads.gateway.marketdata import Projection
from workloads.gateway.observe import incoming_trace, sampled
from workloads.gateway.settings import KafkaSettings, OtelSettings
from workloads.gateway.views_orders import correlation_id

pytestmark = pytest.mark.unit

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PUBLISH = f"00-{TRACE}-00f067aa0ba902b7-01"


def test_the_commands_correlation_is_the_request_spans_traceparent() -> None:
    exporter = InMemorySpanExporter()
    tracer = gateway_tracing.tracer(OtelSettings(sample_ratio=1.0), exporter)
    request = make_mocked_request("POST", "/v1/orders")
    with tracer.start_as_current_span("POST /v1/orders") as span:
        context = span.get_span_context()
        assert correlation_id(request) == tracing.traceparent(context)
        assert tracing.is_sampled(correlation_id(request))
    request[TRACE_ID] = TRACE  # not sampled, or no EDGE_OTEL_ENDPOINT: no span, the trace id
    assert correlation_id(request) == TRACE
    assert not tracing.is_sampled(correlation_id(request))


def test_sampling_is_decided_once_per_request_and_a_callers_decision_wins() -> None:
    def incoming(header: str | None) -> tuple[int, bool]:
        headers = {"traceparent": header} if header else {}
        return incoming_trace(make_mocked_request("POST", "/v1/orders", headers=headers))

    assert incoming(None) == (0, False)
    assert incoming(f"00-{TRACE}-00f067aa0ba902b7-01") == (int(TRACE, 16), True)
    assert incoming(f"00-{TRACE}-00f067aa0ba902b7-02") == (int(TRACE, 16), False)
    assert incoming(f"00-{'0' * 32}-00f067aa0ba902b7-01") == (0, False)
    assert sampled((int(TRACE, 16), True), 0.0) and not sampled((int(TRACE, 16), False), 1.0)
    assert sampled((0, False), 1.0) and not sampled((0, False), 0.0)


@dataclass
class Record:
    headers: tuple[tuple[str, bytes], ...]


def test_a_feed_batch_adds_a_span_to_each_sampled_orders_trace() -> None:
    exporter = InMemorySpanExporter()
    tracer = gateway_tracing.tracer(OtelSettings(sample_ratio=0.0), exporter)
    feed = Feed(KafkaSettings(), Projection({}), Core([], disabled=True, window=0, max_size=1,
                timeout=1), "edge-test", tracer=tracer)  # fmt: skip
    plain = Record((("type", b"order_accepted"),))
    traced = Record((("type", b"trade_executed"), (tracing.TRACEPARENT_HEADER, PUBLISH.encode())))
    feed._trace({"tp": [plain, traced, traced, plain]}, 1_000, 4)
    (span,) = exporter.get_finished_spans()  # one per command, not per event
    assert span.name == "gateway.feed" and span.kind is SpanKind.CONSUMER
    assert format(span.context.trace_id, "032x") == TRACE
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert span.attributes is not None and span.attributes["messaging.batch.message_count"] == 4
    exporter.clear()
    feed._trace({"tp": [plain]}, 1_000, 1)
    assert exporter.get_finished_spans() == ()
    assert gateway_tracing.exporting(gateway_tracing.IDS_ONLY) is None
    assert trace.get_current_span() is trace.INVALID_SPAN
