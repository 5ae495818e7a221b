"""LEDGER_OTEL_*: settings, OTLP/HTTP export to a collector, spans per request and per batch."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from e2e.bench import simulate
from workloads.ledger import tracing
from workloads.ledger.api import build_app
from workloads.ledger.service import Ledger
from workloads.ledger.settings import LedgerSettings, OtelSettings, SettingsError
from workloads.ledger.tests.conftest import decode_all, headers, settings_for
from workloads.matcher import engine as e
from workloads.matcher.spec import MarketSpec

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.mark.unit
def test_the_seeds_otel_variables_are_read_and_checked() -> None:
    settings = LedgerSettings.from_env(
        {
            "LEDGER_OTEL_ENDPOINT": "http://localhost:24318/v1/traces",
            "LEDGER_OTEL_SAMPLE_PROB": "0.25",
        }
    )
    assert settings.otel == OtelSettings("http://localhost:24318/v1/traces", 0.25, "ledger", True)
    assert LedgerSettings.from_env({}).otel == OtelSettings()
    for bad in ("1.5", "-0.1", "often", "nan"):
        with pytest.raises(SettingsError, match="LEDGER_OTEL_SAMPLE_PROB"):
            LedgerSettings.from_env({"LEDGER_OTEL_SAMPLE_PROB": bad})
    assert tracing.is_http("http://localhost:24318/v1/traces")
    assert not tracing.is_http("localhost:24317") and not tracing.is_http("http://collector:4317")
    assert tracing.incoming_trace_id(TRACEPARENT) == TRACE_ID
    assert tracing.incoming_trace_id("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert tracing.incoming_trace_id("garbage") is None


@pytest.fixture
def collector() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """An OTLP/HTTP collector on a free port: every POSTed body, decoded."""
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.unit
def test_spans_reach_an_otlp_http_collector(
    collector: tuple[str, list[ExportTraceServiceRequest]],
) -> None:
    url, received = collector
    provider = tracing.provider(OtelSettings(url, service_name="ledger-test"))
    with tracing.tracer(provider).start_as_current_span("ledger.settle_batch"):
        pass
    provider.shutdown()  # flushes the batch processor
    spans = [
        s for r in received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans
    ]
    assert [s.name for s in spans] == ["ledger.settle_batch"]
    resource = json_format.MessageToDict(received[0].resource_spans[0].resource)
    assert {"key": "service.name", "value": {"stringValue": "ledger-test"}} in resource[
        "attributes"
    ]


@pytest.mark.integration
async def test_requests_and_batches_are_spans_and_responses_carry_the_trace_id(
    ledger_dsn: str,
) -> None:
    exported = InMemorySpanExporter()
    ledger = await Ledger.open(settings_for(ledger_dsn), span_exporter=exported)
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ledger), host="127.0.0.1"))
    await client.start_server()
    try:
        sim = simulate.Simulator(SPEC)
        events = sim.start_epoch(1) + sim.run(simulate.funding(["alice"], SPEC, 10**6))
        await ledger.applier.submit(decode_all(events))
        (accepted,) = sim.run([(e.C_PLACE, "alice", "o1", e.BUY, e.LIMIT, e.GTC, 100, 5, False, 0)])
        body = json_format.MessageToDict(accepted.order_accepted, preserving_proto_field_name=True)
        response = await client.post(
            "/v1/internal/orders/reserve",
            data=json.dumps(body),
            headers={**headers(), "traceparent": TRACEPARENT},
        )
        assert response.status == 200 and (await response.json())["applied"] is True
        assert response.headers["X-Trace-Id"] == TRACE_ID  # the caller's trace, continued
    finally:
        await client.close()
        await ledger.close()
    spans = {s.name: s for s in exported.get_finished_spans()}
    server = spans["POST /v1/internal/orders/reserve"]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.attributes is not None and server.attributes["http.status_code"] == 200
    batch = spans["ledger.settle_batch"]
    assert batch.attributes is not None and batch.attributes["ledger.applied"] == 1


@pytest.mark.integration
async def test_without_an_endpoint_no_span_is_built_and_trace_ids_still_flow(
    ledger_dsn: str,
) -> None:
    ledger = await Ledger.open(settings_for(ledger_dsn))
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ledger), host="127.0.0.1"))
    await client.start_server()
    try:
        assert ledger.tracer_provider is None
        continued = await client.get("/healthz", headers={"traceparent": TRACEPARENT})
        assert continued.headers["X-Trace-Id"] == TRACE_ID
        fresh = (await client.get("/healthz")).headers["X-Trace-Id"]
        assert len(fresh) == 32 and fresh != TRACE_ID and int(fresh, 16)
    finally:
        await client.close()
        await ledger.close()


@pytest.mark.integration
async def test_a_batch_with_sampled_orders_settles_in_each_of_their_traces(
    ledger_dsn: str,
) -> None:
    """The events' traceparent headers (the matcher's publish spans) parent one settlement
    span each, with the batch's timing; no trace of the ledger's own is started for it."""
    exported = InMemorySpanExporter()
    ledger = await Ledger.open(settings_for(ledger_dsn), span_exporter=exported)
    other = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    try:
        sim = simulate.Simulator(SPEC)
        events = sim.start_epoch(1) + sim.run(simulate.funding(["alice"], SPEC, 10**6))
        parents = [TRACEPARENT.encode(), TRACEPARENT.encode(), other.encode(), b"garbage"]
        await ledger.applier.submit(decode_all(events), parents)
    finally:
        await ledger.close()
    spans = exported.get_finished_spans()
    assert [s.name for s in spans] == ["ledger.settle_batch"] * 2
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID, "a" * 32}
    for span in spans:
        assert span.parent is not None and span.parent.is_remote
        assert span.attributes is not None and span.attributes["ledger.traces"] == 2
        assert span.attributes["ledger.events"] == len(events)
