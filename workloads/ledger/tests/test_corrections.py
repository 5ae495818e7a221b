"""Corrections end to end (a real matcher, Kafka and PostgreSQL): request, two approvals by
two other admins, apply once; every forbidden path refused with a typed error."""

from __future__ import annotations

from dataclasses import replace

import pytest

from contracts.v1 import common_pb2 as c
from contracts.v1 import matcher_pb2
from workloads.ledger.settings import HttpSettings
from workloads.ledger.tests.conftest import (
    Desk,
    close_client,
    headers,
    open_client,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration


async def test_a_reversal_needs_two_other_admins_and_applies_exactly_once(desk: Desk) -> None:
    deposit = await desk.deposit("dora", "USDT", 1000)
    reference = await desk.journal_reference(deposit["journal_id"])
    assert await desk.balance("dora", "USDT") == (1000, 0)

    status, req = await desk.call(
        "/v1/admin/corrections/requests",
        {"kind": "reversal", "reverses": reference, "reason": "deposit to the wrong account"},
    )
    assert status == 201 and req["status"] == "requested" and req["requested_by"] == "alice"
    assert (req["account"], req["asset"], req["amount"]) == ("dora", "USDT", "-1000")
    cid = req["correction_id"]
    apply, approve = f"/v1/admin/corrections/{cid}/apply", f"/v1/admin/corrections/{cid}/approve"

    status, body = await desk.call(approve, admin="alice")  # approving one's own request
    assert (status, body["code"]) == (403, "self_approval")
    status, body = await desk.call(apply, admin="bob")  # no approvals yet
    assert (status, body["code"]) == (409, "insufficient_approvals")
    status, body = await desk.call(approve, admin="bob")
    assert status == 200 and body["approvals"] == ["bob"] and body["status"] == "requested"
    status, body = await desk.call(approve, admin="bob")  # the same admin twice
    assert (status, body["code"]) == (409, "already_approved")
    status, body = await desk.call(apply, admin="carol")  # one approval only
    assert (status, body["code"]) == (409, "insufficient_approvals")
    assert await desk.balance("dora", "USDT") == (1000, 0)

    status, body = await desk.call(approve, admin="carol")
    assert status == 200 and body["status"] == "approved"
    status, body = await desk.call(apply, {"wait_ms": 20_000}, admin="alice")
    assert status == 200 and body["status"] == "booked", body
    assert body["funding_id"] == f"corr.{cid}" and body["matcher_status"] == "accepted"
    assert await desk.balance("dora", "USDT") == (0, 0)
    assert await desk.balance("@external", "USDT") == (0, 0)
    kinds = await desk.ledger.pool.fetch(
        "SELECT kind, correction_id FROM journal WHERE correction_id IS NOT NULL"
    )
    assert [(r["kind"], r["correction_id"]) for r in kinds] == [("correction", cid)]

    journal = await desk.ledger.pool.fetchval("SELECT count(*) FROM journal")
    status, body = await desk.call(apply, admin="bob")  # applying twice
    assert (status, body["code"]) == (409, "already_applied")
    status, body = await desk.call(approve, admin="carol")
    assert (status, body["code"]) == (409, "already_applied")
    status, body = await desk.call(
        "/v1/admin/corrections/requests",
        {"kind": "reversal", "reverses": reference, "reason": "again"},
    )
    assert (status, body["code"]) == (409, "already_reversed")
    assert await desk.ledger.pool.fetchval("SELECT count(*) FROM journal") == journal
    # The matcher agrees: dora has nothing left to buy with.
    reply = await desk.stub.PlaceOrder(
        matcher_pb2.PlaceOrderRequest(
            symbol="BTC-USDT", account="dora", client_order_id="d1", side=c.SIDE_BUY,
            order_type=c.ORDER_TYPE_LIMIT, time_in_force=c.TIME_IN_FORCE_GTC, price=10,
            quantity=1,
        )
    )  # fmt: skip
    assert reply.reject_reason == c.REJECT_REASON_INSUFFICIENT_FUNDS


async def test_adjustments_reach_the_matcher_and_refusals_are_typed(desk: Desk) -> None:
    await desk.deposit("erin", "BTC", 100)
    status, req = await desk.call(
        "/v1/admin/corrections/requests",
        {"kind": "adjustment", "symbol": "BTC-USDT", "account": "erin", "asset": "BTC",
         "amount": "250", "reason": "missed airdrop"},
    )  # fmt: skip
    assert status == 201
    cid = req["correction_id"]
    for admin in ("bob", "carol"):
        assert (await desk.call(f"/v1/admin/corrections/{cid}/approve", admin=admin))[0] == 200
    status, body = await desk.call(
        f"/v1/admin/corrections/{cid}/apply", {"wait_ms": 20_000}, admin="bob"
    )
    assert status == 200 and body["status"] == "booked"
    assert await desk.balance("erin", "BTC") == (350, 0)
    assert await desk.balance("@corrections", "BTC") == (-250, 0)
    reply = await desk.stub.PlaceOrder(  # the matcher knows about the 250 too
        matcher_pb2.PlaceOrderRequest(
            symbol="BTC-USDT", account="erin", client_order_id="e1", side=c.SIDE_SELL,
            order_type=c.ORDER_TYPE_LIMIT, time_in_force=c.TIME_IN_FORCE_GTC, price=10,
            quantity=350,
        )
    )  # fmt: skip
    assert reply.status == matcher_pb2.COMMAND_STATUS_ACCEPTED

    # A debit the matcher cannot make (erin's BTC is now all on hold): refused, typed, once.
    status, req = await desk.call(
        "/v1/admin/corrections/requests",
        {"kind": "adjustment", "symbol": "BTC-USDT", "account": "erin", "asset": "BTC",
         "amount": "-300", "reason": "claw back"},
    )  # fmt: skip
    cid = req["correction_id"]
    for admin in ("bob", "carol"):
        assert (await desk.call(f"/v1/admin/corrections/{cid}/approve", admin=admin))[0] == 200
    status, body = await desk.call(f"/v1/admin/corrections/{cid}/apply", admin="carol")
    assert (status, body["code"]) == (409, "matcher_rejected")
    assert "INSUFFICIENT_FUNDS" in body["message"]
    status, body = await desk.call(f"/v1/admin/corrections/{cid}/apply", admin="carol")
    assert (status, body["code"]) == (409, "already_applied")
    got = await desk.client.get(f"/v1/admin/corrections/{cid}", headers=headers())
    assert (await got.json())["status"] == "rejected"

    # Trades and order holds are the matcher's record: not reversible.
    async def reserve_booked() -> str | None:
        reference: str | None = await desk.ledger.pool.fetchval(
            "SELECT reference FROM journal WHERE kind = 'reserve'"
        )
        return reference

    reserve = await wait_for(reserve_booked, what="the order's reserve settled")
    status, body = await desk.call(
        "/v1/admin/corrections/requests",
        {"kind": "reversal", "reverses": reserve, "reason": "no"},
    )
    assert (status, body["code"]) == (422, "not_reversible")
    report = await desk.call("/v1/admin/invariants/check")
    assert report[1]["ok"], report


async def test_corrections_need_admin_identities(ledger_dsn: str) -> None:
    settings = settings_for(ledger_dsn)
    ledger, client = await open_client(
        replace(settings, http=HttpSettings(port=0, admin_tokens={}))
    )
    try:
        response = await client.post(
            "/v1/admin/corrections/requests", json={"kind": "adjustment", "reason": "x"}
        )
        assert response.status == 403
        assert (await response.json())["code"] == "admin_identity_required"
    finally:
        await close_client(ledger, client)
