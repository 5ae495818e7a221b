"""Deposits through the matcher are neither lost nor double-booked; a failed invariant latches
the market and halts it until the latch is released (a real matcher, Kafka, PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from contracts.v1 import common_pb2 as c
from contracts.v1 import funding_pb2, matcher_pb2, matcher_pb2_grpc
from e2e.env.matcher import MatcherProcess
from workloads.ledger import metrics
from workloads.ledger.settings import KafkaSettings
from workloads.ledger.tests.conftest import (
    Desk,
    close_client,
    headers,
    open_client,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration


async def test_a_deposit_made_while_the_matcher_is_down_is_resent_and_booked_once(
    run_dir: Path, ledger_dsn: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    matcher = MatcherProcess(
        run_dir / f"fund-{kafka_topic}", kafka_bootstrap=kafka_bootstrap, events_topic=kafka_topic
    )
    kafka = KafkaSettings(
        enabled=True, brokers=kafka_bootstrap, topic=kafka_topic, group_id=f"l-{kafka_topic}"
    )
    settings = replace(
        settings_for(ledger_dsn, f"BTC-USDT={matcher.target}", kafka=kafka), funding_retry_ms=100
    )
    ledger, client = await open_client(settings)
    deposit = {"adjustment_id": "dep-1", "symbol": "BTC-USDT", "account": "fay",
               "asset": "USDT", "amount": "700", "direction": "credit"}  # fmt: skip
    channel = grpc.aio.insecure_channel(matcher.target)
    try:
        response = await client.post("/v1/admin/adjustments", json=deposit, headers=headers())
        body = await response.json()
        assert (response.status, body["status"], body["booked"]) == (202, "pending", False)
        assert await ledger.pool.fetchval("SELECT count(*) FROM funding_requests") == 1

        matcher.start()  # the matcher comes back: the resender delivers the stored request

        async def booked() -> bool:
            return bool(
                await ledger.pool.fetchval("SELECT count(*) FROM journal WHERE kind = 'funding'")
            )

        await wait_for(booked, what="the resent deposit booked")
        # Resent again with the same id (a reply lost on the way back): the matcher says
        # duplicate and publishes nothing; the ledger books nothing more.
        stub = matcher_pb2_grpc.MatcherStub(channel)
        again = await stub.ApplyFunding(
            funding_pb2.FundingCommand(
                funding_id="dep-1", account="fay", asset="USDT", amount=700,
                direction=funding_pb2.FUNDING_DIRECTION_CREDIT,
            )
        )  # fmt: skip
        assert again.status == matcher_pb2.COMMAND_STATUS_DUPLICATE
        response = await client.post(
            "/v1/admin/adjustments", json={**deposit, "wait_ms": 5000}, headers=headers()
        )
        body = await response.json()
        assert (response.status, body["status"], body["booked"]) == (202, "accepted", True)
        response = await client.post(
            "/v1/admin/adjustments", json={**deposit, "amount": "701"}, headers=headers()
        )
        assert (await response.json())["code"] == "idempotency_conflict"

        status = await stub.GetStatus(matcher_pb2.GetStatusRequest(symbol="BTC-USDT"))

        async def settled() -> bool:
            applied = await ledger.pool.fetchval("SELECT applied_seq FROM market_state")
            return bool(applied == status.seq)

        await wait_for(settled, what="everything the matcher published settled")
        rows = await ledger.pool.fetch(
            """SELECT a.owner, b.available FROM balances b JOIN accounts a ON a.id = b.account_id
                WHERE a.asset = 'USDT' ORDER BY a.owner"""
        )
        assert [(r["owner"], r["available"]) for r in rows] == [("@external", -700), ("fay", 700)]
        assert await ledger.pool.fetchval("SELECT count(*) FROM journal") == 1
    finally:
        await channel.close()
        await close_client(ledger, client)
        matcher.stop()


async def test_a_failed_invariant_latches_and_halts_the_market_until_released(
    desk: Desk,
) -> None:
    await desk.deposit("gus", "BTC", 500)
    # A materialized balance edited behind the ledger's back: the books no longer add up.
    await desk.ledger.pool.execute(
        """UPDATE balances SET available = available - 900 WHERE account_id =
           (SELECT id FROM accounts WHERE owner = 'gus' AND asset = 'BTC')"""
    )
    triggers = metrics.INVARIANT_SAFETY_TRIGGERS._value.get()
    report = await desk.ledger.invariants.check()
    assert {x.name for x in report.checks if not x.ok} == {
        "balances_sum_zero", "no_negative_balances"
    }  # fmt: skip
    await desk.ledger.reconciler.guard(report)  # what the periodic job does with it
    status = await desk.stub.GetStatus(matcher_pb2.GetStatusRequest(symbol="BTC-USDT"))
    assert status.mode == c.SYMBOL_MODE_CANCEL_ONLY
    assert metrics.INVARIANT_SAFETY_TRIGGERS._value.get() == triggers + 1
    market = desk.ledger.reconciler.market_status("BTC-USDT")
    assert market["latched"] and market["latch_source"] == "invariant"
    assert market["recommended_mode"] == "CANCEL_ONLY"

    async def caught_up() -> bool:
        await desk.call("/v1/admin/reconciliation/evaluate")
        return bool(desk.ledger.reconciler.market_status("BTC-USDT")["lag"] == 0)

    await wait_for(caught_up, what="settlement of the mode change")
    status_code, body = await desk.call("/v1/admin/reconciliation/latch/BTC-USDT/release")
    assert (status_code, body["code"]) == (409, "latch_release_refused")
    assert "invariant failed: balances_sum_zero" in body["message"]

    status_code, repaired = await desk.call("/v1/admin/rebuild-balances", {"repair": True})
    assert status_code == 200 and repaired["repaired"]
    status_code, body = await desk.call("/v1/admin/reconciliation/latch/BTC-USDT/release")
    assert status_code == 200 and not body["latched"], body
    status = await desk.stub.GetStatus(matcher_pb2.GetStatusRequest(symbol="BTC-USDT"))
    assert status.mode == c.SYMBOL_MODE_NORMAL
