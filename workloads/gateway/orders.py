"""The order-status cache, fed by matcher replies and by the events topic.

The same event can arrive twice (in this replica's reply and again from Kafka) and in
either order, so every fact is applied at most once per order (keyed by seq and index)
and the derived fields do not depend on arrival order: `remaining` only ever shrinks,
fills add up once each, and a cancel or expiry is a flag. The status is computed:
REJECTED, FILLED (nothing remains), CANCELED (cancelled or expired, maybe after fills),
PARTIALLY_FILLED, else ACCEPTED. Order ids are `<symbol>:<seq of the place command>`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contracts.v1 import common_pb2, events_pb2
from workloads.gateway.errors import reject_code
from workloads.gateway.markets import Market

SIDES: dict[int, str] = {common_pb2.SIDE_BUY: "BUY", common_pb2.SIDE_SELL: "SELL"}
TYPES: dict[int, str] = {
    common_pb2.ORDER_TYPE_LIMIT: "LIMIT",
    common_pb2.ORDER_TYPE_MARKET: "MARKET",
}
TIFS: dict[int, str] = {
    common_pb2.TIME_IN_FORCE_GTC: "GTC",
    common_pb2.TIME_IN_FORCE_IOC: "IOC",
    common_pb2.TIME_IN_FORCE_FOK: "FOK",
}
MAX_FILLS_KEPT = 100


def order_key(order_id: str) -> tuple[str, int] | None:
    """`BTC-USDT:42` -> ("BTC-USDT", 42); None when malformed."""
    symbol, sep, number = order_id.rpartition(":")
    if not sep or not symbol or not number.isdigit() or len(number) > 19:
        return None
    return symbol, int(number)


def event_index(envelope: common_pb2.EventEnvelope) -> int:
    _, _, index = envelope.event_id.rpartition(":")
    return int(index) if index.isdigit() else 0


@dataclass(slots=True)
class OrderState:
    symbol: str
    seq: int
    account: str = ""
    client_order_id: str = ""
    side: int = 0
    order_type: int = 0
    tif: int = 0
    price: int = 0
    quantity: int = 0
    post_only: bool = False
    remaining: int | None = None
    filled: int = 0
    filled_quote: int = 0
    fee_base: int = 0
    fee_quote: int = 0
    canceled: bool = False
    expired: bool = False
    reject_reason: int = 0
    created_ns: int = 0
    updated_seq: int = 0
    epoch: int = 0
    seen: set[tuple[int, int]] = field(default_factory=set)
    fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def order_id(self) -> str:
        return f"{self.symbol}:{self.seq}"

    @property
    def status(self) -> str:
        if self.reject_reason:
            return "REJECTED"
        if self.remaining == 0 and self.filled:
            return "FILLED"
        if self.canceled or self.expired:
            return "CANCELED"
        if self.filled:
            return "PARTIALLY_FILLED"
        return "ACCEPTED"

    def to_json(self, market: Market) -> dict[str, Any]:
        remaining = self.remaining if self.remaining is not None else self.quantity
        average = None
        if self.filled:
            lots = self.filled // market.lot_size
            average = market.format_price(self.filled_quote // lots) if lots else None
        return {
            "order_id": self.order_id,
            "client_order_id": self.client_order_id,
            "symbol": self.symbol,
            "side": SIDES.get(self.side),
            "type": TYPES.get(self.order_type),
            "time_in_force": TIFS.get(self.tif),
            "price": market.format_price(self.price) if self.price else None,
            "quantity": market.format_quantity(self.quantity) if self.quantity else None,
            "filled_quantity": market.format_quantity(self.filled),
            "remaining_quantity": market.format_quantity(
                0 if self.status in ("CANCELED", "REJECTED") else remaining
            ),
            "average_price": average,
            "status": self.status,
            "reject_reason": reject_code(self.reject_reason) if self.reject_reason else None,
            "post_only": self.post_only,
            "seq": self.seq,
            "updated_seq": self.updated_seq,
            "epoch": self.epoch,
            "created_at": self.created_ns // 1_000_000,
            "fills": list(self.fills),
        }


Listener = Callable[[OrderState, dict[str, Any] | None], None]
"""Called once per newly applied fact: the order, and the fill (trade) it got, if any."""


class OrderCache:
    def __init__(self, markets: dict[str, Market], capacity: int = 200_000) -> None:
        self.markets = markets
        self.capacity = capacity
        self.orders: OrderedDict[tuple[str, int], OrderState] = OrderedDict()
        self.listeners: list[Listener] = []

    def get(self, symbol: str, seq: int) -> OrderState | None:
        return self.orders.get((symbol, seq))

    def _order(self, symbol: str, seq: int) -> OrderState:
        key = (symbol, seq)
        order = self.orders.get(key)
        if order is None:
            order = self.orders[key] = OrderState(symbol, seq)
            if len(self.orders) > self.capacity:
                self.orders.popitem(last=False)
        return order

    def _notify(self, order: OrderState, fill: dict[str, Any] | None = None) -> None:
        for listener in self.listeners:
            listener(order, fill)

    def record_rejected(
        self,
        symbol: str,
        seq: int,
        epoch: int,
        account: str,
        cid: str,
        reason: int,
        request: Any = None,
        occurred: int = 0,
    ) -> OrderState:
        """A sequenced place that the matcher rejected: it has a seq, so it has an id."""
        order = self._order(symbol, seq)
        if (seq, 0) in order.seen:
            return order
        order.seen.add((seq, 0))
        order.account, order.client_order_id, order.reject_reason = account, cid, reason
        order.epoch, order.updated_seq, order.created_ns = epoch, seq, occurred
        if request is not None:
            order.side, order.order_type = request.side, request.order_type
            order.tif, order.price = request.time_in_force, request.price
            order.quantity, order.post_only = request.quantity, request.post_only
        self._notify(order)
        return order

    def apply(self, event: events_pb2.Event, *, from_feed: bool = True) -> OrderState | None:
        """Apply one event; return the order it changed (None if none or already applied)."""
        body = event.WhichOneof("body")
        if body == "order_accepted":
            m = event.order_accepted
            order = self._fresh(m.envelope, int(m.order_id))
            if order is None:
                return None
            order.account, order.client_order_id = m.account, m.client_order_id
            order.side, order.order_type, order.tif = m.side, m.order_type, m.time_in_force
            order.price, order.quantity, order.post_only = m.price, m.quantity, m.post_only
            if order.remaining is None:
                order.remaining = m.quantity
            order.created_ns = m.envelope.occurred_at
            self._notify(order)
            return order
        if body == "trade_executed":
            t = event.trade_executed
            changed = None
            for oid, remaining, maker in (
                (t.maker_order_id, t.maker_remaining, True),
                (t.taker_order_id, t.taker_remaining, False),
            ):
                order = self._fresh(t.envelope, int(oid))
                if order is None:
                    continue
                self._fill(order, t, remaining, maker)
                changed = order
            return changed
        if body in ("order_canceled", "order_expired"):
            m2 = getattr(event, body)
            order = self._fresh(m2.envelope, int(m2.order_id))
            if order is None:
                return None
            order.account = order.account or m2.account
            order.client_order_id = order.client_order_id or m2.client_order_id
            if body == "order_canceled":
                order.canceled = True
            else:
                order.expired = True
            self._notify(order)
            return order
        if body == "order_rejected" and from_feed:
            r = event.order_rejected
            # Cancel rejections carry the order id (or "cancel-all") in `detail`; a place
            # rejection has none. ORDER_NOT_FOUND only ever answers a cancel.
            if r.detail or r.reason == common_pb2.REJECT_REASON_ORDER_NOT_FOUND:
                return None
            env = r.envelope
            return self.record_rejected(
                env.symbol,
                env.seq,
                env.epoch,
                r.account,
                r.client_order_id,
                r.reason,
                occurred=env.occurred_at,
            )
        return None

    def _fresh(self, env: common_pb2.EventEnvelope, order_seq: int) -> OrderState | None:
        """The order, when this event is new to it; None when already applied."""
        if env.symbol not in self.markets:
            return None
        order = self._order(env.symbol, order_seq)
        key = (env.seq, event_index(env))
        if key in order.seen:
            return None
        order.seen.add(key)
        order.updated_seq = max(order.updated_seq, env.seq)
        order.epoch = max(order.epoch, env.epoch)
        return order

    def _fill(
        self, order: OrderState, t: events_pb2.TradeExecuted, remaining: int, maker: bool
    ) -> None:
        market = self.markets[order.symbol]
        order.account = order.account or (t.maker_account if maker else t.taker_account)
        order.filled += t.quantity
        order.filled_quote += t.quote_amount
        buyer = (t.taker_side == common_pb2.SIDE_BUY) != maker
        if buyer:
            order.fee_base += t.buyer_fee
        else:
            order.fee_quote += t.seller_fee
        if order.remaining is None or remaining < order.remaining:
            order.remaining = remaining
        fill = {
            "trade_id": f"{order.symbol}:{t.trade_id}",
            "order_id": order.order_id,
            "symbol": order.symbol,
            "side": "BUY" if buyer else "SELL",
            "liquidity": "MAKER" if maker else "TAKER",
            "price": market.format_price(t.price),
            "quantity": market.format_quantity(t.quantity),
            "fee": market.format_amount(
                market.base_asset if buyer else market.quote_asset,
                t.buyer_fee if buyer else t.seller_fee,
            ),
            "fee_asset": market.base_asset if buyer else market.quote_asset,
            "seq": t.envelope.seq,
            "time": t.envelope.occurred_at // 1_000_000,
        }
        order.fills.append(fill)
        if len(order.fills) > MAX_FILLS_KEPT:
            del order.fills[0]
        self._notify(order, fill)
