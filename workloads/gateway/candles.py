"""1-minute candles and the rolling 24h ticker of one market, from its trades.

Out-of-order input is ordered by seq, not by arrival: a candle's open is the trade with
the lowest (seq, index) in its minute and its close the highest, and a trade seen twice
counts once. A candle is final once trades from a later minute arrive or the clock passes
its end plus a grace period; a trade that arrives for a final candle still updates it and
bumps its `revision` (counted), so a late fact is never lost.
Time is the matcher's (event `occurred_at`), passed in, so tests drive it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from workloads.gateway.markets import Market

MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS
LATE_TRADES = Counter(
    "gateway_candle_late_trades_total", "Trades that arrived for an already final candle"
)


@dataclass(slots=True)
class Candle:
    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int
    first: tuple[int, int]
    last: tuple[int, int]
    final: bool = False
    revision: int = 0

    def to_json(self, market: Market) -> dict[str, Any]:
        return {
            "symbol": market.symbol,
            "interval": "1m",
            "open_time": self.start,
            "close_time": self.start + MINUTE_MS - 1,
            "open": market.format_price(self.open),
            "high": market.format_price(self.high),
            "low": market.format_price(self.low),
            "close": market.format_price(self.close),
            "volume": market.format_quantity(self.volume),
            "quote_volume": market.format_amount(market.quote_asset, self.quote_volume),
            "trades": self.trades,
            "final": self.final,
            "revision": self.revision,
        }


class CandleSeries:
    def __init__(self, market: Market, keep_minutes: int = 1500, dedup: int = 100_000) -> None:
        self.market = market
        self.keep = keep_minutes
        self.candles: OrderedDict[int, Candle] = OrderedDict()
        self.watermark = 0
        self._seen: set[tuple[int, int]] = set()
        self._seen_order: deque[tuple[int, int]] = deque()
        self._dedup = dedup

    def add(
        self, key: tuple[int, int], time_ms: int, price: int, quantity: int, quote: int
    ) -> list[Candle]:
        """Apply one trade; return the candles that changed (the trade's, and any that
        became final because time moved past them). [] for a duplicate."""
        if key in self._seen:
            return []
        self._seen.add(key)
        self._seen_order.append(key)
        if len(self._seen_order) > self._dedup:
            self._seen.discard(self._seen_order.popleft())
        start = time_ms - time_ms % MINUTE_MS
        candle = self.candles.get(start)
        if candle is None:
            candle = Candle(start, price, price, price, price, 0, 0, 0, key, key)
            self.candles[start] = candle
            if len(self.candles) > 1 and next(reversed(self.candles)) != start:
                self.candles = OrderedDict(sorted(self.candles.items()))
            while len(self.candles) > self.keep:
                self.candles.popitem(last=False)
        elif candle.final:
            candle.revision += 1
            LATE_TRADES.inc()
        if key < candle.first:
            candle.first, candle.open = key, price
        if key >= candle.last:
            candle.last, candle.close = key, price
        candle.high = max(candle.high, price)
        candle.low = min(candle.low, price)
        candle.volume += quantity
        candle.quote_volume += quote
        candle.trades += 1
        changed = [candle]
        if time_ms > self.watermark:
            self.watermark = time_ms
            changed.extend(self.finalize(start))
        return changed

    def finalize(self, before: int) -> list[Candle]:
        """Mark every candle that starts before `before` (a minute start) final."""
        done = []
        for start, candle in self.candles.items():
            if start >= before:
                break
            if not candle.final:
                candle.final = True
                done.append(candle)
        return done

    def tick(self, now_ms: int, grace_ms: int = 2_000) -> list[Candle]:
        """Finalize by the clock: the minute ended `grace_ms` ago and no trade came."""
        boundary = now_ms - grace_ms
        return self.finalize(boundary - boundary % MINUTE_MS)

    def recent(self, limit: int, before: int | None = None) -> list[Candle]:
        out = [c for s, c in reversed(self.candles.items()) if before is None or s < before]
        return list(reversed(out[:limit]))

    def ticker(self, now_ms: int) -> dict[str, Any]:
        """Rolling 24h statistics at minute resolution (the window's first minute whole)."""
        m = self.market
        since = now_ms - DAY_MS
        window = [c for s, c in self.candles.items() if s + MINUTE_MS > since]
        base = {"symbol": m.symbol, "window_start": since, "window_end": now_ms}
        if not window:
            last = next(reversed(self.candles.values()), None)
            price = m.format_price(last.close) if last else None
            return {
                **base,
                "last_price": price,
                "open": price,
                "high": price,
                "low": price,
                "volume": m.format_quantity(0),
                "quote_volume": m.format_amount(m.quote_asset, 0),
                "trades": 0,
                "change": "0",
                "change_percent": "0",
            }
        first = min(window, key=lambda c: c.first)
        last = max(window, key=lambda c: c.last)
        change = last.close - first.open
        percent = f"{change * 100 / first.open:.2f}" if first.open else "0"
        return {
            **base,
            "last_price": m.format_price(last.close),
            "open": m.format_price(first.open),
            "high": m.format_price(max(c.high for c in window)),
            "low": m.format_price(min(c.low for c in window)),
            "volume": m.format_quantity(sum(c.volume for c in window)),
            "quote_volume": m.format_amount(m.quote_asset, sum(c.quote_volume for c in window)),
            "trades": sum(c.trades for c in window),
            "change": ("-" if change < 0 else "") + m.format_price(abs(change)),
            "change_percent": percent,
        }
