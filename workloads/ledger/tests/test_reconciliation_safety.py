"""The seed's reconciliation-safety smoke, automated, with a real matcher and ledger:

1. the settlement consumer is paused while the matcher keeps sequencing: the lag rises over
   the threshold, is tolerated for the grace period, and then a breach appears;
2. in local mode the ledger switches the matcher to CANCEL_ONLY: new orders are rejected;
3. the consumer resumes, the lag returns to 0; only then is the latch release accepted,
   and the market trades NORMAL again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from contracts.v1 import common_pb2 as c
from contracts.v1 import matcher_pb2, matcher_pb2_grpc
from e2e.env.ledger import LedgerProcess
from e2e.env.matcher import MatcherProcess
from e2e.env.pytest_plugin import Schema
from workloads.ledger.tests.conftest import wait_for

pytestmark = pytest.mark.integration

ALICE = {"X-Admin-Token": "tok-alice"}


class Http:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def get(self, path: str) -> Any:
        async with self.session.get(self.url + path, headers=ALICE) as r:
            return await r.json()

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.post(self.url + path, json=body, headers=ALICE) as r:
            return r.status, await r.json()

    async def metric(self, name: str) -> float:
        async with self.session.get(self.url + "/metrics") as r:
            for line in (await r.text()).splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"metric {name} missing")


def order(
    account: str, n: int, side: c.Side.ValueType, price: int
) -> matcher_pb2.PlaceOrderRequest:
    return matcher_pb2.PlaceOrderRequest(
        symbol="BTC-USDT", account=account, client_order_id=f"{account}-{n}", side=side,
        order_type=c.ORDER_TYPE_LIMIT, time_in_force=c.TIME_IN_FORCE_GTC, price=price, quantity=1,
    )  # fmt: skip


async def test_lag_breach_switches_the_matcher_to_cancel_only_until_the_latch_is_released(
    run_dir: Path, pg_schema: Schema, kafka_bootstrap: str, kafka_topic: str
) -> None:
    matcher = MatcherProcess(
        run_dir / "safety", kafka_bootstrap=kafka_bootstrap, events_topic=kafka_topic
    )
    matcher.start()
    ledger = LedgerProcess(
        run_dir / "safety",
        pg_schema.dsn,
        kafka_bootstrap,
        kafka_topic,
        markets=f"BTC-USDT={matcher.target}",
        group_id=f"ledger-{kafka_topic}",
        admin_tokens="alice:tok-alice,bob:tok-bob",
        extra_env={
            "LEDGER_RECONCILIATION_INTERVAL_MS": "200",
            "LEDGER_RECONCILIATION_LAG_THRESHOLD": "5",
            "LEDGER_RECONCILIATION_LAG_GRACE_MS": "5000",
            "LEDGER_RECONCILIATION_STATE_STALE_MS": "20000",
            "LEDGER_RECONCILIATION_SAFETY_MODE": "CANCEL_ONLY",
            "LEDGER_RECONCILIATION_AUTO_SWITCH": "true",
            "LEDGER_RECONCILIATION_SAFETY_LATCH_ENABLED": "true",
            "LEDGER_INVARIANT_INTERVAL_MS": "0",
        },
    )
    ledger.start()
    channel = grpc.aio.insecure_channel(matcher.target)
    stub = matcher_pb2_grpc.MatcherStub(channel)
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session, ledger.url)
            for account, asset in (("alice", "USDT"), ("bob", "BTC")):
                status, body = await http.post(
                    "/v1/admin/adjustments",
                    {"adjustment_id": f"deposit-{account}", "symbol": "BTC-USDT",
                     "account": account, "asset": asset, "amount": "1000000",
                     "direction": "credit", "wait_ms": 10000},
                )  # fmt: skip
                assert (status, body["status"], body["booked"]) == (202, "accepted", True), body

            async def market() -> dict[str, Any]:
                status = await http.get("/v1/admin/reconciliation/status")
                result: dict[str, Any] = status["markets"][0]
                return result

            async def healthy() -> bool:
                m = await market()
                return m["lag"] == 0 and m["breach"] is False

            async def cancel_only() -> bool:
                s = await stub.GetStatus(matcher_pb2.GetStatusRequest(symbol="BTC-USDT"))
                return bool(s.mode == c.SYMBOL_MODE_CANCEL_ONLY)

            await wait_for(healthy, what="a healthy market before the drill")
            alerts = await http.metric("reconciliation_alert_total")

            # 1. Pause settlement; the matcher keeps sequencing orders.
            status, paused = await http.post("/v1/admin/consumers/settlement/pause")
            assert (status, paused["paused"]) == (200, True)
            for n in range(10):
                reply = await stub.PlaceOrder(order("alice", n, c.SIDE_BUY, 900 - n))
                assert reply.status == matcher_pb2.COMMAND_STATUS_ACCEPTED

            async def lagging() -> dict[str, Any] | None:
                m = await market()
                return m if m["lag"] > 5 else None

            m = await wait_for(lagging, what="the lag past the threshold")
            assert not m["breach"] and not m["latched"] and m["behind_seconds"] < 5  # the grace
            assert await cancel_only() is False

            async def breached() -> dict[str, Any] | None:
                m = await market()
                return m if m["breach"] and m["lag"] > 5 and m["latched"] else None

            m = await wait_for(breached, what="a lag breach")
            assert m["reason_codes"] == ["lag"] and m["behind_seconds"] > 5
            assert any("lag" in r and "> threshold 5" in r for r in m["reasons"])
            assert m["recommended_mode"] == "CANCEL_ONLY"
            assert await http.metric("reconciliation_breach_active") >= 1
            assert await http.metric("reconciliation_lag_max") > 5
            assert await http.metric("reconciliation_alert_total") == alerts + 1

            # 2. Local mode: the ledger switched the matcher; new orders are refused.
            await wait_for(cancel_only, what="the matcher in CANCEL_ONLY")
            assert await http.metric("reconciliation_safety_trigger_total") >= 1
            refused = await stub.PlaceOrder(order("bob", 1, c.SIDE_SELL, 1100))
            assert refused.status == matcher_pb2.COMMAND_STATUS_REJECTED
            assert refused.reject_reason == c.REJECT_REASON_MARKET_CANCEL_ONLY
            canceled = await stub.CancelOrder(
                matcher_pb2.CancelOrderRequest(
                    symbol="BTC-USDT", account="alice", client_order_id="alice-0"
                )
            )
            assert canceled.status == matcher_pb2.COMMAND_STATUS_ACCEPTED  # cancels still go

            # The latch cannot be released while settlement lags.
            status, body = await http.post("/v1/admin/reconciliation/latch/BTC-USDT/release")
            assert (status, body["code"]) == (409, "latch_release_refused")
            assert "lag is" in body["message"]

            # 3. Resume: the lag returns to 0, the latch holds the safety mode ...
            status, resumed = await http.post("/v1/admin/consumers/settlement/resume")
            assert (status, resumed["paused"]) == (200, False)
            await wait_for(healthy, what="the lag back to 0")
            m = await market()
            assert m["latched"] and m["recommended_mode"] == "CANCEL_ONLY"
            assert await cancel_only()

            # ... until the release, which is accepted now and restores NORMAL.
            status, body = await http.post("/v1/admin/reconciliation/latch/BTC-USDT/release")
            assert status == 200 and body["released"] and not body["latched"], body
            assert "latch released by alice" in body["last_action"]
            mode = await stub.GetStatus(matcher_pb2.GetStatusRequest(symbol="BTC-USDT"))
            assert mode.mode == c.SYMBOL_MODE_NORMAL
            accepted = await stub.PlaceOrder(order("bob", 2, c.SIDE_SELL, 1100))
            assert accepted.status == matcher_pb2.COMMAND_STATUS_ACCEPTED
            await wait_for(healthy, what="a healthy market after the release")
            assert await http.metric("reconciliation_breach_active") == 0

            detail = await http.get("/v1/admin/reconciliation/BTC-USDT?history=1000")
            history = detail["history"]
            assert any(h["breach"] and h["action"] == "engaged CANCEL_ONLY" for h in history)
            assert any((h["action"] or "").startswith("latch released by alice") for h in history)
            assert history[0]["lag"] == 0 and not history[0]["breach"]
            report = await http.post("/v1/admin/invariants/check")
            assert report[1]["ok"], report
    finally:
        await channel.close()
        ledger.stop()
        matcher.stop()
