"""The order-status cache, fed by matcher replies and by the events topic.

The same event can arrive twice (in this replica's reply and again from Kafka) and in
either order, so every fact is applied at most once per order (keyed by seq and index)
and the derived fields do not depend on arrival order: `remaining` only ever shrinks,
fills add up once each, and a cancel or expiry is a flag. The status is computed:
REJECTED, FILLED (nothing remains), CANCELED (cancelled or expired, maybe after fills),
PARTIALLY_FILLED, else ACCEPTED. Order ids are `<symbol>:<seq of the place command>`.

Deduplication needs no set per order: the topic brings an order's facts once each and in
key order, so an order keeps the last key the feed applied and the few keys applied from
replies that the feed has not reached yet. With fills kept as tuples of plain values, an
order is a single object the garbage collector tracks (its tuples are untracked after their
first collection), so a full collection over a cache of 200,000 orders stays short.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import dropwhile
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
FILL_FIELDS = (
    "trade_id",
    "order_id",
    "symbol",
    "side",
    "liquidity",
    "price",
    "quantity",
    "fee",
    "fee_asset",
    "seq",
    "time",
)


def fill_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """A fill as the API writes it (fields `FILL_FIELDS`)."""
    trade_id, order_id, symbol, side, liquidity, price, quantity, fee, asset, seq, ms = row
    return {
        "trade_id": trade_id,
        "order_id": order_id,
        "symbol": symbol,
        "side": side,
        "liquidity": liquidity,
        "price": price,
        "quantity": quantity,
        "fee": fee,
        "fee_asset": asset,
        "seq": seq,
        "time": ms,
    }


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
    feed_key: int = -1
    """The last fact key the events topic applied to this order."""
    reply_keys: tuple[int, ...] = ()
    """Fact keys applied from matcher replies that the topic has not reached yet."""
    fills: tuple[tuple[Any, ...], ...] = ()
    """The latest fills, each as `FILL_FIELDS` (a tuple of plain values, see above)."""

    def claim(self, key: int, from_feed: bool) -> bool:
        """Whether the fact `key` is new to this order (and note that it is applied now)."""
        if from_feed:
            if key <= self.feed_key:
                return False
            self.feed_key = key
            pending = self.reply_keys
            if pending:  # the topic passed these: forget them (and skip this one if known)
                self.reply_keys = tuple(k for k in pending if k > key)
                return key not in pending
            return True
        if key <= self.feed_key or key in self.reply_keys:
            return False
        self.reply_keys = (*self.reply_keys, key)
        return True

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
        status = self.status
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
                0 if status == "CANCELED" or status == "REJECTED" else remaining
            ),
            "average_price": average,
            "status": status,
            "reject_reason": reject_code(self.reject_reason) if self.reject_reason else None,
            "post_only": self.post_only,
            "seq": self.seq,
            "updated_seq": self.updated_seq,
            "epoch": self.epoch,
            "created_at": self.created_ns // 1_000_000,
            "fills": [fill_json(fill) for fill in self.fills],
        }


Listener = Callable[[OrderState, dict[str, Any] | None], None]
"""Called once per newly applied fact: the order, and the fill (trade) it got, if any."""


OPEN_STATUSES = frozenset(("ACCEPTED", "PARTIALLY_FILLED"))


class OrderCache:
    """The newest `capacity` orders of every market, and each account's among them (in the
    order this replica first learned their owner: by seq within a market)."""

    def __init__(self, markets: dict[str, Market], capacity: int = 200_000) -> None:
        self.markets = markets
        self.capacity = capacity
        self.orders: OrderedDict[tuple[str, int], OrderState] = OrderedDict()
        self.by_account: dict[str, dict[tuple[str, int], OrderState]] = {}
        self.listeners: list[Listener] = []

    def get(self, symbol: str, seq: int) -> OrderState | None:
        return self.orders.get((symbol, seq))

    def of_account(
        self,
        account: str,
        symbol: str | None = None,
        open_orders: bool | None = None,
        before: tuple[str, int] | None = None,
    ) -> Iterator[OrderState]:
        """The account's orders, newest first: of `symbol` only, open or closed only, after
        (older than) the order `before` only."""
        mine = self.by_account.get(account, {})
        keys = reversed(list(mine))
        if before is not None:
            keys = dropwhile(lambda k: k != before, keys)
            next(keys, None)  # the cursor's own order
        for key in keys:
            order = mine[key]
            if symbol is not None and order.symbol != symbol:
                continue
            if open_orders is not None and (order.status in OPEN_STATUSES) != open_orders:
                continue
            yield order

    def fill_orders(self, account: str) -> dict[str, str]:
        """trade id -> the account's order id, for the fills this cache still holds."""
        return {
            fill[0]: order.order_id
            for order in self.by_account.get(account, {}).values()
            for fill in order.fills
        }

    def _order(self, symbol: str, seq: int) -> OrderState:
        key = (symbol, seq)
        order = self.orders.get(key)
        if order is None:
            order = self.orders[key] = OrderState(symbol, seq)
            if len(self.orders) > self.capacity:
                old_key, old = self.orders.popitem(last=False)
                mine = self.by_account.get(old.account)
                if mine is not None:
                    mine.pop(old_key, None)
                    if not mine:
                        del self.by_account[old.account]
        return order

    def _notify(self, order: OrderState, fill: dict[str, Any] | None = None) -> None:
        if order.account:
            mine = self.by_account.get(order.account)
            if mine is None:
                mine = self.by_account[order.account] = {}
            if (order.symbol, order.seq) not in mine:
                mine[(order.symbol, order.seq)] = order
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
        from_feed: bool = False,
    ) -> OrderState:
        """A sequenced place that the matcher rejected: it has a seq, so it has an id."""
        order = self._order(symbol, seq)
        if not order.claim(seq << 32, from_feed):
            return order
        order.account, order.client_order_id, order.reject_reason = account, cid, reason
        order.epoch, order.updated_seq, order.created_ns = epoch, seq, occurred
        if request is not None:
            order.side, order.order_type = request.side, request.order_type
            order.tif, order.price = request.time_in_force, request.price
            order.quantity, order.post_only = request.quantity, request.post_only
        self._notify(order)
        return order

    def apply(self, event: events_pb2.Event, *, from_feed: bool = True) -> OrderState | None:
        """Apply one event; return the order it changed (None if none or already applied).

        Every protobuf field is read once per event: a read (above all of a sub-message
        such as the envelope) costs more than the Python around it."""
        body = event.WhichOneof("body")
        if body == "order_accepted":
            m = event.order_accepted
            env = m.envelope
            order = self._fresh(env, int(m.order_id), from_feed)
            if order is None:
                return None
            order.account, order.client_order_id = m.account, m.client_order_id
            order.side, order.order_type, order.tif = m.side, m.order_type, m.time_in_force
            quantity = m.quantity
            order.price, order.quantity, order.post_only = m.price, quantity, m.post_only
            if order.remaining is None:
                order.remaining = quantity
            order.created_ns = env.occurred_at
            self._notify(order)
            return order
        if body == "trade_executed":
            return self._trade(event.trade_executed, from_feed)
        if body == "order_canceled" or body == "order_expired":
            m2 = getattr(event, body)
            order = self._fresh(m2.envelope, int(m2.order_id), from_feed)
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
                from_feed=True,
            )
        return None

    def _fresh(
        self, env: common_pb2.EventEnvelope, order_seq: int, from_feed: bool
    ) -> OrderState | None:
        """The order, when this event is new to it; None when already applied."""
        symbol = env.symbol
        if symbol not in self.markets:
            return None
        seq = env.seq
        return self._claimed(
            symbol, order_seq, (seq << 32) | event_index(env), seq, env.epoch, from_feed
        )

    def _claimed(
        self, symbol: str, order_seq: int, key: int, seq: int, epoch: int, from_feed: bool
    ) -> OrderState | None:
        order = self._order(symbol, order_seq)
        if not order.claim(key, from_feed):
            return None
        if seq > order.updated_seq:
            order.updated_seq = seq
        if epoch > order.epoch:
            order.epoch = epoch
        return order

    def _trade(self, t: events_pb2.TradeExecuted, from_feed: bool) -> OrderState | None:
        """A trade fills its maker and its taker order (each once)."""
        env = t.envelope
        symbol = env.symbol
        market = self.markets.get(symbol)
        if market is None:
            return None
        seq = env.seq
        key = (seq << 32) | event_index(env)
        epoch = env.epoch
        maker = self._claimed(symbol, int(t.maker_order_id), key, seq, epoch, from_feed)
        taker = self._claimed(symbol, int(t.taker_order_id), key, seq, epoch, from_feed)
        if maker is None and taker is None:
            return None
        quantity, quote = t.quantity, t.quote_amount
        buyer_fee, seller_fee = t.buyer_fee, t.seller_fee
        taker_buys = t.taker_side == common_pb2.SIDE_BUY
        shared = (
            t.trade_id,  # already "<symbol>:<n>", as the ledger books it
            market.format_price(t.price),
            market.format_quantity(quantity),
            seq,
            env.occurred_at // 1_000_000,
        )
        if maker is not None:
            self._fill(
                maker, market, shared, quantity, quote, t.maker_remaining,
                t.maker_account, True, not taker_buys, buyer_fee, seller_fee,
            )  # fmt: skip
        if taker is not None:
            self._fill(
                taker, market, shared, quantity, quote, t.taker_remaining,
                t.taker_account, False, taker_buys, buyer_fee, seller_fee,
            )  # fmt: skip
            return taker
        return maker

    def _fill(
        self,
        order: OrderState,
        market: Market,
        shared: tuple[str, str, str, int, int],
        quantity: int,
        quote: int,
        remaining: int,
        account: str,
        maker: bool,
        buyer: bool,
        buyer_fee: int,
        seller_fee: int,
    ) -> None:
        order.account = order.account or account
        order.filled += quantity
        order.filled_quote += quote
        if buyer:
            order.fee_base += buyer_fee
            fee_asset, fee = market.base_asset, buyer_fee
        else:
            order.fee_quote += seller_fee
            fee_asset, fee = market.quote_asset, seller_fee
        if order.remaining is None or remaining < order.remaining:
            order.remaining = remaining
        trade_id, price, size, seq, time_ms = shared
        row = (
            trade_id,
            order.order_id,
            order.symbol,
            "BUY" if buyer else "SELL",
            "MAKER" if maker else "TAKER",
            price,
            size,
            market.format_amount(fee_asset, fee),
            fee_asset,
            seq,
            time_ms,
        )
        fills = (*order.fills, row)
        order.fills = fills[-MAX_FILLS_KEPT:] if len(fills) > MAX_FILLS_KEPT else fills
        self._notify(order, fill_json(row) if self.listeners else None)
