"""The engine's order book: price levels, their heaps, the best prices, and views of it.

Per side a dict of price levels, a heap of its prices (stale entries skipped lazily) and
the exact best price; a level is a list of its resting orders, oldest first, or a
`_DeepLevel` once it has grown long. Matching and cancels (`Engine.execute`, `Engine._take`)
work on these structures inline; this module holds what they call on the rarer paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from heapq import heapify, heappop, heappush
from typing import Any, SupportsIndex

from workloads.matcher.layout import (
    BUY,
    O_ACCOUNT,
    O_ID,
    O_MINE,
    O_PRICE,
    O_REMAINING,
    O_SIDE,
    EngineFields,
)


class BookMixin(EngineFields):
    """`Engine`'s book: `bid_levels`/`ask_levels`, their heaps, `best_bid`/`best_ask`, `orders`."""

    def _rest(self, order: list[Any]) -> None:
        """Put an order on the book, last in its price level's queue."""
        side, price = order[O_SIDE], order[O_PRICE]
        levels = self.bid_levels if side == BUY else self.ask_levels
        level = levels.get(price)
        if level is None:
            levels[price] = [order]
            self._push_level(side, price)
        else:
            level.append(order)
        self.orders[order[O_ID]] = order
        order[O_MINE][order[O_ID]] = order

    def _push_level(self, side: int, price: int) -> None:
        """Index a new price level: its side's heap (compacted when stale) and best price."""
        if side == BUY:
            heap, levels = self.bid_heap, self.bid_levels
            heappush(heap, -price)
            if len(heap) > 2 * len(levels) + 1024:
                heap[:] = [-p for p in levels]
                heapify(heap)
            if price > self.best_bid:
                self.best_bid = price
        else:
            heap, levels = self.ask_heap, self.ask_levels
            heappush(heap, price)
            if len(heap) > 2 * len(levels) + 1024:
                heap[:] = list(levels)
                heapify(heap)
            if not self.best_ask or price < self.best_ask:
                self.best_ask = price

    def _drop_level(self, side: int, price: int) -> None:
        """Delete an emptied price level; find the next best price if it was the best."""
        if side == BUY:
            del self.bid_levels[price]
            if price == self.best_bid:
                self.best_bid = _highest(self.bid_heap, self.bid_levels)
        else:
            del self.ask_levels[price]
            if price == self.best_ask:
                self.best_ask = _lowest(self.ask_heap, self.ask_levels)

    def _drop(self, order: list[Any]) -> None:
        """Forget a resting order that leaves the book (its level no longer holds it)."""
        oid = order[O_ID]
        del self.orders[oid]
        del order[O_MINE][oid]

    def _fillable(self, account: str, side: int, bound: int, lots: int) -> bool:
        """Whether `lots` can fill at once within `bound`, not counting own orders (STP)."""
        if side == BUY:
            prices = sorted(p for p in self.ask_levels if not bound or p <= bound)
            levels = self.ask_levels
        else:
            prices = sorted((p for p in self.bid_levels if not bound or p >= bound), reverse=True)
            levels = self.bid_levels
        for p in prices:
            for order in levels[p]:  # a dead entry (0 lots left, see `_DeepLevel`) adds none
                if order[O_ACCOUNT] != account:
                    lots -= order[O_REMAINING]
                    if lots <= 0:
                        return True
        return False

    # ------------------------------------------------------------------ views

    def depth(
        self, levels_wanted: int
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Top `levels_wanted` (price, quantity, live orders) per side, best first."""
        lot = self.spec.lot_size

        def side(levels: dict[int, list[Any]], reverse: bool) -> list[tuple[int, int, int]]:
            prices = sorted(levels, reverse=reverse)[:levels_wanted]
            return [  # (dead entries have 0 lots and are not counted as orders)
                (p, sum(o[O_REMAINING] for o in levels[p]) * lot, _live_orders(levels[p]))
                for p in prices
            ]

        return side(self.bid_levels, True), side(self.ask_levels, False)

    def reserved(self) -> dict[str, tuple[int, int]]:
        """What open orders reserve per account: (base, quote). Holds must equal this."""
        lot = self.spec.lot_size
        out: dict[str, tuple[int, int]] = {}
        for order in self.orders.values():
            base, quote = out.get(order[O_ACCOUNT], (0, 0))
            if order[O_SIDE] == BUY:
                quote += order[O_PRICE] * order[O_REMAINING]
            else:
                base += order[O_REMAINING] * lot
            out[order[O_ACCOUNT]] = (base, quote)
        return out


class _DeepLevel(list[list[Any]]):
    """A long price level, whose cancels mark orders dead instead of searching the list.

    `list.remove` compares the order with every entry before it: 15 us in a level of 1,000
    orders, 160 us in one of 10,000 (venues have such levels at round prices). Here a
    cancel sets the order's remaining lots to 0 (a resting order always has some left),
    counts it in `dead` and leaves it in place. Two invariants let the engine's matching
    loop, `if not level` tests and best bid/ask read this level as they read a plain list:
    - its first entry is live: the matching loop takes `level[0]` as the next maker and
      `del level[0]` drops it (which then drops the dead entries behind it), and a level
      is non-empty exactly when it holds a live order (an emptied level is deleted);
    - dead entries are at most half the level when a cancel returns: past that the level
      is compacted, which costs O(1) amortized per cancel and keeps memory proportional
      to the live orders.
    Whatever walks a level's entries skips or ignores those with 0 lots (to_state, depth,
    `_fillable`). A level becomes deep on a cancel while it is long (`_deepen`, past the
    engine's `_SHORT_LEVEL`) and stays so until it is deleted; snapshots restore plain lists.
    """

    __slots__ = ("dead",)

    def __init__(self, orders: Iterable[list[Any]]) -> None:
        super().__init__(orders)
        self.dead = 0  # entries whose order was cancelled

    def remove(self, order: list[Any], /) -> None:
        """Cancel `order` (live, in this level): mark it dead, O(1) amortized."""
        order[O_REMAINING] = 0
        self.dead += 1
        if 2 * self.dead > len(self):
            self[:] = [o for o in self if o[O_REMAINING]]
            self.dead = 0
        elif self[0] is order:
            self._drop_dead_head()

    def __delitem__(self, index: SupportsIndex | slice, /) -> None:
        """Delete entries (the matching loop deletes a filled or self-trade first order)."""
        super().__delitem__(index)
        if self and not self[0][O_REMAINING]:
            self._drop_dead_head()

    def _drop_dead_head(self) -> None:
        """Drop the dead entries at the front: the first entry is live again, or none is."""
        count = 1  # the caller found the first entry dead
        size = len(self)
        while count < size and not self[count][O_REMAINING]:
            count += 1
        super().__delitem__(slice(0, count))
        self.dead -= count


def _deepen(levels: dict[int, list[list[Any]]], price: int) -> list[list[Any]]:
    """The long level at `price` as a `_DeepLevel` (it replaces the list the first time)."""
    level = levels[price]
    if type(level) is list:
        level = levels[price] = _DeepLevel(level)
    return level


def _live_orders(level: list[list[Any]]) -> int:
    """How many live orders `level` holds."""
    return len(level) - level.dead if isinstance(level, _DeepLevel) else len(level)


def _lowest(heap: list[int], levels: dict[int, list[list[Any]]]) -> int:
    """The lowest price of `levels` (0: none), dropping stale entries off its heap."""
    while heap:
        if heap[0] in levels:
            return heap[0]
        heappop(heap)
    return 0


def _highest(heap: list[int], levels: dict[int, list[list[Any]]]) -> int:
    """The highest price of `levels` (0: none), from its heap of negated prices."""
    while heap:
        if -heap[0] in levels:
            return -heap[0]
        heappop(heap)
    return 0
