"""One order is one trace, in a real trace store: Jaeger (built from the module proxy, in
memory) takes the spans of a real matcher, ledger and gateway, each its own process with
its *_OTEL_ENDPOINT pointed at Jaeger (the gateway and the ledger over OTLP/HTTP, the matcher
over OTLP/gRPC: both exporters). Two traders signed up through the gateway and funded
through the ledger cross; the taker's `X-Trace-Id` finds, through Jaeger's query API, one
trace that holds the gateway's request, the matcher's batch, WAL commit and outbox publish,
the ledger's settlement and the gateway's feed, each span's parent in the trace.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import expect

from e2e.drills.traders import deposit
from e2e.env import gobuild
from e2e.env.browser import chromium
from e2e.env.gateway import GatewayProcess
from e2e.env.jaeger import JaegerServer, TraceSpan, waterfall
from e2e.env.ledger import LedgerProcess
from e2e.env.matcher import MatcherProcess
from e2e.env.pytest_plugin import Schema, unique_name
from workloads.gateway.client import GatewayClient
from workloads.gateway.markets import Market, catalogue_json

pytestmark = pytest.mark.e2e

SYMBOL = "BTC-USDT"
EXPECTED = {
    ("edge-gateway", "POST /v1/orders"),
    ("matcher", "matcher.batch"),
    ("matcher", "matcher.wal_commit"),
    ("matcher", "matcher.outbox_publish"),
    ("ledger", "ledger.settle_batch"),
    ("edge-gateway", "gateway.feed"),
}


@dataclass
class Venue:
    jaeger: JaegerServer
    matcher: MatcherProcess
    ledger: LedgerProcess
    gateway: GatewayProcess


@pytest.fixture
def jaeger(run_dir: Path) -> Iterator[JaegerServer]:
    if not gobuild.binary("jaeger").exists():
        pytest.fail("Jaeger is not built: run `make setup`", pytrace=False)
    server = JaegerServer(run_dir / unique_name("jaeger"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def venue(
    jaeger: JaegerServer, run_dir: Path, pg_schema: Schema, kafka_bootstrap: str, kafka_topic: str
) -> Iterator[Venue]:
    """A matcher, a ledger and a gateway exporting every sampled order's spans to Jaeger."""
    directory = run_dir / unique_name("traces")
    matcher = MatcherProcess(directory, symbol=SYMBOL, kafka_bootstrap=kafka_bootstrap,
                             events_topic=kafka_topic)  # fmt: skip
    market = Market(SYMBOL, "BTC", "USDT", matcher=matcher.target)
    matcher.extra_env.update(
        {**market.matcher_env(), "MATCHER_OTEL_ENDPOINT": jaeger.otlp_grpc_endpoint}
    )
    ledger = LedgerProcess(
        directory, pg_schema.server_dsn, kafka_bootstrap, kafka_topic,
        markets=f"{SYMBOL}={matcher.target}", group_id=f"ledger-{kafka_topic}",
        extra_env={"LEDGER_DB_SCHEMA": f"ledger_{pg_schema.name}",
                   "LEDGER_OTEL_ENDPOINT": jaeger.otlp_http_endpoint},
    )  # fmt: skip
    gateway = GatewayProcess(
        directory, pg_schema.server_dsn, catalogue_json((market,)),
        kafka_bootstrap=kafka_bootstrap, events_topic=kafka_topic, schema=pg_schema.name,
        extra_env={"EDGE_SEED_MARKET_DATA": "false",
                   "EDGE_OTEL_ENDPOINT": jaeger.otlp_http_endpoint,
                   "EDGE_OTEL_SAMPLE_RATIO": "1.0"},
    )  # fmt: skip
    started: list[MatcherProcess | LedgerProcess | GatewayProcess] = []
    try:
        for part in (matcher, ledger, gateway):
            part.start()
            started.append(part)
        yield Venue(jaeger, matcher, ledger, gateway)
    finally:
        for part in reversed(started):
            part.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def trader(http: aiohttp.ClientSession, venue: Venue) -> GatewayClient:
    """Signed up through the gateway, with an API key, funded through the ledger."""
    client = GatewayClient(http, venue.gateway.url)
    login = await client.login(f"t-{uuid.uuid4().hex[:10]}@example.com", "correct horse battery",
                               signup=True)  # fmt: skip
    key, secret = await client.new_api_key("traces")
    for asset, amount in (("BTC", 10**8), ("USDT", 10**11)):
        await deposit(http, venue.ledger.url, "", SYMBOL, str(login["account"]), asset, amount)
    return GatewayClient(http, venue.gateway.url, api_key=key, secret=secret)


async def whole_trace(jaeger: JaegerServer, trace_id: str, within: float = 30.0) -> list[TraceSpan]:
    """Poll the query API until the trace holds every expected span (bounded)."""
    deadline = time.monotonic() + within
    spans: list[TraceSpan] = []
    while time.monotonic() < deadline:
        spans = await asyncio.to_thread(jaeger.trace, trace_id)
        if {(s.service, s.name) for s in spans} >= EXPECTED:
            return spans
        await asyncio.sleep(0.2)
    raise AssertionError(f"trace {trace_id} incomplete after {within}s:\n{waterfall(spans)}")


async def test_an_order_that_fills_is_one_trace_across_the_venue(
    venue: Venue, http: aiohttp.ClientSession
) -> None:
    maker, taker = await trader(http, venue), await trader(http, venue)
    order = {"symbol": SYMBOL, "side": "SELL", "price": "60000.00", "quantity": "0.0100"}
    resting = await maker.call("POST", "/v1/orders", order)
    assert resting.status == 201, resting.body
    taken = await taker.call("POST", "/v1/orders", {**order, "side": "BUY", "time_in_force": "IOC"})
    assert taken.status == 201 and taken.body["status"] == "FILLED", taken.body
    trace_id = taken.headers["X-Trace-Id"]

    spans = await whole_trace(venue.jaeger, trace_id)
    shown = waterfall(spans)
    print(f"trace {trace_id}:\n{shown}")  # shown with -s
    by_id = {span.span_id: span for span in spans}
    roots = [span for span in spans if not span.parent_id]
    assert [(r.service, r.name) for r in roots] == [("edge-gateway", "POST /v1/orders")], shown
    assert all(span.parent_id in by_id for span in spans if span.parent_id), shown

    def parents(name: str) -> set[str]:
        """The names of the parents of the spans called `name` (a command's events may
        be settled or fed in two batches: two spans, one parent)."""
        return {by_id[s.parent_id].name for s in spans if s.name == name}

    assert parents("matcher.batch") == {"POST /v1/orders"}, shown
    assert parents("matcher.wal_commit") == {"matcher.batch"}, shown
    assert parents("matcher.outbox_publish") == {"POST /v1/orders"}, shown
    assert parents("ledger.settle_batch") == {"matcher.outbox_publish"}, shown
    assert parents("gateway.feed") == {"matcher.outbox_publish"}, shown
    (batch,) = (s for s in spans if s.name == "matcher.batch")
    assert batch.attributes["matcher.seq"] == taken.body["seq"], shown
    assert batch.attributes["exchange.market"] == SYMBOL

    # The maker's order is a trace of its own; the taker's holds nothing of it.
    maker_spans = await whole_trace(venue.jaeger, resting.headers["X-Trace-Id"])
    assert not {s.span_id for s in maker_spans} & set(by_id)

    # A person opens the trace in a browser: Jaeger serves the viewer on its own origin.
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{venue.jaeger.query_url}/#{trace_id}")
        for name in ("POST /v1/orders", "matcher.batch", "ledger.settle_batch", "gateway.feed"):
            await expect(page.get_by_role("cell", name=name, exact=True)).to_be_visible()
        await page.goto(f"{venue.jaeger.query_url}/")
        await expect(page.get_by_role("link", name=trace_id)).to_be_visible()
