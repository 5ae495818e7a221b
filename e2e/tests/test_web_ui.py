"""The web UI in a real headless Chromium (Debian's, driven by Playwright) against `make up`'s
venue on free ports: two traders in two browser contexts sign up, are funded, place crossing
orders from the form, and each sees the fill in open orders, fills (under the ledger's trade
id), balances, the tape and the chart; a transfer back to the wallet shows in the balances'
Wallet column; a refused order shows its code; a gateway restart drops
the WebSocket and the page recovers; a SafetyMode (CANCEL_ONLY) disables the form.

Screenshots of the main page are kept as artifacts in `.run/artifacts/web-ui/` (the run
directory goes when the tests pass).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from playwright.async_api import Browser, Page, expect

from contracts.v1 import common_pb2, matcher_pb2, matcher_pb2_grpc
from e2e.drills.traders import deposit
from e2e.env import browser as chromium
from e2e.env import paths
from e2e.env.pytest_plugin import unique_name
from e2e.env.stack import Stack, StackSettings

pytestmark = pytest.mark.e2e

SYMBOL = "BTC-USDT"
ARTIFACTS = paths.REPO_ROOT / ".run" / "artifacts" / "web-ui"


@pytest.fixture(scope="module")
def venue(run_dir: Path) -> Iterator[Stack]:
    stack = Stack(StackSettings.on_free_ports(run_dir / unique_name("web-venue")))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium.chromium() as launched:
        yield launched


async def new_trader(browser: Browser, venue: Stack, name: str) -> tuple[Page, str]:
    """A browser context that signed up through the page; its account, funded through the
    ledger (as a deposit would be)."""
    assert venue.gateway is not None and venue.ledger is not None
    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
    page = await context.new_page()
    await page.goto(f"{venue.gateway.url}/#/signup")
    await page.get_by_label("Email").fill(f"{name}-{uuid.uuid4().hex[:6]}@example.com")
    await page.get_by_label("Password").fill("correct horse battery")
    async with page.expect_response(re.compile(r"/v1/auth/signup$")) as signed_up:
        await page.get_by_role("button", name="Sign up").click()
    account = str((await (await signed_up.value).json())["account"])
    await expect(page.get_by_test_id("session-email")).to_be_visible()
    async with aiohttp.ClientSession() as http:
        for asset, amount in (("BTC", 10**8), ("USDT", 10**11)):
            await deposit(http, venue.ledger.url, "", SYMBOL, account, asset, amount)
    await page.goto(f"{venue.gateway.url}/#/market/{SYMBOL}")
    await expect(page.get_by_test_id("chart-ready")).to_be_visible()
    await expect(page.get_by_test_id("book-ready")).to_be_attached()
    await expect(page.get_by_test_id("ws-status")).to_have_text("connected")
    return page, account


async def place(page: Page, side: str, price: str, quantity: str) -> None:
    form = page.get_by_label("Order form")
    await form.get_by_label("Side").select_option(side)
    await form.get_by_label("Type").select_option("LIMIT")
    await form.get_by_label("Price").fill(price)
    await form.get_by_label("Quantity").fill(quantity)
    await form.get_by_role("button", name="Place order").click()


async def set_mode(venue: Stack, mode: int) -> None:
    assert venue.matcher is not None
    async with grpc.aio.insecure_channel(venue.matcher.target) as channel:
        reply = await matcher_pb2_grpc.MatcherStub(channel).SetSymbolMode(
            matcher_pb2.SetSymbolModeRequest(symbol=SYMBOL, mode=mode, reason="e2e")  # type: ignore[arg-type]
        )
        assert reply.status == matcher_pb2.COMMAND_STATUS_ACCEPTED, reply


async def test_two_traders_trade_from_the_browser_and_see_the_fill_everywhere(
    venue: Stack, browser: Browser
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert venue.gateway is not None and venue.ledger is not None
    alice, _ = await new_trader(browser, venue, "alice")
    bob, _ = await new_trader(browser, venue, "bob")

    await place(alice, "SELL", "60000.00", "0.0100")
    await expect(alice.get_by_test_id("order-placed")).to_be_visible()
    opened = alice.get_by_role("table", name="Open orders", exact=True)
    await expect(opened.get_by_role("row").filter(has_text="SELL")).to_have_count(1)
    await expect(bob.get_by_label("Order book")).to_contain_text("60,000.00")

    await place(bob, "BUY", "60000.00", "0.0100")
    await expect(bob.get_by_test_id("order-placed")).to_be_visible()
    fills = {}
    for page, liquidity in ((alice, "MAKER"), (bob, "TAKER")):
        row = (
            page.get_by_role("table", name="Fills", exact=True)
            .get_by_role("row")
            .filter(has_text=liquidity)
        )
        await expect(row).to_have_count(1, timeout=20_000)
        trade_id = re.search(r"BTC-USDT:\d+", await row.inner_text())
        assert trade_id is not None
        fills[liquidity] = trade_id.group(0)
        await expect(
            page.get_by_role("table", name="Open orders", exact=True)
            .get_by_role("row")
            .filter(has_text="SELL")
        ).to_have_count(0)
        tape = page.get_by_label("Trade tape").locator(f'[data-trade-id="{fills[liquidity]}"]')
        await expect(tape).to_have_count(1)
        await expect(page.get_by_test_id("chart-ready")).to_have_attribute(
            "data-last-close", re.compile(r"^60000(\.0+)?$")
        )
    assert fills["MAKER"] == fills["TAKER"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{venue.ledger.url}/v1/admin/trades/{fills['TAKER']}") as booked,
    ):
        assert booked.status == 200  # the id the page shows is the ledger's
    # Balances: bob holds the 0.0100 BTC bought (less no fee: the sample market charges none).
    balances = bob.get_by_role("table", name="Balances", exact=True)
    await expect(balances.get_by_role("row", name=re.compile(r"^BTC 1\.010* "))).to_have_count(1)
    await alice.screenshot(path=str(ARTIFACTS / "market.png"), full_page=True)

    # One balance per asset: bob moves 100 USDT from the market back to his wallet; the
    # Balances table shows it in the Wallet column, the total unchanged.
    transfer = bob.get_by_label("Transfer form")
    await transfer.get_by_label("Asset").select_option("USDT")
    await transfer.get_by_label("Amount").fill("100")
    await transfer.get_by_label("Direction").select_option("to_wallet")
    await transfer.get_by_role("button", name="Transfer", exact=True).click()
    await expect(bob.get_by_test_id("transfer-done")).to_have_text(
        "100.000000 USDT to the wallet: accepted"
    )
    await expect(
        balances.get_by_role("row", name=re.compile(r"^USDT 99,300\.0+ 0\.0+ 100\.0+ 99,400\.0+$"))
    ).to_have_count(1, timeout=15_000)

    # A refusal shows the API's code.
    await place(bob, "BUY", "60000.00", "10.0000")  # 600,000 USDT: more than bob has
    await expect(bob.get_by_test_id("order-error")).to_contain_text("insufficient_funds")

    # The gateway restarts: the socket drops, the page reconnects and trades on.
    venue.gateway.stop()
    await expect(alice.get_by_test_id("ws-status")).not_to_have_text("connected")
    await asyncio.to_thread(venue.gateway.start)
    await expect(alice.get_by_test_id("ws-status")).to_have_text("connected", timeout=30_000)
    await place(alice, "SELL", "61000.00", "0.0100")
    await expect(bob.get_by_label("Order book")).to_contain_text("61,000.00", timeout=15_000)

    # A SafetyMode: the page says so and the form is disabled with the reason.
    await set_mode(venue, common_pb2.SYMBOL_MODE_CANCEL_ONLY)
    try:
        await expect(alice.get_by_test_id("market-mode")).to_contain_text(
            "CANCEL_ONLY", timeout=25_000
        )
        await expect(alice.get_by_test_id("order-blocked")).to_be_visible()
        await expect(alice.get_by_role("button", name="Place order")).to_be_disabled()
        await alice.screenshot(path=str(ARTIFACTS / "cancel-only.png"))
    finally:
        await set_mode(venue, common_pb2.SYMBOL_MODE_NORMAL)
