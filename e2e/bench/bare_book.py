"""Bare price-time books: the yardsticks the engine's benchmark compares with.

No risk, no events, no validation, no idempotency, no hash. Only the benchmark uses them.
- `SimpleBook`: the simplest price-time book, as PERFORMANCE.md's calibration measures it:
  a SortedDict of price levels per side, a FIFO deque per level, cancel removes the entry.
- `HeapBook`: a faster bare book (a heap of prices per side, a dict of levels, lazy cancel),
  the same layout the engine uses, reported for transparency.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush

from sortedcontainers import SortedDict


class SimpleBook:
    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()  # price -> deque([order_id, remaining])
        self.asks: SortedDict = SortedDict()
        self.orders: dict[int, tuple[bool, int, list[int]]] = {}

    def place(self, order_id: int, buy: bool, price: int, qty: int, rest: bool) -> int:
        """Match, then rest the remainder if `rest`; return the filled quantity."""
        book = self.asks if buy else self.bids
        remaining = qty
        while remaining and book:
            best, queue = book.peekitem(0 if buy else -1)
            if best > price if buy else best < price:
                break
            while remaining and queue:
                maker = queue[0]
                fill = min(remaining, maker[1])
                maker[1] -= fill
                remaining -= fill
                if maker[1] == 0:
                    queue.popleft()
                    del self.orders[maker[0]]
            if not queue:
                del book[best]
        if remaining and rest:
            own = self.bids if buy else self.asks
            queue = own.get(price)
            if queue is None:
                queue = own[price] = deque()
            entry = [order_id, remaining]
            queue.append(entry)
            self.orders[order_id] = (buy, price, entry)
        return qty - remaining

    def cancel(self, order_id: int) -> bool:
        found = self.orders.pop(order_id, None)
        if found is None:
            return False
        buy, price, entry = found
        book = self.bids if buy else self.asks
        queue = book[price]
        queue.remove(entry)
        if not queue:
            del book[price]
        return True


class HeapBook:
    def __init__(self) -> None:
        self.levels: tuple[dict[int, deque[list[int]]], dict[int, deque[list[int]]]] = ({}, {})
        self.heaps: tuple[list[int], list[int]] = ([], [])  # bids negated, asks
        self.orders: dict[int, list[int]] = {}

    def place(self, order_id: int, buy: bool, price: int, qty: int, rest: bool) -> int:
        levels = self.levels[1 if buy else 0]
        heap = self.heaps[1 if buy else 0]
        remaining = qty
        while remaining and heap:
            best = heap[0] if buy else -heap[0]
            queue = levels.get(best)
            if queue is None:
                heappop(heap)
                continue
            if best > price if buy else best < price:
                break
            while remaining and queue:
                maker = queue[0]
                if maker[1] == 0:
                    queue.popleft()
                    continue
                fill = min(remaining, maker[1])
                maker[1] -= fill
                remaining -= fill
                if maker[1] == 0:
                    queue.popleft()
                    del self.orders[maker[0]]
            if not queue:
                del levels[best]
                heappop(heap)
        if remaining and rest:
            own = self.levels[0 if buy else 1]
            queue = own.get(price)
            if queue is None:
                queue = own[price] = deque()
                heappush(self.heaps[0 if buy else 1], -price if buy else price)
            order = [order_id, remaining]
            queue.append(order)
            self.orders[order_id] = order
        return qty - remaining

    def cancel(self, order_id: int) -> bool:
        order = self.orders.pop(order_id, None)
        if order is None:
            return False
        order[1] = 0
        return True
