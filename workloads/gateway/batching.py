"""Coalesce concurrent calls into one batched call, and hand each caller its own result.

A Python gRPC round trip or a PostgreSQL statement costs far more than the work per
order, so concurrent requests share one: items wait at most `window` seconds (or until
`max_size` are queued) and go out together; while `max_inflight` batches are out, new
items keep queueing, so under load batches grow by themselves (as a WAL group commit).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from prometheus_client import Histogram

T = TypeVar("T")
R = TypeVar("R")

BATCH_SECONDS = Histogram(
    "gateway_batch_seconds",
    "Duration of one coalesced call",
    ["batcher"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
BATCH_SIZE = Histogram(
    "gateway_batch_size",
    "Items per coalesced call",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)


class MicroBatcher(Generic[T, R]):
    """`await submit(item)` -> the result for that item from `call(items)`."""

    def __init__(
        self,
        name: str,
        call: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        window: float = 0.001,
        max_size: int = 500,
        max_inflight: int = 2,
    ) -> None:
        self.name = name
        self._call = call
        self._window = window
        self._max_size = max_size
        self._inflight = 0
        self._max_inflight = max_inflight
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._histogram = BATCH_SIZE.labels(name)
        self._seconds = BATCH_SECONDS.labels(name)

    def add(self, item: T) -> asyncio.Future[R]:
        """Queue `item`; the future gets its result. No task per item: a caller that does
        not wait for the result (a write behind) just adds a done callback."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self._max_size:
            self._flush()
        elif self._timer is None:
            if self._window <= 0:
                self._timer = loop.call_soon(self._on_timer)  # type: ignore[assignment]
            else:
                self._timer = loop.call_later(self._window, self._on_timer)
        return future

    async def submit(self, item: T) -> R:
        return await self.add(item)

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        # With `max_inflight` batches out, the items wait: a finishing batch flushes them.
        while self._items and self._inflight < self._max_inflight:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            items, futures = self._items[: self._max_size], self._futures[: self._max_size]
            del self._items[: self._max_size], self._futures[: self._max_size]
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._run(items, futures))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        self._histogram.observe(len(items))
        started = time.perf_counter()
        try:
            results = await self._call(items)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # every caller learns of the failure
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        else:
            for future, result in zip(futures, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._seconds.observe(time.perf_counter() - started)
            self._inflight -= 1
            if self._items:
                self._flush()

    def pending(self) -> set[asyncio.Future[Any]]:
        """What is still to come: queued items' results and the batches in flight."""
        return {*self._futures, *self._tasks}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for future in self._futures:
            if not future.done():
                future.cancel()
        self._items.clear()
        self._futures.clear()
