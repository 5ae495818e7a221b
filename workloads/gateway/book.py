"""A market's price-level book, kept from the events topic, with diffs and a checksum.

Levels change on exactly three facts: a GTC limit order is accepted (it rests; its own
trades as taker take it down again within the same command), a trade takes quantity from
the maker's level, and a resting order is cancelled or expires. The book remembers each
resting order's side and price to apply cancels. If it meets a resting order it never saw
(history older than the topic), it asks for a resync: a snapshot from the matcher at seq S,
after which events up to S only update the order map.

Diffs carry absolute level quantities and chain: a diff covers (prev_seq, seq]. A client
holding a snapshot or diff at seq S applies the next diff when prev_seq <= S < seq (applying
an absolute level twice is harmless), skips it when seq <= S, and resubscribes on a gap
(prev_seq > S).

Checksum: CRC32 of `b1p:b1q,b2p:b2q,...|a1p:a1q,...` over the best 10 levels per side, as
the decimal strings the API sends; a client that applies diffs correctly gets the same.
"""

from __future__ import annotations

import heapq
import zlib
from typing import Any

from contracts.v1 import common_pb2, events_pb2, matcher_pb2
from workloads.gateway.markets import Market

CHECKSUM_DEPTH = 10
_RESTING_CAUSES = (
    events_pb2.CANCEL_CAUSE_USER,
    events_pb2.CANCEL_CAUSE_CANCEL_ALL,
    events_pb2.CANCEL_CAUSE_SELF_TRADE,
)


class Book:
    def __init__(self, market: Market) -> None:
        self.market = market
        self.bids: dict[int, int] = {}  # price per lot -> base units
        self.asks: dict[int, int] = {}
        self.orders: dict[int, list[int]] = {}  # order seq -> [side, price, remaining]
        self.seq = 0
        self.levels_from = 0
        self.needs_resync = False
        self._changed_bids: set[int] = set()
        self._changed_asks: set[int] = set()
        self._diff_seq = 0

    # ------------------------------------------------------------------ events

    def _level(self, side: int, price: int, delta: int) -> None:
        levels = self.bids if side == common_pb2.SIDE_BUY else self.asks
        quantity = levels.get(price, 0) + delta
        if quantity > 0:
            levels[price] = quantity
        else:
            levels.pop(price, None)
        (self._changed_bids if side == common_pb2.SIDE_BUY else self._changed_asks).add(price)

    def apply(self, event: events_pb2.Event) -> None:
        body = event.WhichOneof("body")
        if body == "order_accepted":
            a = event.order_accepted
            seq = a.envelope.seq
            if (
                a.order_type == common_pb2.ORDER_TYPE_LIMIT
                and a.time_in_force == common_pb2.TIME_IN_FORCE_GTC
            ):
                self.orders[int(a.order_id)] = [a.side, a.price, a.quantity]
                if seq > self.levels_from:
                    self._level(a.side, a.price, a.quantity)
        elif body == "trade_executed":
            t = event.trade_executed
            seq = t.envelope.seq
            live = seq > self.levels_from
            maker_side = (
                common_pb2.SIDE_SELL if t.taker_side == common_pb2.SIDE_BUY else common_pb2.SIDE_BUY
            )
            maker = self.orders.get(int(t.maker_order_id))
            if maker is not None:
                maker[2] -= t.quantity
                if maker[2] <= 0:
                    del self.orders[int(t.maker_order_id)]
            elif live:
                self.needs_resync = True
            if live:
                self._level(maker_side, t.price, -t.quantity)
            taker = self.orders.get(int(t.taker_order_id))
            if taker is not None:  # a GTC limit taker rests what is left of it
                taker[2] -= t.quantity
                if live:
                    self._level(taker[0], taker[1], -t.quantity)
                if taker[2] <= 0:
                    del self.orders[int(t.taker_order_id)]
        elif body in ("order_canceled", "order_expired"):
            c = getattr(event, body)
            seq = c.envelope.seq
            order = self.orders.pop(int(c.order_id), None)
            if order is not None:
                if seq > self.levels_from:
                    self._level(order[0], order[1], -order[2])
            elif (
                body == "order_canceled"
                and c.cause in _RESTING_CAUSES
                and c.canceled_quantity
                and seq > self.levels_from
            ):
                self.needs_resync = True
        else:
            return
        self.seq = max(self.seq, seq)

    def note_seq(self, seq: int) -> None:
        self.seq = max(self.seq, seq)

    def load(self, snapshot: matcher_pb2.OrderBookSnapshot) -> None:
        """Replace the levels with the matcher's (full depth) as of its seq."""
        self.bids = {lv.price: lv.quantity for lv in snapshot.bids}
        self.asks = {lv.price: lv.quantity for lv in snapshot.asks}
        self.levels_from = snapshot.seq
        self.seq = max(self.seq, snapshot.seq)
        self.needs_resync = False
        self._changed_bids.clear()
        self._changed_asks.clear()
        self._diff_seq = self.seq

    # ------------------------------------------------------------------ views

    def top(self, depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        bids = heapq.nlargest(depth, self.bids.items())
        asks = heapq.nsmallest(depth, self.asks.items())
        return bids, asks

    def levels_json(self, levels: list[tuple[int, int]]) -> list[list[str]]:
        m = self.market
        return [[m.format_price(p), m.format_quantity(q)] for p, q in levels]

    def checksum(self) -> int:
        bids, asks = self.top(CHECKSUM_DEPTH)
        text = (
            ",".join(f"{p}:{q}" for p, q in self.levels_json(bids))
            + "|"
            + ",".join(f"{p}:{q}" for p, q in self.levels_json(asks))
        )
        return zlib.crc32(text.encode())

    def snapshot(self, depth: int = 50) -> dict[str, Any]:
        bids, asks = self.top(depth)
        return {
            "symbol": self.market.symbol,
            "seq": self.seq,
            "bids": self.levels_json(bids),
            "asks": self.levels_json(asks),
            "checksum": self.checksum(),
        }

    def take_diff(self) -> dict[str, Any] | None:
        """The levels changed since the last call (quantity "0": removed), or None."""
        if not self._changed_bids and not self._changed_asks:
            return None  # diffs chain: each one's prev_seq is the previous one's seq
        m = self.market
        diff = {
            "symbol": m.symbol,
            "prev_seq": self._diff_seq,
            "seq": self.seq,
            "bids": [
                [m.format_price(p), m.format_quantity(self.bids.get(p, 0))]
                for p in sorted(self._changed_bids, reverse=True)
            ],
            "asks": [
                [m.format_price(p), m.format_quantity(self.asks.get(p, 0))]
                for p in sorted(self._changed_asks)
            ],
            "checksum": self.checksum(),
        }
        self._changed_bids.clear()
        self._changed_asks.clear()
        self._diff_seq = self.seq
        return diff
