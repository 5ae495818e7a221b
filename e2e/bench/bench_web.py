"""Web UI benchmarks (`make bench BENCH=web`). The page runs in Debian's headless Chromium,
driven by Playwright, against `make up`'s whole venue (`Stack`) on free 127.0.0.1 ports in a
temporary directory; everything started is stopped at the end.

web.bundle: what a first visit downloads: `gzip_kb`, the built JS and CSS (dist/assets)
each gzipped at level 9, summed, in KiB (target <= 300); split into `js_gzip_kb` and
`css_gzip_kb`. No venue.
web.first_render: the market page (`#/market/BTC-USDT`) from navigation to both the chart
(`chart-ready`: the first candles drawn) and the book (`book-ready`: the first snapshot in the
DOM), read inside the page with `performance.now()` (navigation start = 0) by a
MutationObserver that sees each marker appear. Two traders seeded first (funded through the
ledger, resting orders on both sides, a few trades) so neither is empty. Five navigations,
each in a fresh browser context (empty cache); the first right after the browser started
(`first_ms`, cold). `ms` is the median, `ms_p_max` the slowest (target ms <= 1000).
web.book_rate: the page showing the market while a driver changes the book 50 times a second
for 30 s through the gateway (signed REST: places and cancels of one-lot limit orders at
varying prices that never cross, each one book update). Each animation frame the page
samples `window.__exchangeBookStats` (src/lib/bookStats.ts): book messages received over the
WebSocket minus those the DOM's book reflects; `frames_behind_max` is the largest (target 0).
`long_tasks` counts PerformanceObserver `longtask` entries (main thread busy > 50 ms) in the
window (target <= 5). `updates_sent`/`updates_per_s` are the driver's accepted requests and
their rate; `book_messages` what the page received (the gateway coalesces a flush's changes).
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from e2e.drills.traders import deposit
from e2e.env import browser, web
from e2e.env.stack import Stack, StackSettings
from workloads.gateway.client import GatewayClient

if TYPE_CHECKING:  # imported when a browser benchmark runs, not when `make bench` lists them
    from playwright.async_api import Browser, Page

SYMBOL = "BTC-USDT"
MARKET_PATH = f"/#/market/{SYMBOL}"
TARGET_GZIP_KB = 300
TARGET_FIRST_RENDER_MS = 1000
TARGET_FRAMES_BEHIND = 0
TARGET_LONG_TASKS = 5
NAVIGATIONS = 5
BOOK_RATE_PER_S = 50
BOOK_SECONDS = 30.0
LIVE_ORDERS = 20
"""The driver's resting orders: it places until it holds this many, then cancels the oldest."""
DRIVER_KEYS = 4
"""API keys the driver spreads its requests over: the gateway's rate limit (1,000 a minute)
is per key, and 50/s is 3,000 a minute."""
WAIT_S = 30.0
"""Bound on every wait for the venue or the page (a marker, a seeded book)."""
PASSWORD = "bench-password-1"

# Seeded book (USDT per BTC): maker levels every 10.00 below 59,990 and above 60,010; the
# driver's prices fall between them, so its changes land in the 15 levels the page shows.
BIDS = [f"{59_990 - 10 * k}.00" for k in range(10)]
ASKS = [f"{60_010 + 10 * k}.00" for k in range(10)]


def bundle_benchmark() -> dict[str, object]:
    assets = web.ensure_built() / "assets"
    sizes = {".js": 0, ".css": 0}
    files = 0
    for path in sorted(assets.iterdir()):
        if path.suffix in sizes:
            sizes[path.suffix] += len(gzip.compress(path.read_bytes(), 9))
            files += 1
    return {
        "gzip_kb": round((sizes[".js"] + sizes[".css"]) / 1024, 1),
        "js_gzip_kb": round(sizes[".js"] / 1024, 1),
        "css_gzip_kb": round(sizes[".css"] / 1024, 1),
        "files": files,
        "target_gzip_kb": TARGET_GZIP_KB,
    }


# ------------------------------------------------------------------------ the venue


@contextmanager
def venue() -> Iterator[Stack]:
    """`make up`'s venue on free ports, serving the current build of the UI."""
    web.ensure_built()  # before the gateway starts: it reads dist/ once
    browser.ensure_installed()
    with tempfile.TemporaryDirectory(prefix="exchange-bench-web-") as run_dir:
        stack = Stack(StackSettings.on_free_ports(Path(run_dir), SYMBOL))
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


@dataclass
class Trader:
    account: str
    keys: list[GatewayClient] = field(default_factory=list)
    """One signed client per API key."""


async def trader(http: aiohttp.ClientSession, stack: Stack, email: str, keys: int = 1) -> Trader:
    """A user signed up through the gateway, with `keys` API keys, funded through the ledger
    (1 BTC and 100,000 USDT)."""
    assert stack.gateway is not None and stack.ledger is not None
    session = GatewayClient(http, stack.gateway.url)
    await session.login(email, PASSWORD, signup=True)
    me = await session.call("GET", "/v1/auth/me")
    account = str(me.body["account"])
    clients = []
    for n in range(keys):
        key, secret = await session.new_api_key(f"bench-{n}")
        clients.append(GatewayClient(http, stack.gateway.url, api_key=key, secret=secret))
    base, _, quote = SYMBOL.partition("-")
    for asset, amount in ((base, 10**8), (quote, 10**11)):
        await deposit(http, stack.ledger.url, "", SYMBOL, account, asset, amount)
    return Trader(account, clients)


async def order(
    client: GatewayClient, side: str, price: str, quantity: str, tif: str = "GTC"
) -> dict[str, Any]:
    body = {"symbol": SYMBOL, "side": side, "type": "LIMIT", "price": price,
            "quantity": quantity, "time_in_force": tif}  # fmt: skip
    reply = await client.call("POST", "/v1/orders", body)
    if reply.status >= 300:
        raise RuntimeError(f"order {body}: {reply.status} {reply.body}")
    return reply.body  # type: ignore[no-any-return]


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Polls `check` (a coroutine function) until it returns true, within WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen within {WAIT_S:.0f}s")
        await asyncio.sleep(0.1)


async def seed(http: aiohttp.ClientSession, stack: Stack) -> Trader:
    """Ten resting levels a side and a few trades; returns the maker (with DRIVER_KEYS
    keys) once the gateway's public book and candles show them."""
    assert stack.gateway is not None
    maker = await trader(http, stack, "maker@bench.example", keys=DRIVER_KEYS)
    taker = await trader(http, stack, "taker@bench.example")
    for bid, ask in zip(BIDS, ASKS, strict=True):
        await order(maker.keys[0], "BUY", bid, "0.0100")
        await order(maker.keys[0], "SELL", ask, "0.0100")
    for n in range(6):  # partial fills: the best levels stay
        side, price = ("BUY", ASKS[0]) if n % 2 == 0 else ("SELL", BIDS[0])
        await order(taker.keys[0], side, price, "0.0010", tif="IOC")
    public = GatewayClient(http, stack.gateway.url)

    async def book_seeded() -> bool:
        book = await public.call("GET", f"/v1/markets/{SYMBOL}/orderbook", sign_request=False)
        return len(book.body.get("bids", ())) >= len(BIDS) and len(
            book.body.get("asks", ())
        ) >= len(ASKS)

    async def candles_seeded() -> bool:
        page = await public.call("GET", f"/v1/markets/{SYMBOL}/candles", sign_request=False)
        return bool(page.body.get("candles"))

    await until("the seeded book", book_seeded)
    await until("the seeded candles", candles_seeded)
    return maker


# ------------------------------------------------------------------------ the browser


# Runs before the page's own scripts: when each marker enters the DOM (navigation start = 0).
MARKS_JS = """
window.__benchMarks = {};
new MutationObserver(() => {
  for (const id of ["chart-ready", "book-ready"]) {
    if (!(id in window.__benchMarks) && document.querySelector(`[data-testid=${id}]`)) {
      window.__benchMarks[id] = performance.now();
    }
  }
}).observe(document, { childList: true, subtree: true });
"""


async def first_render_once(instance: Browser, url: str) -> dict[str, float]:
    context = await instance.new_context()
    try:
        page = await context.new_page()
        await page.add_init_script(MARKS_JS)
        await page.goto(url + MARKET_PATH, timeout=WAIT_S * 1000)
        for marker in ("chart-ready", "book-ready"):
            await page.wait_for_selector(f"[data-testid={marker}]", timeout=WAIT_S * 1000)
        marks = await page.evaluate("window.__benchMarks")
        candles = await page.get_attribute("[data-testid=chart-ready]", "data-candles")
        return {
            "chart_ms": marks["chart-ready"],
            "book_ms": marks["book-ready"],
            "candles": float(candles or 0),
        }
    finally:
        await context.close()


def first_render_benchmark(runs: int = NAVIGATIONS) -> dict[str, object]:
    async def measure(stack: Stack) -> list[dict[str, float]]:
        assert stack.gateway is not None
        async with aiohttp.ClientSession() as http:
            await seed(http, stack)
        async with browser.chromium() as instance:
            return [await first_render_once(instance, stack.gateway.url) for _ in range(runs)]

    with venue() as stack:
        results = asyncio.run(measure(stack))
    totals = [max(r["chart_ms"], r["book_ms"]) for r in results]
    return {
        "ms": round(statistics.median(totals), 1),
        "ms_p_max": round(max(totals), 1),
        "first_ms": round(totals[0], 1),
        "chart_ms": round(statistics.median(r["chart_ms"] for r in results), 1),
        "book_ms": round(statistics.median(r["book_ms"] for r in results), 1),
        "candles": int(results[0]["candles"]),
        "runs": runs,
        "target_ms": TARGET_FIRST_RENDER_MS,
    }


# Each animation frame: book messages received but not yet in the DOM; long tasks after start.
SAMPLER_JS = """
(() => {
  const bench = { running: false, from: 0, to: Infinity, frames: 0, behindMax: 0,
                  framesBehind: 0, longTasks: 0, longTaskMaxMs: 0, received: 0 };
  window.__benchBook = bench;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.startTime < bench.from || e.startTime > bench.to || !bench.running) continue;
      bench.longTasks += 1;
      bench.longTaskMaxMs = Math.max(bench.longTaskMaxMs, e.duration);
    }
  }).observe({ type: "longtask" });
  const frame = () => {
    const s = window.__exchangeBookStats;
    if (bench.running && s) {
      bench.frames += 1;
      const behind = s.received - s.drawn;
      bench.behindMax = Math.max(bench.behindMax, behind);
      if (behind > 0) bench.framesBehind += 1;
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  bench.start = () => {
    bench.from = performance.now();
    bench.received = window.__exchangeBookStats.received;
    bench.running = true;
  };
  bench.stop = () => {
    bench.to = performance.now();
    bench.received = window.__exchangeBookStats.received - bench.received;
  };
})();
"""


@dataclass
class BookDriver:
    """Places and cancels one-lot limit orders, never crossing, at `rate` a second."""

    keys: list[GatewayClient]
    rate: int
    live: deque[str] = field(default_factory=deque)
    placing: int = 0
    sent: int = 0
    ops: dict[str, int] = field(default_factory=lambda: {"place": 0, "cancel": 0})
    last_seq: int = 0
    """The matcher's seq of the last change accepted (the book's seq once it is applied)."""
    refused: dict[str, int] = field(default_factory=dict)

    def price(self, n: int) -> tuple[str, str]:
        # Between the seeded levels, cycling through 36 prices a side.
        step = n * 7 % 36
        if n % 2 == 0:
            return "BUY", f"{59_991 - step * 2.5 - 2.5:.2f}"
        return "SELL", f"{60_009 + step * 2.5 + 2.5:.2f}"

    async def one(self, n: int) -> None:
        client = self.keys[n % len(self.keys)]
        if self.live and len(self.live) + self.placing >= LIVE_ORDERS:
            op = "cancel"
            reply = await client.call("DELETE", f"/v1/orders/{self.live.popleft()}")
        else:
            op = "place"
            side, price = self.price(n)
            body = {"symbol": SYMBOL, "side": side, "type": "LIMIT", "price": price,
                    "quantity": "0.0001", "post_only": True}  # fmt: skip
            self.placing += 1
            try:
                reply = await client.call("POST", "/v1/orders", body)
            finally:
                self.placing -= 1
            if reply.status < 300 and reply.body.get("status") == "ACCEPTED":
                self.live.append(str(reply.body["order_id"]))
        if reply.status < 300:
            self.sent += 1
            self.ops[op] += 1
            self.last_seq = max(self.last_seq, int(reply.body["updated_seq"]))
        else:
            code = str(reply.body.get("code") if isinstance(reply.body, dict) else reply.status)
            self.refused[code] = self.refused.get(code, 0) + 1

    async def run(self, seconds: float) -> float:
        """Drives the book for `seconds`; the time from the first request to the last reply."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for n in itertools.count():
            at = start + n / self.rate
            if at - start >= seconds:
                break
            await asyncio.sleep(max(0.0, at - loop.time()))
            tasks.append(asyncio.create_task(self.one(n)))
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
        return loop.time() - start


async def drawn_up_to(page: Page, seq: int) -> None:
    """Waits until the page's book is at `seq` or later (the driver's last changes reach it
    through the events topic, after their replies)."""
    shown = "document.querySelector('.book-status.live')?.textContent ?? ''"
    await page.wait_for_function(
        f"seq => Number(({shown}).replace('seq ', '')) >= seq", arg=seq, timeout=WAIT_S * 1000
    )


def book_rate_benchmark(
    rate: int = BOOK_RATE_PER_S, seconds: float = BOOK_SECONDS
) -> dict[str, object]:
    async def measure(stack: Stack) -> tuple[dict[str, Any], BookDriver, float]:
        assert stack.gateway is not None
        async with aiohttp.ClientSession() as http:
            maker = await seed(http, stack)
            async with browser.chromium() as instance:
                context = await instance.new_context()
                try:
                    page = await context.new_page()
                    await page.add_init_script(SAMPLER_JS)
                    await page.goto(stack.gateway.url + MARKET_PATH, timeout=WAIT_S * 1000)
                    await page.wait_for_selector("[data-testid=book-ready]", timeout=WAIT_S * 1000)
                    await page.wait_for_selector("[data-testid=chart-ready]", timeout=WAIT_S * 1000)
                    await page.evaluate("window.__benchBook.start()")
                    driver = BookDriver(maker.keys, rate)
                    took = await driver.run(seconds)
                    await drawn_up_to(page, driver.last_seq)
                    await page.evaluate("window.__benchBook.stop()")
                    sampled = await page.evaluate(
                        "(({start, stop, ...rest}) => rest)(window.__benchBook)"
                    )
                finally:
                    await context.close()
        return sampled, driver, took

    with venue() as stack:
        sampled, driver, took = asyncio.run(measure(stack))
    return {
        "frames_behind_max": sampled["behindMax"],
        "frames_behind_nonzero": sampled["framesBehind"],
        "long_tasks": sampled["longTasks"],
        "long_task_max_ms": round(sampled["longTaskMaxMs"], 1),
        "updates_sent": driver.sent,
        "updates_per_s": round(driver.sent / took, 1),
        "places": driver.ops["place"],
        "cancels": driver.ops["cancel"],
        "refused": driver.refused,
        "book_messages": sampled["received"],
        "frames": sampled["frames"],
        "seconds": round(took, 1),
        "target_per_s": rate,
        "target_frames_behind": TARGET_FRAMES_BEHIND,
        "target_long_tasks": TARGET_LONG_TASKS,
    }


BENCHMARKS: dict[str, Callable[[], dict[str, object]]] = {
    "web.bundle": bundle_benchmark,
    "web.first_render": first_render_benchmark,
    "web.book_rate": book_rate_benchmark,
}
