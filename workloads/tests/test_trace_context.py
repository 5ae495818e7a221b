"""The trace context that joins one order's spans across processes, and the trace id in the
JSON logs: the shared helpers of `workloads.common.tracing` and `workloads.common.logs`."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from workloads.common import logs, tracing

pytestmark = pytest.mark.unit

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED = f"00-{TRACE}-00f067aa0ba902b7-01"


@dataclass(frozen=True)
class Settings:
    endpoint: str = ""
    insecure: bool = True
    service_name: str = "test"
    sample_ratio: float = 0.0


def test_the_endpoint_chooses_the_maintained_exporter() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    assert isinstance(tracing.exporter_for(Settings("http://127.0.0.1:4318/v1/traces")), Http)
    assert isinstance(tracing.exporter_for(Settings("127.0.0.1:4317")), Grpc)
    assert isinstance(tracing.exporter_for(Settings("http://127.0.0.1:4317")), Grpc)


def test_a_sampled_parent_is_continued_even_where_new_traces_are_never_sampled() -> None:
    exporter = InMemorySpanExporter()
    tracer = tracing.provider(Settings(sample_ratio=0.0), exporter).get_tracer("t")
    with tracer.start_as_current_span("root"):  # ratio 0: not recorded
        pass
    assert exporter.get_finished_spans() == ()
    started = time.time_ns()
    context = tracing.span_after(
        tracer, "later", tracing.parent_of(SAMPLED), started, started + 1000,
        kind=SpanKind.CONSUMER, attributes={"n": 1}, error=RuntimeError("boom"),
    )  # fmt: skip
    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == TRACE
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert (span.start_time, span.end_time) == (started, started + 1000)
    assert span.kind is SpanKind.CONSUMER and span.status.status_code is StatusCode.ERROR
    child = trace.get_current_span(context).get_span_context()
    assert tracing.traceparent(child) == f"00-{TRACE}-{child.span_id:016x}-01"
    assert tracing.is_sampled(tracing.traceparent(child))


def test_log_lines_carry_the_trace_id_of_the_span_or_request_being_served() -> None:
    formatter = logs.JsonFormatter("test")

    def line() -> dict[str, object]:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
        parsed: dict[str, object] = json.loads(formatter.format(record))
        return parsed

    assert "trace_id" not in line()
    bound = logs.TRACE_ID.set("ab" * 16)  # ids only (no spans built)
    try:
        assert line()["trace_id"] == "ab" * 16
        parent = tracing.parent_of(SAMPLED)
        assert parent is not None
        with trace.use_span(trace.get_current_span(parent)):  # a span is current: it wins
            assert line()["trace_id"] == TRACE
    finally:
        logs.TRACE_ID.reset(bound)
    assert "trace_id" not in line()
