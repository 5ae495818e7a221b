"""The engine's idempotency: the results of client order ids and funding ids, remembered.

A place's result is kept per account under its client order id, a funding's under its
funding id, each in a bounded window that forgets the oldest key first (deterministically:
replay forgets the same keys). `duplicate_of` answers a retry from them before it is
sequenced. The place path records an accepted order's key inline (see `Engine.execute`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from workloads.matcher.layout import ACCEPTED, C_FUNDING, C_PLACE, EngineFields


class IdempotencyMixin(EngineFields):
    """`Engine`'s remembered results: `client_orders` and `funding_seen`, with their order."""

    def duplicate_of(self, cmd: tuple[Any, ...]) -> tuple[int, int, int, int] | None:
        """The original (seq, status, reason, order_id) if `cmd` repeats an idempotency key."""
        kind = cmd[0]
        if kind == C_PLACE and cmd[2]:
            found = self._result_of(cmd[1], cmd[2])
            return None if found is None else _expand(found)
        if kind == C_FUNDING:
            seen = self.funding_seen.get(cmd[1])
            return None if seen is None else (*seen, 0)
        return None

    def _remember(
        self, account: str, client_id: str, result: int | tuple[int, int, int, int]
    ) -> None:
        """Record a place's result under its key; past the window, forget the oldest key."""
        ids = self._client_ids(account)
        if client_id in ids:  # a repeated key keeps its place (as in one ordered dict)
            ids[client_id] = result
            return
        ids[client_id] = result
        keys = self._idempotency_order
        keys.append(account)
        keys.append(client_id)
        if len(keys) > self._idempotency_items:
            self._forget_oldest()

    def _client_ids(self, account: str) -> dict[Any, Any]:
        """The account's table of place results by client order id, made on first use.

        It starts with one key that is not a string (None, never a client order id): that
        makes CPython keep every key's hash in the table. A table of only strings keeps
        none, so each probe reads the key string itself to compare hashes; with hundreds of
        thousands of old keys those reads miss the cache on nearly every place.
        """
        ids = self.client_orders.get(account)
        if ids is None:
            ids = self.client_orders[account] = {None: None}
        return ids

    def _forget_oldest(self) -> None:
        """Drop the oldest idempotency key (the window is full)."""
        keys = self._idempotency_order
        account = keys.popleft()
        del self.client_orders[account][keys.popleft()]

    def _result_of(self, account: str, client_id: str) -> int | tuple[int, int, int, int] | None:
        """The stored result of a place key (see `_expand`), None if unknown."""
        ids = self.client_orders.get(account)
        return None if ids is None else ids.get(client_id)

    def _order_id_of(self, account: str, client_id: str) -> int:
        """The order id an accepted (account, client order id) got; 0 if none is known."""
        if not client_id:
            return 0
        known = _expand(self._result_of(account, client_id))
        return 0 if known is None else known[3]

    def _remember_funding(self, funding_id: str, result: tuple[int, int, int]) -> None:
        """Record a funding's (seq, status, reason); past the window, forget the oldest id."""
        seen = self.funding_seen
        size = len(seen)
        seen[funding_id] = result
        if len(seen) > size:  # a new id (a repeated one keeps its place, as in _remember)
            self._funding_order.append(funding_id)
            if size >= self.spec.idempotency_window:
                del seen[self._funding_order.popleft()]


def _pairs(items: deque[str]) -> Iterator[tuple[str, str]]:
    """(account, client_order_id) keys from the flat deque that orders them."""
    it = iter(items)
    return zip(it, it, strict=False)


def _expand(result: int | tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
    """A stored idempotency result as (seq, status, reason, order_id)."""
    if isinstance(result, int):  # an accepted order: its seq, which is also its id
        return (result, ACCEPTED, 0, result)
    return result
