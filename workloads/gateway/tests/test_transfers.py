"""One balance per asset, against a real matcher, ledger and gateway: a deposit lands in the
wallet (no market), a transfer moves it into the market (the matcher's funding, exactly
once), an order uses it, what is left goes back; a retry with the same Idempotency-Key is the
same transfer, even where the gateway's replay store does not know the key; a transfer the
wallet cannot cover is refused and changes nothing; bad requests change nothing; another
trader sees none of it."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import aiohttp
import pytest

from workloads.gateway.client import GatewayClient
from workloads.gateway.tests.conftest import (
    GATEWAY_LEDGER_TOKEN,
    STATIC_KEY,
    STATIC_SECRET,
    Stack,
    StackFactory,
    poll,
)

pytestmark = pytest.mark.integration

USDT = 10**6  # minor units of one USDT


async def trader(http: aiohttp.ClientSession, url: str) -> tuple[GatewayClient, GatewayClient, str]:
    """A new user: a client signing with an API key, one with the session, and the account."""
    session = GatewayClient(http, url)
    login = await session.login(f"w-{uuid.uuid4().hex[:10]}@example.com", "wallet pass 123",
                                signup=True)  # fmt: skip
    key, secret = await session.new_api_key("wallet")
    return GatewayClient(http, url, api_key=key, secret=secret), session, str(login["account"])


async def deposit(http: aiohttp.ClientSession, stack: Stack, account: str, usdt: int) -> None:
    assert stack.ledger is not None
    async with http.post(
        f"{stack.ledger.url}/v1/admin/deposits",
        json={"deposit_id": f"d-{uuid.uuid4().hex[:12]}", "account": account, "asset": "USDT",
              "amount": str(usdt * USDT)},
        headers={"X-Admin-Token": GATEWAY_LEDGER_TOKEN},
    ) as answer:  # fmt: skip
        assert answer.status == 201, await answer.text()


async def usdt_row(client: GatewayClient) -> dict[str, Any]:
    reply = await client.call("GET", "/v1/account/balances")
    assert reply.status == 200, reply.body
    (row,) = [b for b in reply.body["balances"] if b["asset"] == "USDT"]
    return row  # type: ignore[no-any-return]


async def settled(client: GatewayClient, **want: str) -> dict[str, Any]:
    """Waits until the USDT row shows `want` (the projection follows the events topic)."""

    async def check() -> dict[str, Any] | None:
        row = await usdt_row(client)
        return row if all(row[k] == v for k, v in want.items()) else None

    return await poll(check)  # type: ignore[no-any-return]


def move(amount: str, direction: str, **change: str) -> dict[str, str]:
    return {"symbol": "BTC-USDT", "asset": "USDT", "amount": amount, "direction": direction,
            **change}  # fmt: skip


async def test_deposit_transfer_trade_transfer_back(
    make_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    stack = make_stack(ledger=True)
    alice, alice_session, account = await trader(http, stack.url)
    bob, _, _ = await trader(http, stack.url)
    await deposit(http, stack, account, 1000)
    row = await usdt_row(alice)  # only in the wallet: a row all the same
    assert (row["wallet"], row["available"], row["total"], row["markets"]) == (
        "1000.000000", "0.000000", "1000.000000", []
    )  # fmt: skip

    buy = {"symbol": "BTC-USDT", "side": "BUY", "price": "50000.00", "quantity": "0.0100"}
    unfunded = await alice.call("POST", "/v1/orders", buy)  # the wallet is no market
    assert (unfunded.body["status"], unfunded.body["reject_reason"]) == (
        "REJECTED", "insufficient_funds"
    )  # fmt: skip

    key = f"k-{uuid.uuid4().hex}"
    sent = await alice.call("POST", "/v1/account/transfers", move("600", "to_market"),
                            idempotency_key=key)  # fmt: skip
    assert sent.status == 202, sent.body
    first = sent.body
    assert first["status"] == "accepted" and first["booked"] is True, first
    assert (first["amount"], first["direction"], first["reject_reason"]) == (
        "600.000000", "to_market", None
    )  # fmt: skip
    assert first["transfer_id"].startswith("t")
    assert not {"account", "seq", "epoch", "journal_id"} & set(first)

    placed = await alice.call("POST", "/v1/orders", buy)  # reserves 500 of the 600
    assert (placed.status, placed.body["status"]) == (201, "ACCEPTED"), placed.body
    await settled(alice, wallet="400.000000", available="100.000000", hold="500.000000",
                  total="1000.000000")  # fmt: skip

    # The same Idempotency-Key: the gateway replays its answer; through the session (another
    # replay scope, as if the gateway had forgotten the key) the ledger's derived id finds the
    # same transfer, and other terms under that key are refused there.
    again = await alice.call("POST", "/v1/account/transfers", move("600", "to_market"),
                             idempotency_key=key)  # fmt: skip
    assert (again.status, again.headers.get("Idempotent-Replayed")) == (202, "true")
    assert again.body == first
    fresh = await alice_session.call("POST", "/v1/account/transfers", move("600", "to_market"),
                                     idempotency_key=key)  # fmt: skip
    assert fresh.status == 202 and "Idempotent-Replayed" not in fresh.headers, fresh.body
    assert fresh.body == first
    other = await alice_session.call("POST", "/v1/account/transfers", move("1", "to_market"),
                                     idempotency_key=key)  # fmt: skip
    assert (other.status, other.body["code"]) == (409, "idempotency_key_reused"), other.body

    # More than the wallet holds: refused, nothing moves.
    short = await alice.call("POST", "/v1/account/transfers", move("400.000001", "to_market"))
    assert (short.status, short.body["code"]) == (409, "insufficient_funds"), short.body
    # More than the market has available: the matcher refuses it, sequenced.
    over = await alice.call("POST", "/v1/account/transfers", move("100.000001", "to_wallet"))
    assert over.status == 202, over.body
    assert (over.body["status"], over.body["reject_reason"]) == ("rejected", "insufficient_funds")
    # Bad requests: typed, and nothing moves.
    for body, status, code in (
        (move("1", "to_market", symbol="NOPE-USDT"), 404, "unknown_market"),
        (move("1", "to_market", asset="ETH"), 400, "unknown_asset"),
        (move("0.0000001", "to_market"), 400, "invalid_amount"),
        (move("0", "to_market"), 400, "invalid_amount"),
        (move("1", "sideways"), 400, "validation_failed"),
    ):
        bad = await alice.call("POST", "/v1/account/transfers", body)
        assert (bad.status, bad.body["code"]) == (status, code), (body, bad.body)
    unkeyed = await alice.call("POST", "/v1/account/transfers", move("1", "to_market"),
                               idempotency_key="")  # fmt: skip
    assert (unkeyed.status, unkeyed.body["code"]) == (400, "missing_idempotency_key")
    row = await usdt_row(alice)
    assert (row["wallet"], row["available"], row["hold"]) == (
        "400.000000", "100.000000", "500.000000"
    )  # fmt: skip

    back = await alice.call("POST", "/v1/account/transfers", move("100", "to_wallet"))
    assert (back.status, back.body["status"], back.body["booked"]) == (202, "accepted", True)
    await settled(alice, wallet="500.000000", available="0.000000", hold="500.000000",
                  total="1000.000000")  # fmt: skip

    worth = (await alice.call("GET", "/v1/account/portfolio")).body
    assert worth["wallet_included"] is True
    (usdt,) = [a for a in worth["assets"] if a["asset"] == "USDT"]
    assert (usdt["total"], worth["totals"]) == ("1000.000000", {"USDT": "1000.000000"})

    listed = await alice.call("GET", "/v1/account/transfers")
    assert listed.status == 200, listed.body
    ids = [t["transfer_id"] for t in listed.body["transfers"]]
    assert ids == [back.body["transfer_id"], over.body["transfer_id"], first["transfer_id"]]
    page = await alice.call("GET", "/v1/account/transfers?limit=2")
    rest = await alice.call(
        "GET", f"/v1/account/transfers?limit=2&cursor={page.body['next_cursor']}"
    )
    assert [t["transfer_id"] for t in page.body["transfers"] + rest.body["transfers"]] == ids
    assert rest.body["next_cursor"] is None
    one = await alice.call("GET", f"/v1/account/transfers/{first['transfer_id']}")
    assert (one.status, one.body) == (200, first)

    # Bob sees none of it.
    foreign = await bob.call("GET", f"/v1/account/transfers/{first['transfer_id']}")
    assert (foreign.status, foreign.body["code"]) == (404, "transfer_not_found")
    assert (await bob.call("GET", "/v1/account/transfers")).body["transfers"] == []
    missing = await alice.call("GET", "/v1/account/transfers/tnosuchtransfer")
    assert (missing.status, missing.body["code"]) == (404, "transfer_not_found")


async def test_the_example_client_deposits_into_the_wallet_and_moves_it_to_the_market(
    make_stack: StackFactory,
) -> None:
    """What `make up` tells a newcomer to run, with a ledger: deposit, transfer, order."""
    stack = make_stack(ledger=True)
    assert stack.ledger is not None
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workloads.gateway.example_client", "--url", stack.url,
        "--key", STATIC_KEY, "--secret", STATIC_SECRET, "--ledger", stack.ledger.url,
        "--ledger-token", GATEWAY_LEDGER_TOKEN,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode()
    assert process.returncode == 0, text
    assert "deposit USDT to the wallet: 201" in text, text
    assert "transfer USDT to BTC-USDT: 202" in text and '"status": "accepted"' in text, text
    assert "order: 201" in text and '"status": "ACCEPTED"' in text, text
