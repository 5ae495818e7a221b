"""Tracing in-process (real PostgreSQL, in-memory span exporter): every response carries
X-Trace-Id, the span is exported with route and status, and an incoming W3C traceparent
is continued."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from e2e.env.process import free_port
from e2e.env.pytest_plugin import Schema
from workloads.gateway.app import init_app
from workloads.gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration


@pytest.fixture
async def served(pg_schema: Schema) -> AsyncIterator[tuple[str, InMemorySpanExporter]]:
    settings = GatewaySettings.from_env(
        {
            "EDGE_DB_DSN": pg_schema.server_dsn,
            "EDGE_DB_SCHEMA": pg_schema.name,
            "EDGE_DISABLE_CORE": "true",
            "EDGE_SEED_MARKET_DATA": "true",
            "EDGE_OTEL_SAMPLE_RATIO": "1.0",
        }
    )
    exporter = InMemorySpanExporter()
    runner = web.AppRunner(init_app(settings, exporter))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", exporter
    finally:
        await runner.cleanup()


async def test_trace_id_header_and_exported_span(
    served: tuple[str, InMemorySpanExporter],
) -> None:
    url, exporter = served
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/v1/markets/BTC-USDT/ticker") as response:
            assert response.status == 200
            body = await response.json()
            trace_id = response.headers["X-Trace-Id"]
        assert body["sample"] is True  # no matcher: sample data, marked as such
        parent = "4bf92f3577b34da6a3ce929d0e0e4736"
        headers = {"traceparent": f"00-{parent}-00f067aa0ba902b7-01"}
        async with http.get(url + "/v1/markets/NOPE/trades", headers=headers) as response:
            assert response.status == 404
            assert response.headers["X-Trace-Id"] == parent
            assert (await response.json())["code"] == "unknown_market"
    spans = exporter.get_finished_spans()
    first = next(s for s in spans if format(s.context.trace_id, "032x") == trace_id)
    assert first.name == "GET /v1/markets/{symbol}/ticker"
    assert first.attributes is not None and first.attributes["http.status_code"] == 200
    continued = next(s for s in spans if format(s.context.trace_id, "032x") == parent)
    assert continued.attributes is not None and continued.attributes["http.status_code"] == 404
