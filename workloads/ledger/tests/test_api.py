"""The HTTP API on a real database: typed errors that change nothing, the injection path,
rebuild, invariants, and a gap surfacing as a reconciliation mismatch."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from google.protobuf import json_format

from contracts.v1 import events_pb2
from e2e.bench import simulate
from workloads.common.booked import booked_trade
from workloads.ledger import metrics
from workloads.ledger.service import Ledger
from workloads.ledger.tests.conftest import (
    close_client,
    decode_all,
    headers,
    open_client,
    settings_for,
)
from workloads.matcher import engine as e
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.integration

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT")
TABLES = ("accounts", "journal", "postings", "funding_requests", "correction_requests",
          "parked_events")  # fmt: skip


class Api:
    def __init__(self, ledger: Ledger, client: TestClient[Any, Any]) -> None:
        self.ledger = ledger
        self.client = client

    async def call(
        self, method: str, path: str, body: Any = None, admin: str | None = "alice", **kw: Any
    ) -> tuple[int, Any]:
        hdrs = headers(admin) if admin else {}
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
        response = await self.client.request(method, path, data=data, headers=hdrs, **kw)
        return response.status, await response.json()

    async def counts(self) -> dict[str, int]:
        return {t: await self.ledger.pool.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}


@pytest.fixture
async def api(ledger_dsn: str) -> AsyncIterator[Api]:
    ledger, client = await open_client(settings_for(ledger_dsn, "BTC-USDT=127.0.0.1:1"))
    yield Api(ledger, client)
    await close_client(ledger, client)


def as_json(event: events_pb2.Event) -> dict[str, Any]:
    kind = event.WhichOneof("body")
    assert kind is not None
    return json_format.MessageToDict(getattr(event, kind), preserving_proto_field_name=True)


async def funded(api: Api) -> simulate.Simulator:
    """Accounts alice and bob funded through the settlement path (as from the matcher)."""
    sim = simulate.Simulator(SPEC)
    events = sim.start_epoch(1) + sim.run(simulate.funding(["alice", "bob"], SPEC, 10**6))
    await api.ledger.applier.submit(decode_all(events))
    return sim


async def test_admin_and_internal_routes_need_a_valid_token(api: Api) -> None:
    before = await api.counts()
    errors = metrics.API_ERRORS.labels("unauthorized")._value.get()
    for method, path in [("GET", "/v1/admin/balances"), ("GET", "/v1/balances"),
                         ("POST", "/v1/internal/trades/executed"),
                         ("POST", "/v1/admin/adjustments"),
                         ("POST", "/v1/admin/reconciliation/latch/BTC-USDT/release")]:  # fmt: skip
        status, body = await api.call(method, path, {}, admin=None)
        assert (status, body["code"]) == (401, "unauthorized"), path
        response = await api.client.request(method, path, headers={"X-Admin-Token": "tok-alicf"})
        assert response.status == 401
    assert metrics.API_ERRORS.labels("unauthorized")._value.get() == errors + 10
    assert (await api.client.get("/healthz")).status == 200
    assert (await api.client.get("/readyz")).status == 200
    assert await api.counts() == before


async def test_bad_input_gets_a_typed_4xx_and_writes_nothing(api: Api) -> None:
    sim = await funded(api)
    (accepted,) = sim.run([(e.C_PLACE, "alice", "o1", e.BUY, e.LIMIT, e.GTC, 100, 5, False, 0)])
    reserve = as_json(accepted)
    before = await api.counts()
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "/v1/internal/orders/reserve", b"{not json", 400, "malformed_json"),
        ("POST", "/v1/internal/orders/reserve", b"[]", 400, "invalid_payload"),
        ("POST", "/v1/internal/orders/reserve", {**reserve, "extra": 1}, 400, "invalid_payload"),
        ("POST", "/v1/internal/orders/reserve", b"x" * 20_000, 413, "payload_too_large"),
        ("POST", "/v1/internal/orders/reserve", {**reserve, "reserved_amount": "-500"}, 422,
         "negative_amount"),
        ("POST", "/v1/internal/orders/reserve", {**reserve, "reserved_asset": "EUR"}, 422,
         "unknown_asset"),
        ("POST", "/v1/internal/orders/reserve", {**reserve, "account": "mallory"}, 422,
         "unknown_account"),
        ("POST", "/v1/internal/orders/reserve",
         {**reserve, "envelope": {**reserve["envelope"], "symbol": "ETH-USDT",
                                  "event_id": f"ETH-USDT:{sim.engine.seq}:0"}},
         404, "unknown_market"),
        ("POST", "/v1/admin/adjustments",
         {"adjustment_id": "d1", "symbol": "BTC-USDT", "account": "alice", "asset": "USDT",
          "amount": -5, "direction": "credit"}, 422, "negative_amount"),
        ("POST", "/v1/admin/adjustments",
         {"adjustment_id": "d2", "symbol": "BTC-USDT", "account": "mallory", "asset": "USDT",
          "amount": 5, "direction": "debit"}, 422, "unknown_account"),
        ("POST", "/v1/admin/adjustments",
         {"adjustment_id": "d3", "symbol": "BTC-USDT", "account": "alice", "asset": "DOGE",
          "amount": 5, "direction": "credit"}, 422, "unknown_asset"),
        ("POST", "/v1/admin/corrections/requests",
         {"kind": "adjustment", "symbol": "BTC-USDT", "account": "mallory", "asset": "USDT",
          "amount": "5", "reason": "x"}, 422, "unknown_account"),
        ("POST", "/v1/admin/corrections/requests",
         {"kind": "adjustment", "symbol": "BTC-USDT", "account": "alice", "asset": "USDT",
          "amount": "0", "reason": "x"}, 422, "invalid_amount"),
        ("POST", "/v1/admin/corrections/requests",
         {"kind": "reversal", "reverses": "BTC-USDT:999:0", "reason": "x"}, 422,
         "unknown_reference"),
        ("POST", "/v1/admin/corrections/requests",
         {"kind": "reversal", "reverses": "BTC-USDT:2:0", "reason": ""}, 400, "invalid_field"),
        ("GET", "/v1/admin/balances?account=mallory", None, 422, "unknown_account"),
        ("GET", "/v1/admin/reconciliation/ETH-USDT", None, 404, "unknown_market"),
        ("GET", "/v1/admin/trades/nope", None, 404, "unknown_trade"),
        ("GET", "/v1/admin/nowhere", None, 404, "not_found"),
        ("DELETE", "/v1/admin/balances", None, 405, "method_not_allowed"),
    ]  # fmt: skip
    for method, path, body, status, code in cases:
        errors = metrics.API_ERRORS.labels(code)._value.get()
        got_status, got = await api.call(method, path, body)
        assert (got_status, got.get("code")) == (status, code), (path, body, got)
        assert isinstance(got.get("message"), str) and got["message"]
        assert metrics.API_ERRORS.labels(code)._value.get() == errors + 1
    assert await api.counts() == before


async def test_injected_events_settle_once_through_the_consumers_path(api: Api) -> None:
    sim = await funded(api)
    events = sim.run(
        [
            (e.C_PLACE, "bob", "s1", e.SELL, e.LIMIT, e.GTC, 100, 5, False, 0),
            (e.C_PLACE, "alice", "b1", e.BUY, e.LIMIT, e.GTC, 101, 5, False, 0),
        ]
    )
    routes = {
        "order_accepted": "/v1/internal/orders/reserve",
        "trade_executed": "/v1/internal/trades/executed",
    }
    for event in events:
        status, body = await api.call("POST", routes[str(event.WhichOneof("body"))], as_json(event))
        assert (status, body["applied"], body["outcome"]) == (200, True, "applied"), body
    trade = events[-1].trade_executed
    journal = await api.ledger.pool.fetchval("SELECT count(*) FROM journal")
    status, again = await api.call("POST", routes["trade_executed"], as_json(events[-1]))
    assert (status, again["applied"], again["outcome"]) == (200, False, "duplicate")
    assert await api.ledger.pool.fetchval("SELECT count(*) FROM journal") == journal
    # Kafka redelivering the same events: duplicates too (one cursor, one dedup).
    outcomes = await api.ledger.applier.submit(decode_all(events))
    assert {o.verdict.value for o in outcomes} == {"duplicate"}

    status, balances = await api.call("GET", "/v1/admin/balances?account=alice")
    assert status == 200
    assert {(b["asset"], b["available"], b["hold"]) for b in balances["balances"]} == {
        ("BTC", str(10**6 + 5), "0"),
        ("USDT", str(10**6 - 500), "0"),  # 505 held, 500 paid, 5 price improvement back
    }
    status, found = await api.call("GET", f"/v1/admin/trades/{trade.trade_id}")
    assert status == 200 and found["trades"][0]["event_id"] == trade.envelope.event_id
    assert len(found["trades"][0]["postings"]) == 5

    # A deposed leader's event (epoch 1 after epoch 2 began) is refused, typed and counted.
    await api.ledger.applier.submit(decode_all(sim.start_epoch(2)))
    (late,) = sim.run([(e.C_PLACE, "bob", "s2", e.SELL, e.LIMIT, e.GTC, 120, 1, False, 0)])
    late.order_accepted.envelope.epoch = 1
    stale = metrics.STALE_EPOCH.labels("BTC-USDT")._value.get()
    status, body = await api.call("POST", routes["order_accepted"], as_json(late))
    assert (status, body["code"]) == (409, "stale_epoch")
    assert metrics.STALE_EPOCH.labels("BTC-USDT")._value.get() == stale + 1
    assert await api.ledger.pool.fetchval("SELECT count(*) FROM journal") == journal


async def test_a_seq_gap_stalls_settlement_and_raises_a_mismatch(api: Api) -> None:
    sim = await funded(api)
    skipped = sim.run([(e.C_PLACE, "bob", "s1", e.SELL, e.LIMIT, e.GTC, 100, 5, False, 0)])
    (after,) = sim.run([(e.C_PLACE, "alice", "b1", e.BUY, e.LIMIT, e.GTC, 90, 5, False, 0)])
    status, body = await api.call("POST", "/v1/internal/orders/reserve", as_json(after))
    assert (status, body["outcome"], body["applied"]) == (202, "parked", False)
    status, _ = await api.call(
        "POST", "/v1/internal/reconciliation/engine-seq", {"symbol": "BTC-USDT", "seq": 7}
    )
    assert status == 200
    mismatches = metrics.RECONCILIATION_MISMATCHES._value.get()
    status, report = await api.call("POST", "/v1/admin/reconciliation/evaluate")
    (market,) = report["markets"]
    assert market["mismatch"] and market["breach"] and market["latched"]
    assert any("settlement stalled: seq gap" in r for r in market["reasons"])
    assert market["recommended_mode"] == "CANCEL_ONLY"
    assert metrics.RECONCILIATION_MISMATCHES._value.get() == mismatches + 1
    status, detail = await api.call("GET", "/v1/admin/reconciliation/BTC-USDT?history=5")
    assert status == 200 and detail["history"][0]["mismatch"]
    # Filling the gap lets the parked event through; the mismatch clears, the latch stays.
    await api.ledger.applier.submit(decode_all(skipped))
    status, report = await api.call("POST", "/v1/admin/reconciliation/evaluate")
    (market,) = report["markets"]
    assert not market["mismatch"] and market["lag"] == 0 and market["latched"]
    assert await api.ledger.pool.fetchval("SELECT count(*) FROM parked_events") == 0


async def test_rebuild_and_invariants_find_a_tampered_balance_and_repair_it(api: Api) -> None:
    sim = await funded(api)
    await api.ledger.applier.submit(
        decode_all(sim.run([(e.C_PLACE, "bob", "s1", e.SELL, e.LIMIT, e.GTC, 100, 5, False, 0)]))
    )
    status, report = await api.call("POST", "/v1/admin/invariants/check")
    assert status == 200 and report["ok"], report
    status, rebuilt = await api.call("POST", "/v1/admin/rebuild-balances")
    assert (status, rebuilt["consistent"], rebuilt["accounts"]) == (200, True, 6)
    # Someone edits a materialized balance behind the ledger's back.
    await api.ledger.pool.execute(
        """UPDATE balances SET available = available + 7 WHERE account_id =
           (SELECT id FROM accounts WHERE owner = 'bob' AND asset = 'BTC')"""
    )
    status, report = await api.call("POST", "/v1/admin/invariants/check")
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert not report["ok"] and failed == {"balances_sum_zero"}
    status, rebuilt = await api.call("POST", "/v1/admin/rebuild-balances")
    (diff,) = rebuilt["differences"]
    assert (diff["account"], diff["asset"]) == ("bob", "BTC")
    assert diff["materialized_available"] - diff["rebuilt_available"] == 7
    status, repaired = await api.call("POST", "/v1/admin/rebuild-balances", {"repair": True})
    assert repaired["repaired"]
    status, rebuilt = await api.call("POST", "/v1/admin/rebuild-balances")
    assert rebuilt["consistent"]
    status, report = await api.call("POST", "/v1/admin/invariants/check")
    assert report["ok"]


async def test_an_accounts_trades_come_newest_first_with_postings_and_their_taker(
    api: Api,
) -> None:
    spec = MarketSpec("BTC-USDT", "BTC", "USDT", maker_fee_bps=10, taker_fee_bps=20)
    sim = simulate.Simulator(spec)
    events = sim.start_epoch(1) + sim.run(simulate.funding(["alice", "bob"], spec, 10**9))
    events += sim.run(
        [
            (e.C_PLACE, "bob", "s1", e.SELL, e.LIMIT, e.GTC, 10_000, 50, False, 0),
            (e.C_PLACE, "alice", "b1", e.BUY, e.LIMIT, e.GTC, 10_100, 20, False, 0),  # taker
            (e.C_PLACE, "alice", "b2", e.BUY, e.LIMIT, e.GTC, 9_000, 10, False, 0),
            (e.C_PLACE, "bob", "s2", e.SELL, e.MARKET, e.IOC, 0, 10, False, 0),  # bob takes
        ]
    )
    await api.ledger.applier.submit(decode_all(events))
    trades = [ev.trade_executed for ev in events if ev.WhichOneof("body") == "trade_executed"]
    assert len(trades) == 2

    status, page = await api.call("GET", "/v1/admin/accounts/alice/trades")
    assert status == 200 and page["next_before"] is None
    assert [t["trade_id"] for t in page["trades"]] == [trades[1].trade_id, trades[0].trade_id]
    assert [t["taker"] for t in page["trades"]] == ["bob", "alice"]
    for found, sent in zip(page["trades"], reversed(trades), strict=True):
        postings = [(p["account"], p["asset"], p["bucket"], int(p["amount"]))
                    for p in found["postings"]]  # fmt: skip
        booked = booked_trade("BTC", "USDT", postings)
        assert (booked.buyer, booked.seller) == (sent.buyer_account, sent.seller_account)
        assert (booked.quantity, booked.quote_amount) == (sent.base_amount, sent.quote_amount)
        assert (booked.buyer_fee, booked.seller_fee) == (sent.buyer_fee, sent.seller_fee)
        assert booked.price(spec.lot_size) == sent.price
        assert found["seq"] == sent.envelope.seq and found["symbol"] == "BTC-USDT"

    status, first = await api.call("GET", "/v1/admin/accounts/bob/trades?limit=1")
    assert [t["trade_id"] for t in first["trades"]] == [trades[1].trade_id]
    status, second = await api.call(
        "GET", f"/v1/admin/accounts/bob/trades?limit=1&before={first['next_before']}"
    )
    assert [t["trade_id"] for t in second["trades"]] == [trades[0].trade_id]
    status, none = await api.call("GET", "/v1/admin/accounts/bob/trades?symbol=ETH-USDT")
    assert (status, none["trades"]) == (200, [])
    for query in ("limit=0", "limit=501", "before=x", "from=-1"):
        status, refused = await api.call("GET", f"/v1/admin/accounts/bob/trades?{query}")
        assert (status, refused["code"]) == (400, "invalid_field"), query
    status, _ = await api.call("GET", "/v1/admin/accounts/bob/trades", admin=None)
    assert status == 401
