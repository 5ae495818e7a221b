"""Everything the gateway derives from the core events: one `Projection` applies an event to
the order cache, balances, and each market's book, candles, ticker and recent trades, and
tells the WebSocket hub what changed.

Epoch fencing happens here: an event whose epoch is lower than the highest seen for its
market comes from a deposed leader; it is dropped and counted. A live market's data only
ever comes from events; sample data (EDGE_SEED_MARKET_DATA) only fills sample markets.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from contracts.v1 import common_pb2, events_pb2
from workloads.gateway.balances import Balances
from workloads.gateway.book import Book
from workloads.gateway.candles import Candle, CandleSeries
from workloads.gateway.markets import Market
from workloads.gateway.orders import OrderCache, event_index

STALE_EPOCH = Counter(
    "gateway_stale_epoch_events_total",
    "Events dropped: epoch below the market's highest",
    ["symbol"],
)
EVENTS = Counter("gateway_events_applied_total", "Core events applied", ["symbol"])
FEED_SEQ = Gauge("gateway_feed_seq", "Last seq applied from the events topic", ["symbol"])
RECENT_TRADES = 1000


class Sink(Protocol):
    """What the WebSocket hub takes from the projection (no I/O happens in these calls)."""

    def trade(self, symbol: str, trade: dict[str, Any], received: float | None = None) -> None: ...
    def book_changed(self, symbol: str) -> None: ...
    def candle(self, symbol: str, candle: dict[str, Any]) -> None: ...
    def ticker_changed(self, symbol: str) -> None: ...
    def private(self, account: str, channel: str, payload: dict[str, Any]) -> None: ...
    def wants(self, account: str) -> bool: ...


@dataclass
class MarketData:
    market: Market
    book: Book
    candles: CandleSeries
    trades: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_TRADES))
    epoch: int = 0
    seq: int = 0  # last seq applied from the feed
    last_key: tuple[int, int] = (0, -1)  # (seq, index) of the last event applied
    mode: int = common_pb2.SYMBOL_MODE_NORMAL
    sample: bool = False
    # This market's metric children, bound once: labels() costs microseconds per event.
    events_applied: Any = None
    feed_seq: Any = None

    @classmethod
    def new(cls, market: Market) -> MarketData:
        return cls(
            market,
            Book(market),
            CandleSeries(market),
            events_applied=EVENTS.labels(market.symbol),
            feed_seq=FEED_SEQ.labels(market.symbol),
        )


def public_trade(market: Market, t: events_pb2.TradeExecuted) -> dict[str, Any]:
    """A trade as REST and the WebSocket show it (no accounts, no order ids)."""
    env = t.envelope
    return {
        "trade_id": t.trade_id,  # already "<symbol>:<n>", as the ledger books it
        "symbol": market.symbol,
        "price": market.format_price(t.price),
        "quantity": market.format_quantity(t.quantity),
        "taker_side": "BUY" if t.taker_side == common_pb2.SIDE_BUY else "SELL",
        "seq": env.seq,
        "index": event_index(env),
        "time": env.occurred_at // 1_000_000,
    }


def envelope_of(event: events_pb2.Event) -> common_pb2.EventEnvelope | None:
    body = event.WhichOneof("body")
    return None if body is None else getattr(event, body).envelope


class Projection:
    def __init__(self, markets: dict[str, Market], order_capacity: int = 200_000) -> None:
        self.markets = markets
        self.data = {s: MarketData.new(m) for s, m in markets.items()}
        self.orders = OrderCache(markets, order_capacity)
        self.balances = Balances(markets)
        self.sink: Sink | None = None
        self.orders.listeners.append(self._order_changed)

    # ------------------------------------------------------------------ feed

    def apply_feed(self, event: events_pb2.Event, received: float | None = None) -> bool:
        """Apply one event from the topic; False when dropped (unknown market, stale epoch,
        already applied)."""
        env = envelope_of(event)
        if env is None:
            return False
        data = self.data.get(env.symbol)
        if data is None or data.sample:
            return False
        if env.epoch < data.epoch:
            STALE_EPOCH.labels(env.symbol).inc()
            return False
        data.epoch = env.epoch
        key = (env.seq, event_index(env))
        if key <= data.last_key:
            return False  # replayed by the topic: already applied
        data.last_key = key
        data.seq = env.seq
        data.events_applied.inc()
        data.feed_seq.set(env.seq)
        self.balances.apply(event, env)
        data.book.apply(event)
        data.book.note_seq(env.seq)
        self.orders.apply(event, from_feed=True)
        body = event.WhichOneof("body")
        if body == "trade_executed":
            self._trade(data, event.trade_executed, received)
        elif body == "symbol_mode_changed":
            data.mode = event.symbol_mode_changed.mode
        if self.sink is not None and body in (
            "order_accepted",
            "trade_executed",
            "order_canceled",
            "order_expired",
        ):
            self.sink.book_changed(env.symbol)
        return True

    def _trade(self, data: MarketData, t: events_pb2.TradeExecuted, received: float | None) -> None:
        m = data.market
        env = t.envelope
        time_ms = env.occurred_at // 1_000_000
        trade = public_trade(m, t)
        data.trades.append(trade)
        changed = data.candles.add(
            (env.seq, event_index(env)), time_ms, t.price, t.quantity, t.quote_amount
        )
        if self.sink is not None:
            self.sink.trade(m.symbol, trade, received)
            for candle in changed:
                self.sink.candle(m.symbol, candle.to_json(m))
            self.sink.ticker_changed(m.symbol)

    def _order_changed(self, order: Any, fill: dict[str, Any] | None) -> None:
        if self.sink is None or not order.account or not self.sink.wants(order.account):
            return
        market = self.markets[order.symbol]
        self.sink.private(order.account, "orders", order.to_json(market))
        if fill is not None:
            self.sink.private(order.account, "fills", fill)

    def tick_candles(self, now_ms: int) -> list[tuple[str, Candle]]:
        out = []
        for symbol, data in self.data.items():
            for candle in data.candles.tick(now_ms):
                out.append((symbol, candle))
        return out

    # ------------------------------------------------------------------ sample data

    def seed_samples(self, symbols: set[str], now_ms: int | None = None, seed: int = 5) -> None:
        """Deterministic sample trades and book for `symbols`; they are marked sample and
        the feed never writes into them (and they never into a live market)."""
        rng = random.Random(seed)
        now_ms = now_ms or int(time.time() * 1000)
        for data in self.data.values():
            m = data.market
            if m.symbol not in symbols:
                continue
            data.sample = True
            mid = 1000 * m.tick_size
            for i in range(120):
                price = mid + rng.randrange(-20, 21) * m.tick_size
                qty = rng.randrange(1, 10) * m.lot_size
                t_ms = now_ms - (120 - i) * 30_000
                trade = {
                    "trade_id": f"{m.symbol}:sample-{i}",
                    "symbol": m.symbol,
                    "price": m.format_price(price),
                    "quantity": m.format_quantity(qty),
                    "taker_side": "BUY" if i % 2 else "SELL",
                    "seq": i + 1,
                    "time": t_ms,
                }
                data.trades.append(trade)
                data.candles.add((i + 1, 0), t_ms, price, qty, price * qty // m.lot_size)
            for k in range(1, 11):
                data.book.bids[mid - k * m.tick_size] = k * m.lot_size
                data.book.asks[mid + k * m.tick_size] = k * m.lot_size
            data.book.seq = data.seq = 120
