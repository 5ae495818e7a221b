"""The wallet and transfers, without a ledger: transfer ids, the request's checks, the
ledger's transfer and refusals as the trader sees them, balances with the wallet; and the
ledger client's reading of balances against a stand-in ledger (an in-process HTTP server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from workloads.gateway.errors import ApiError, documented_codes
from workloads.gateway.ledger import LedgerReader
from workloads.gateway.markets import Market
from workloads.gateway.wallet import (
    LEDGER_ID,
    TRANSFER_WAIT_MS,
    ledger_cursor,
    page_cursor,
    parse_transfer,
    refusal,
    transfer_id,
    transfer_json,
    wallet_market,
    with_wallet,
)

pytestmark = pytest.mark.unit

BTC = Market("BTC-USDT", "BTC", "USDT", matcher="127.0.0.1:1")
ETH = Market("ETH-USDT", "ETH", "USDT", base_decimals=18, lot_size=10**14, matcher="127.0.0.1:2")
MARKETS = {m.symbol: m for m in (BTC, ETH)}


def refused(body: dict[str, Any]) -> tuple[str, int]:
    with pytest.raises(ApiError) as caught:
        parse_transfer(body, MARKETS)
    return caught.value.code, caught.value.status


def test_the_transfer_id_is_the_account_and_key_and_fits_the_ledger() -> None:
    first = transfer_id("u-1", "key-1")
    assert first == transfer_id("u-1", "key-1")
    assert first.startswith("t") and len(first) == 33
    assert LEDGER_ID.fullmatch(first)
    assert len({first, transfer_id("u-2", "key-1"), transfer_id("u-1", "key-2")}) == 3
    # no separator games: ("u-1\n", "k") and ("u-1", "\nk") are different requests anyway,
    # and a key cannot hold a newline (the guard wants printable characters)
    assert not LEDGER_ID.fullmatch("..") and not LEDGER_ID.fullmatch(".")
    assert not LEDGER_ID.fullmatch("a/b") and LEDGER_ID.fullmatch("adm.in:1-2_3")


def test_a_request_is_parsed_in_the_assets_units() -> None:
    usdt = parse_transfer(
        {"symbol": "BTC-USDT", "asset": "USDT", "amount": "100.5", "direction": "to_market"},
        MARKETS,
    )
    assert (usdt.market, usdt.asset, usdt.amount, usdt.direction) == (
        BTC, "USDT", 100_500_000, "to_market"
    )  # fmt: skip
    sat = parse_transfer(
        {"symbol": "BTC-USDT", "asset": "BTC", "amount": "0.00000001", "direction": "to_wallet"},
        MARKETS,
    )
    assert sat.amount == 1  # one minor unit, though below the lot: a transfer is not an order
    wei = parse_transfer(
        {"symbol": "ETH-USDT", "asset": "ETH", "amount": "1.000000000000000001",
         "direction": "to_market"},
        MARKETS,
    )  # fmt: skip
    assert wei.amount == 10**18 + 1
    assert usdt.ledger_body("t1", "u-1", TRANSFER_WAIT_MS) == {
        "transfer_id": "t1",
        "account": "u-1",
        "symbol": "BTC-USDT",
        "asset": "USDT",
        "amount": "100500000",
        "direction": "to_market",
        "wait_ms": 5000,
    }


def test_bad_requests_get_typed_errors() -> None:
    good = {"symbol": "BTC-USDT", "asset": "USDT", "amount": "1", "direction": "to_market"}
    assert refused({**good, "extra": 1}) == ("validation_failed", 400)
    assert refused({**good, "symbol": "NOPE"}) == ("unknown_market", 404)
    assert refused({**good, "symbol": None}) == ("unknown_market", 404)
    assert refused({**good, "asset": "ETH"}) == ("unknown_asset", 400)
    assert refused({**good, "direction": "sideways"}) == ("validation_failed", 400)
    assert refused({k: v for k, v in good.items() if k != "direction"}) == (
        "validation_failed", 400
    )  # fmt: skip
    for amount in ("0", "-1", "0.0000001", "1e3", " 1", "", "abc", "NaN", 5, None, "9" * 39):
        assert refused({**good, "amount": amount}) == ("invalid_amount", 400), amount
    for code, status in (("unknown_asset", 400), ("insufficient_funds", 409)):
        assert documented_codes()[code] == status


def ledger_row(**change: Any) -> dict[str, Any]:
    row = {
        "transfer_id": "tabc",
        "account": "u-1",
        "symbol": "BTC-USDT",
        "asset": "BTC",
        "amount": "150000000",
        "direction": "to_wallet",
        "status": "rejected",
        "reject_reason": "REJECT_REASON_INSUFFICIENT_FUNDS",
        "seq": 17,
        "epoch": 2,
        "booked": False,
        "journal_id": None,
        "created_at": "2026-12-01T10:00:00.250000+00:00",
    }
    return {**row, **change}


def test_the_ledgers_transfer_as_the_trader_sees_it() -> None:
    assert transfer_json(ledger_row(), MARKETS) == {
        "transfer_id": "tabc",
        "symbol": "BTC-USDT",
        "asset": "BTC",
        "amount": "1.50000000",
        "direction": "to_wallet",
        "status": "rejected",
        "reject_reason": "insufficient_funds",
        "booked": False,
        "created_at": 1_796_119_200_250,
    }
    accepted = transfer_json(
        ledger_row(status="accepted", reject_reason=None, booked=True, asset="USDT",
                   amount="5", created_at="2026-12-01T10:00:00Z"),
        MARKETS,
    )  # fmt: skip
    assert accepted is not None
    assert (accepted["amount"], accepted["reject_reason"], accepted["booked"]) == (
        "0.000005", None, True
    )  # fmt: skip
    assert accepted["created_at"] == 1_796_119_200_000
    assert transfer_json(ledger_row(asset="DOGE"), MARKETS) is None  # no market here trades it


def test_the_ledgers_refusals_as_gateway_errors() -> None:
    def mapped(status: int, body: dict[str, Any]) -> tuple[str, int]:
        error = refusal(status, body)
        return error.code, error.status

    assert mapped(409, {"code": "insufficient_funds", "message": "wallet 5 < 7"}) == (
        "insufficient_funds", 409
    )  # fmt: skip
    assert mapped(409, {"code": "idempotency_conflict"}) == ("idempotency_key_reused", 409)
    assert mapped(404, {"code": "unknown_market"}) == ("unknown_market", 404)
    assert mapped(422, {"code": "unknown_asset"}) == ("unknown_asset", 400)
    assert mapped(422, {"code": "market_has_no_matcher"}) == ("core_unavailable", 503)
    assert mapped(409, {"code": "market_latched"}) == ("market_latched", 409)
    assert mapped(400, {"code": "invalid_field", "message": "x"}) == ("invalid_field", 400)
    assert mapped(418, {"code": "<script>"}) == ("bad_request", 400)


def test_a_page_cursor_is_the_ledgers_created_at_written_one_way() -> None:
    assert ledger_cursor("2026-12-01T10:00:00.250000+00:00") == "2026-12-01T10:00:00.250000+00:00"
    assert ledger_cursor("2026-12-01T11:00:00+01:00") == "2026-12-01T10:00:00+00:00"
    assert ledger_cursor("2026-12-01T10:00:00") == "2026-12-01T10:00:00+00:00"
    given = page_cursor("2026-12-01T11:00:00.000001+01:00")
    assert given == "2026-12-01T10:00:00.000001Z"
    assert ledger_cursor(given) == "2026-12-01T10:00:00.000001+00:00"
    for bad in ("", "yesterday", "1" * 41, "2026-13-01"):
        with pytest.raises(ApiError) as caught:
            ledger_cursor(bad)
        assert caught.value.code == "validation_failed"


def projection_rows() -> list[dict[str, Any]]:
    return [
        {
            "asset": "USDT",
            "available": "10.000000",
            "hold": "2.500000",
            "total": "12.500000",
            "markets": [{"symbol": "BTC-USDT", "available": "10.000000", "hold": "2.500000"}],
        }
    ]


def test_balances_gain_the_wallet_and_a_total_with_it() -> None:
    rows = with_wallet(projection_rows(), {"USDT": 1_000_000, "BTC": 5, "DOGE": 7, "ETH": 0},
                       MARKETS)  # fmt: skip
    assert rows == [
        {
            "asset": "BTC",  # only in the wallet
            "wallet": "0.00000005",
            "available": "0.00000000",
            "hold": "0.00000000",
            "total": "0.00000005",
            "markets": [],
        },
        {
            "asset": "USDT",
            "wallet": "1.000000",
            "available": "10.000000",
            "hold": "2.500000",
            "total": "13.500000",
            "markets": [{"symbol": "BTC-USDT", "available": "10.000000", "hold": "2.500000"}],
        },
    ]
    # the ledger has no account yet: every wallet is zero
    (usdt,) = with_wallet(projection_rows(), {}, MARKETS)
    assert (usdt["wallet"], usdt["total"]) == ("0.000000", "12.500000")
    # the ledger cannot be read: null, and the markets as before
    (usdt,) = with_wallet(projection_rows(), None, MARKETS)
    assert (usdt["wallet"], usdt["total"]) == (None, "12.500000")
    assert with_wallet([], None, MARKETS) == []


def test_a_wallets_asset_is_valued_through_a_market_quoting_in_it_else_trading_it() -> None:
    assert wallet_market(MARKETS, "USDT") == BTC  # both quote in it: the first
    assert wallet_market(MARKETS, "ETH") == ETH
    eth_btc = Market("ETH-BTC", "ETH", "BTC", matcher="127.0.0.1:3")
    assert wallet_market({**MARKETS, "ETH-BTC": eth_btc}, "BTC") == eth_btc  # at par
    assert wallet_market(MARKETS, "DOGE") is None


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[dict[str, Any], str]]:
    """A ledger answering GET /v1/admin/balances with what the test puts in `replies`."""
    replies: dict[str, Any] = {}

    async def balances(request: web.Request) -> web.Response:
        assert request.headers["X-Admin-Token"] == "tok"
        status, body = replies[request.query["account"]]
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/v1/admin/balances", balances)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield replies, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_the_wallet_is_read_from_the_ledgers_balances(
    stand_in: tuple[dict[str, Any], str],
) -> None:
    replies, url = stand_in
    row = {"account": "u-1", "asset": "USDT", "available": "3", "hold": "0", "version": 1,
           "system": False}  # fmt: skip
    replies["u-1"] = (200, {"balances": [{**row, "wallet": "7"}, {**row, "asset": "BTC",
                                                                   "wallet": "0"}]})  # fmt: skip
    replies["new"] = (422, {"code": "unknown_account", "message": "no account new"})
    replies["old"] = (200, {"balances": [{**row, "account": "old"}]})  # no wallets yet
    replies["bad"] = (500, {"code": "internal"})
    reader = LedgerReader(url, "tok")
    try:
        assert await reader.wallet("u-1") == {"USDT": 7, "BTC": 0}
        assert await reader.wallet("new") == {}
        assert await reader.wallet("old") is None
        assert await reader.wallet("bad") is None
    finally:
        await reader.close()
    assert await LedgerReader("", "").wallet("u-1") is None  # no ledger configured
    unreachable = LedgerReader("http://127.0.0.1:9", "tok")
    try:
        assert await unreachable.wallet("u-1") is None
    finally:
        await unreachable.close()
