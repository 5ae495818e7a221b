"""`make up`'s Prometheus against its venue on free ports: it scrapes the matcher, ledger,
gateway and history writer, evaluates the venue's alert rules without error, answers every
golden-signal query after trading, and sees reconciliation lag: settlement paused while
traders cross orders fires `ReconciliationLag`, and resuming resolves it.

How it takes seconds with the production rules: the lag warning is relative to the ledger's
own grace (half of `reconciliation_lag_grace_seconds`), and this venue's ledger runs with a
4 s grace evaluated every 0.5 s (`LEDGER_RECONCILIATION_*`, read from the environment as in
`make up`), its Prometheus scraping and evaluating every second. The rule's `for:` (15 s) is
the production one.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from e2e.drills.traders import Trader, deposit
from e2e.env.prometheus import GOLDEN_SIGNALS, PrometheusServer
from e2e.env.pytest_plugin import unique_name
from e2e.env.stack import Stack, StackSettings

pytestmark = pytest.mark.e2e

SYMBOL = "BTC-USDT"
FAST_LEDGER = {
    "LEDGER_RECONCILIATION_LAG_GRACE_MS": "4000",
    "LEDGER_RECONCILIATION_INTERVAL_MS": "500",
}
JOBS = {"matcher", "ledger", "gateway", "history"}
CROSSINGS = 8
"""Crossing pairs placed while settlement is paused: 16 commands, past the ledger's lag
threshold of 10."""


@pytest.fixture(scope="module")
def venue(run_dir: Path) -> Iterator[Stack]:
    settings = StackSettings.on_free_ports(run_dir / unique_name("observe"), observe=True)
    stack = Stack(replace(settings, prometheus_interval=1.0))
    saved = {name: os.environ.get(name) for name in FAST_LEDGER}
    try:
        os.environ.update(FAST_LEDGER)  # the ledger takes them at its start
        try:
            stack.start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        yield stack
    finally:
        stack.stop()


async def eventually(check: Callable[[], Any], within: float, what: str) -> Any:
    """Poll `check` until it returns something truthy; that value."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(0.25)


def server(venue: Stack) -> PrometheusServer:
    assert venue.prometheus is not None
    return venue.prometheus


async def cross(buyer: Trader, seller: Trader, pairs: int) -> None:
    for _ in range(pairs):
        sold = await seller.place(SYMBOL, "SELL", "60000.00", "0.0010")
        bought = await buyer.place(SYMBOL, "BUY", "60000.00", "0.0010")
        assert (sold.status, bought.status) == (201, 201), (sold.body, bought.body)


async def test_prometheus_scrapes_the_venue_and_sees_settlement_lag_come_and_go(
    venue: Stack, show: Callable[[str], None]
) -> None:
    prom = server(venue)
    assert venue.gateway is not None and venue.ledger is not None

    def all_up() -> bool:
        targets = prom.targets()
        return {t["labels"]["job"] for t in targets if t["health"] == "up"} == JOBS

    await eventually(all_up, 60, "every target scraped")
    matcher = next(t for t in prom.targets() if t["labels"]["job"] == "matcher")
    assert matcher["labels"]["market"] == SYMBOL
    await check_new_series(prom)

    async with aiohttp.ClientSession() as http:
        alice = await Trader.signup(http, venue.gateway.url, "alice")
        bob = await Trader.signup(http, venue.gateway.url, "bob")
        for trader in (alice, bob):
            for asset, amount in (("BTC", 10**8), ("USDT", 10**11)):
                await deposit(http, venue.ledger.url, "", SYMBOL, trader.account, asset, amount)
        await cross(bob, alice, 1)
        # A labelled series is born at its first sample: once Prometheus holds it, the
        # next orders make its rates (two samples) and quantiles non-zero.
        await eventually(
            lambda: prom.query('gateway_http_request_seconds_count{route="/v1/orders"}'),
            30, "the order endpoint's series scraped",
        )  # fmt: skip
        await cross(bob, alice, 2)
        refused = await alice.place("DOGE-USDT", "BUY", "1.00", "1")  # a 4xx with its code
        assert refused.status == 404 and refused.body["code"] == "unknown_market"

        await check_golden_signals(prom)
        await check_rules_evaluate(prom)
        assert not prom.firing("ReconciliationLag")

        admin = f"{venue.ledger.url}/v1/admin/consumers/settlement"
        async with http.post(f"{admin}/pause") as paused:
            assert paused.status == 200 and (await paused.json())["paused"]
        paused_at = time.monotonic()
        resumed = False
        try:
            await cross(bob, alice, CROSSINGS)
            firing = await eventually(
                lambda: prom.firing("ReconciliationLag"), 90, "ReconciliationLag firing"
            )
            alert = firing[0]
            fired_after = time.monotonic() - paused_at
            assert alert["labels"]["market"] == SYMBOL
            assert alert["labels"]["severity"] == "ticket"
            assert alert["annotations"]["runbook_url"].endswith("#runbook-reconciliationlag")
            assert (value(prom, 'reconciliation_behind_seconds{market="BTC-USDT"}') or 0) > 2.0
            # 17 s behind is past the 4 s grace: the ledger breached and latched the market.
            latched = 'reconciliation_latched{source="reconciliation"}'
            await eventually(lambda: value(prom, latched) == 1, 10, "the latch scraped")
            async with http.post(f"{admin}/resume") as answer:
                assert answer.status == 200
                resumed = True
            resumed_at = time.monotonic()
        finally:
            if not resumed:
                async with http.post(f"{admin}/resume"):
                    pass

    def resolved() -> bool:
        return not [a for a in prom.alerts() if a["labels"]["alertname"] == "ReconciliationLag"]

    await eventually(resolved, 60, "ReconciliationLag resolved")
    show(
        f"observe.alert: ReconciliationLag firing {fired_after:.1f}s after settlement paused "
        f"(grace 4 s, for: 15s), resolved {time.monotonic() - resumed_at:.1f}s after resume"
    )
    assert value(prom, 'reconciliation_behind_seconds{market="BTC-USDT"}') == 0


def value(prom: PrometheusServer, expr: str) -> float | None:
    """The one value `expr` has now (None: no series)."""
    result = prom.query(f"max({expr})")
    return float(result[0]["value"][1]) if result else None


async def check_new_series(prom: PrometheusServer) -> None:
    """The series added for the rules are scraped with sane values: the matcher leads under
    an epoch and reports its volume, the ledger its grace and latches, the gateway its lag."""
    await eventually(lambda: value(prom, "reconciliation_lag_grace_seconds") == 4.0, 30,
                     "the ledger's grace scraped")  # fmt: skip
    assert value(prom, "matcher_leader") == 1
    assert (value(prom, "matcher_epoch") or 0) >= 1
    free, size = value(prom, "matcher_volume_free_bytes"), value(prom, "matcher_volume_size_bytes")
    assert free is not None and size is not None and 0 < free <= size
    assert value(prom, "reconciliation_latched") == 0
    await eventually(lambda: value(prom, "gateway_feed_lag_records") == 0, 30,
                     "the gateway's feed lag scraped")  # fmt: skip


async def check_golden_signals(prom: PrometheusServer) -> None:
    """Each golden-signal query parses and runs; those that must have data after trading
    return it (rates need two scrapes of a series, hence the poll)."""
    signals = yaml.safe_load(GOLDEN_SIGNALS.read_text())["signals"]
    for signal in signals:
        prom.query(signal["expr"])  # a query Prometheus refuses raises here
    for signal in (s for s in signals if s["with_trading"]):

        def answered(expr: str = signal["expr"]) -> list[dict[str, Any]]:
            return [r for r in prom.query(expr) if not math.isnan(float(r["value"][1]))]

        await eventually(answered, 30, f"golden signal {signal['name']!r} answered")
    orders = prom.query(signals[0]["expr"])
    assert float(orders[0]["value"][1]) > 0
    codes = {r["metric"]["code"] for r in prom.query(signals[2]["expr"])}
    assert "unknown_market" in codes


async def check_rules_evaluate(prom: PrometheusServer) -> None:
    """Every rule has run against the real series without an error (a many-to-many match
    in a join, for example, fails only at evaluation)."""

    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in prom.rule_groups() for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else []

    rules = await eventually(evaluated, 30, "every rule evaluated")
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    assert len(rules) == len(
        [r for g in yaml.safe_load(prom.rule_files[0].read_text())["groups"] for r in g["rules"]]
    )
