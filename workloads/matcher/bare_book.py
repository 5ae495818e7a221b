"""The simplest fast price-time book: the yardstick the engine's benchmark compares with.

No risk, no events, no validation: a heap of prices per side, a dict of levels, a deque
of [order_id, remaining] per level, and lazy cancellation. Only the benchmark uses it.
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush


class BareBook:
    def __init__(self) -> None:
        self.levels: tuple[dict[int, deque[list[int]]], dict[int, deque[list[int]]]] = ({}, {})
        self.heaps: tuple[list[int], list[int]] = ([], [])  # bids negated, asks
        self.orders: dict[int, list[int]] = {}

    def place(self, order_id: int, buy: bool, price: int, qty: int, rest: bool) -> int:
        """Match, then rest the remainder if `rest`; return the filled quantity."""
        levels = self.levels[1 if buy else 0]
        heap = self.heaps[1 if buy else 0]
        remaining = qty
        while remaining and heap:
            best = heap[0] if buy else -heap[0]
            queue = levels.get(best)
            if queue is None:
                heappop(heap)
                continue
            if price and (best > price if buy else best < price):
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
