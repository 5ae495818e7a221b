"""The matching engine: a deterministic state machine, commands in, events out.

Pure and synchronous: no I/O, no clock, no randomness. Time and sequence arrive with each
command (stamped by the sequencer), so replaying the same commands in a fresh process
yields the same events and the same rolling state hash.

Commands and events are plain tuples whose first element is their kind; this keeps
protobuf and allocation off the inner loop (the codec turns events into protobuf only
for replies and the outbox). Event kinds equal the field numbers of the contract's
`Event` oneof. Reasons are the contract's `RejectReason` numbers.

Policies, decided here and documented in the README:
- Price-time priority; a trade executes at the resting (maker) order's price.
- MARKET orders never rest: they fill what they can and the remainder is cancelled
  (cause MARKET_REMAINDER). They are IOC by nature (FOK or GTC is an invalid combination)
  and are bounded by the price band when one is set. A MARKET buy spends at most
  `quote_budget` (0: the account's whole available quote); the unspent rest is released.
- FOK orders that cannot fill completely at once are rejected before anything changes.
- Post-only orders that would take are rejected.
- Self-trade prevention: cancel the resting order (expire maker); the incoming order goes
  on matching against the next orders.
- Modes: NORMAL accepts everything. CANCEL_ONLY rejects new orders, accepts cancels.
  SOFT_HALT stops matching: only post-only limit orders (which cannot trade) and cancels
  are accepted, so makers can rebuild a book before trading resumes. HARD_HALT rejects
  orders and cancels. Funding (it mirrors the ledger) and mode changes are accepted in
  every mode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from heapq import heapify, heappop, heappush
from typing import Any, SupportsIndex

from contracts.v1 import common_pb2 as c
from contracts.v1 import events_pb2 as ev
from workloads.matcher.spec import INT64_MAX, MarketSpec

# Command kinds. Layouts:
#   PLACE       (1, account, client_order_id, side, order_type, tif, price, quantity,
#                post_only, quote_budget)
#   CANCEL      (2, account, order_id, client_order_id)
#   CANCEL_ALL  (3, account)                       account "" = the whole market
#   SET_MODE    (4, mode, reason)
#   FUNDING     (5, funding_id, account, asset, amount, direction)
#   EPOCH       (6, epoch, previous_epoch, leader)
C_PLACE = 1
C_CANCEL = 2
C_CANCEL_ALL = 3
C_SET_MODE = 4
C_FUNDING = 5
C_EPOCH = 6

# Event kinds: the field numbers of contracts.v1.Event's oneof. Layouts:
#   ACCEPTED    (1, order_id, client_order_id, account, side, type, tif, price, quantity,
#                post_only, reserved_is_quote, reserved)
#   REJECTED    (2, client_order_id, account, reason, detail)
#   CANCELED    (3, order_id, client_order_id, account, quantity, released_is_quote,
#                released, cause)
#   EXPIRED     (4, order_id, client_order_id, account, quantity, released_is_quote, released)
#   TRADE       (5, trade_id, price, quantity, taker_side, maker_order_id, taker_order_id,
#                maker_account, taker_account, base, quote, buyer_fee, seller_fee,
#                buyer_released, maker_remaining, taker_remaining)
#   MODE        (6, previous_mode, mode, reason)
#   EPOCH       (7, previous_epoch, leader, state_hash)
#   CREDITED    (8, funding_id, account, asset, amount, available_after)
#   DEBITED     (9, funding_id, account, asset, amount, available_after)
#   FUNDING_REJECTED (10, funding_id, account, asset, amount, direction, reason)
#   MASS_CANCELED    (11, account, canceled_orders)
E_ACCEPTED = 1
E_REJECTED = 2
E_CANCELED = 3
E_EXPIRED = 4
E_TRADE = 5
E_MODE = 6
E_EPOCH = 7
E_CREDITED = 8
E_DEBITED = 9
E_FUNDING_REJECTED = 10
E_MASS_CANCELED = 11

# Outcome of a command, as in the contract's CommandStatus.
ACCEPTED = 1
REJECTED = 2
DUPLICATE = 3

BUY = c.SIDE_BUY
SELL = c.SIDE_SELL
LIMIT = c.ORDER_TYPE_LIMIT
MARKET = c.ORDER_TYPE_MARKET
GTC = c.TIME_IN_FORCE_GTC
IOC = c.TIME_IN_FORCE_IOC
FOK = c.TIME_IN_FORCE_FOK
NORMAL = c.SYMBOL_MODE_NORMAL
CANCEL_ONLY = c.SYMBOL_MODE_CANCEL_ONLY
SOFT_HALT = c.SYMBOL_MODE_SOFT_HALT
HARD_HALT = c.SYMBOL_MODE_HARD_HALT
CREDIT = 1
DEBIT = 2

# Order records are lists, for speed:
# [order_id, account, side, price, remaining_lots, client_order_id, balance, account_orders]:
# the last two are the owner's balance list and resting-orders dict, so that a cancel or a
# fill reaches them without looking the account up twice (a resting order and that dict
# refer to each other until the order leaves the book). Snapshots keep the first six.
O_ID, O_ACCOUNT, O_SIDE, O_PRICE, O_REMAINING, O_CLIENT_ID, O_BALANCE, O_MINE = range(8)
_ORDER_FIELDS = 6
# A level longer than this when one of its orders is cancelled becomes a `_DeepLevel`, where
# cancels mark orders dead instead of searching the list; a shorter one (nearly all of them)
# takes the order out at once, as fast as before.
_SHORT_LEVEL = 32
# Balances per account: [available base, hold base, available quote, hold quote].
AVAIL_BASE, HOLD_BASE, AVAIL_QUOTE, HOLD_QUOTE = range(4)

_MODES = (NORMAL, CANCEL_ONLY, SOFT_HALT, HARD_HALT)
_MODE_REJECT = {
    CANCEL_ONLY: c.REJECT_REASON_MARKET_CANCEL_ONLY,
    SOFT_HALT: c.REJECT_REASON_MARKET_SOFT_HALT,
    HARD_HALT: c.REJECT_REASON_MARKET_HARD_HALT,
}
_MAX_ID_LENGTH = 64
# Enum values read on hot paths, bound once (a module attribute lookup each time otherwise).
_RATE_LIMITED = c.REJECT_REASON_RATE_LIMITED
_INSUFFICIENT_FUNDS = c.REJECT_REASON_INSUFFICIENT_FUNDS
_CAUSE_USER = ev.CANCEL_CAUSE_USER
_CAUSE_SELF_TRADE = ev.CANCEL_CAUSE_SELF_TRADE
_CAUSE_MARKET_REMAINDER = ev.CANCEL_CAUSE_MARKET_REMAINDER


def validate_place(spec: MarketSpec, cmd: tuple[Any, ...]) -> int:
    """Stateless checks of a place command: 0, or the RejectReason.

    The service runs this before sequencing, so garbage never reaches the WAL; the engine
    runs it again because it must be safe on its own.
    """
    _, account, client_id, side, otype, tif, price, qty, post_only, budget = cmd
    if not account or len(account) > _MAX_ID_LENGTH:
        return c.REJECT_REASON_INVALID_ACCOUNT
    if len(client_id) > _MAX_ID_LENGTH:
        return c.REJECT_REASON_INVALID_CLIENT_ORDER_ID
    if side != BUY and side != SELL:
        return c.REJECT_REASON_UNKNOWN_SIDE
    if otype != LIMIT and otype != MARKET:
        return c.REJECT_REASON_UNKNOWN_ORDER_TYPE
    if tif != GTC and tif != IOC and tif != FOK:
        return c.REJECT_REASON_UNKNOWN_TIME_IN_FORCE
    lot = spec.lot_size
    if qty <= 0 or qty > spec.max_lots * lot:
        return c.REJECT_REASON_INVALID_QUANTITY
    if qty % lot:
        return c.REJECT_REASON_QUANTITY_NOT_ON_LOT
    if otype == LIMIT:
        if price <= 0 or price > spec.max_price:
            return c.REJECT_REASON_INVALID_PRICE
        if price % spec.tick_size:
            return c.REJECT_REASON_PRICE_NOT_ON_TICK
        if post_only and tif != GTC:
            return c.REJECT_REASON_INVALID_COMBINATION
        if budget:
            return c.REJECT_REASON_INVALID_COMBINATION
    else:
        if post_only or tif != IOC:
            return c.REJECT_REASON_INVALID_COMBINATION
        if budget < 0 or (budget and side == SELL):
            return c.REJECT_REASON_INVALID_AMOUNT
    return 0


class Engine:
    """One market's book, risk and idempotency state."""

    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self.seq = 0
        self.mode = NORMAL
        self.epoch = 0
        self.state_hash = 0
        self.last_price = 0
        self.next_trade_id = 1
        # price -> that level's resting orders, oldest first. A cancel takes its order out
        # at once (a level holds a handful of orders), so every order in a level is live and
        # an empty level is deleted: no per-level totals to keep, no dead entries to skip.
        # A level that has grown long is a `_DeepLevel` instead, whose cancels leave dead
        # entries behind (see there); it still starts with a live order and is deleted when
        # it holds no live one, so the matching loop and best bid/ask read it as a list.
        self.bid_levels: dict[int, list[list[Any]]] = {}
        self.ask_levels: dict[int, list[list[Any]]] = {}
        self.bid_heap: list[int] = []  # negated prices; stale entries are skipped lazily
        self.ask_heap: list[int] = []
        # The best price per side (0: the side is empty), kept exact as levels come and go:
        # placing an order reads one attribute instead of peeking into a heap and a dict.
        self.best_bid = 0
        self.best_ask = 0
        self.orders: dict[int, list[Any]] = {}
        # Resting orders per account, made with the account's balance and kept (cheaper
        # than churn); `_accounts` holds both and the account's idempotency keys, for the
        # place path's single lookup.
        self.account_orders: dict[str, dict[int, list[Any]]] = {}
        self.balances: dict[str, list[int]] = {}
        self._accounts: dict[str, tuple[list[int], dict[int, list[Any]], dict[str, Any]]] = {}
        self.rate: dict[str, list[int]] = {}  # account -> [window index, commands in it]
        # Place results by idempotency key, per account: account -> client_order_id ->
        # (seq, status, reason, order_id); an accepted order's result is stored as just its
        # seq (= order id). Nested rather than keyed by (account, client_order_id): no key
        # tuple to build and hash per place, and the account's table comes with the account
        # lookup the place path makes anyway (see `_client_ids` for its one odd key).
        self.client_orders: dict[str, dict[Any, int | tuple[int, int, int, int] | None]] = {}
        self.funding_seen: dict[
            str, tuple[int, int, int]
        ] = {}  # funding_id -> (seq, status, reason)
        # The keys of the two tables in insertion order, so that forgetting the oldest is
        # O(1): `del table[next(iter(table))]` rescans the dict's growing prefix of deleted
        # slots on every call (microseconds per command once a window is full). Place keys
        # go in flat, two items each (account, client_order_id): no tuple per key.
        self._idempotency_order: deque[str] = deque()
        self._funding_order: deque[str] = deque()
        self._idempotency_items = 2 * spec.idempotency_window  # the deque's limit
        self._max_quantity = spec.max_lots * spec.lot_size
        # The place path's inlined validation compares prices with this: the spec's
        # max_price, capped to what CPython 3.11 compares fast (one 30-bit digit; the default
        # of 10**12 is not). A higher price goes through validate_place, which compares it
        # with max_price itself, so the outcome is the same.
        self._fast_max_price = min(spec.max_price, (1 << 30) - 1)
        self._charges_fees = spec.maker_fee_bps != 0 or spec.taker_fee_bps != 0
        # Whether a place / a cancel must go through the mode, rate-limit and band checks
        # (`_admit`, `_cancel_refused`); one flag read on the hot paths, kept by `_regate`.
        self._place_gated = True
        self._cancel_gated = True
        self._regate()

    def _regate(self) -> None:
        """Recompute the hot paths' gate flags (after a mode change or a restore)."""
        spec = self.spec
        self._place_gated = self.mode != NORMAL or bool(spec.rate_limit or spec.price_band_bps)
        self._cancel_gated = self.mode == HARD_HALT or bool(spec.rate_limit)

    # ------------------------------------------------------------------ dispatch

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

    def execute(self, cmd: tuple[Any, ...], seq: int, ts: int) -> list[tuple[Any, ...]]:
        """Apply one sequenced command; return its events (at least one).

        PLACE and CANCEL, nine commands in ten, run inline here: one more Python call per
        command would cost as much as several of their checks. Their rare branches
        (rejects, matching, expiry, a new price level) call helpers; every branch ends by
        folding the rolling hash, whose formula is the same everywhere (recovery checks it).
        """
        kind = cmd[0]
        self.seq = seq
        # Dispatch in short steps: CPython 3.11 specializes a comparison only when a short
        # jump follows it, and `if kind == C_PLACE:` would jump over the whole place body.
        if kind == C_PLACE:
            place = True
        elif kind == C_CANCEL:
            place = False
        else:
            return self._execute_other(cmd, seq, ts)
        if place:
            _, account, client_id, side, otype, tif, price, qty, post_only, budget = cmd
            spec = self.spec
            # Only well-formed account names are ever in `_accounts` (see `_open_account`), so
            # a known account needs no name checks; the lookup has no side effect.
            known = self._accounts.get(account)
            # validate_place, inlined as one test that a well-formed LIMIT order from a known
            # account passes; any other order goes through validate_place, which names the
            # exact reason. (Comparisons are spelled out: CPython 3.11 specializes a
            # comparison only when a branch follows it, not in chains, `in` tests or stored
            # results.)
            if (
                known is not None
                and otype == LIMIT
                and (side == BUY or side == SELL)  # noqa: SIM109
                and (tif == GTC or ((tif == IOC or tif == FOK) and not post_only))  # noqa: SIM109
                and budget == 0
                and qty > 0
                and qty <= self._max_quantity
                and price > 0
                and price <= self._fast_max_price
                and qty % spec.lot_size == 0
                and price % spec.tick_size == 0
                and len(client_id) <= _MAX_ID_LENGTH
            ):
                bound = price  # the worst price to trade at (0: any)
            else:
                reason = validate_place(spec, cmd)
                if reason:
                    return self._rejected(cmd, seq, reason)
                bound = price if otype == LIMIT else 0
            if self._place_gated:  # market mode, rate limit, price band (which moves `bound`)
                reason, bound = self._admit(cmd, ts, bound)
                if reason:
                    return self._rejected(cmd, seq, reason)
            if known is None:
                balance = mine = ids = None
            else:
                balance, mine, ids = known
                if tif == GTC and len(mine) >= spec.max_open_orders:
                    return self._rejected(cmd, seq, c.REJECT_REASON_TOO_MANY_OPEN_ORDERS)
            # The best opposite price (0: none), and whether the order reaches it.
            crosses = False
            if side == BUY:
                is_buy = True
                best = self.best_ask
                if best and (otype == MARKET or price >= best):
                    crosses = True
            else:
                is_buy = False
                best = self.best_bid
                if best and (otype == MARKET or price <= best):
                    crosses = True
            if crosses and post_only:
                return self._rejected(cmd, seq, c.REJECT_REASON_POST_ONLY_WOULD_TAKE)
            lots = qty // spec.lot_size
            if tif != GTC:
                if otype == MARKET and best == 0:
                    return self._rejected(cmd, seq, c.REJECT_REASON_NO_LIQUIDITY)
                if tif == FOK and not self._fillable(account, side, bound, lots):
                    return self._rejected(cmd, seq, c.REJECT_REASON_FOK_NOT_FILLABLE)
            # Risk: reserve what the order may spend.
            if balance is None:
                return self._rejected(cmd, seq, _INSUFFICIENT_FUNDS)
            if is_buy:
                available = balance[AVAIL_QUOTE]
                reserve = price * lots if otype == LIMIT else (budget or available)
                if reserve <= 0 or available < reserve:
                    return self._rejected(cmd, seq, _INSUFFICIENT_FUNDS)
                balance[AVAIL_QUOTE] = available - reserve
                balance[HOLD_QUOTE] += reserve
            else:
                reserve = qty
                available = balance[AVAIL_BASE]
                if available < reserve:
                    return self._rejected(cmd, seq, _INSUFFICIENT_FUNDS)
                balance[AVAIL_BASE] = available - reserve
                balance[HOLD_BASE] += reserve
            events: list[tuple[Any, ...]] = [
                (
                    E_ACCEPTED,
                    seq,
                    client_id,
                    account,
                    side,
                    otype,
                    tif,
                    price,
                    qty,
                    post_only,
                    is_buy,
                    reserve,
                )
            ]
            if client_id:  # _remember, inlined; an accepted order's result is just its seq
                if client_id in ids:  # type: ignore[operator]
                    ids[client_id] = seq  # type: ignore[index]  # a repeated key keeps its place
                else:
                    ids[client_id] = seq  # type: ignore[index]
                    keys = self._idempotency_order
                    keys.append(account)
                    keys.append(client_id)
                    if len(keys) > self._idempotency_items:
                        self._forget_oldest()
            order = [seq, account, side, price, lots, client_id, balance, mine]
            if crosses:
                if self._take(order, otype, tif, bound, reserve, balance, events):
                    self._rest(order)  # a GTC order's remainder
            elif tif != GTC:  # IOC that found nothing to take
                self._expire(order, lots, balance, events)
            else:  # `_rest`, inlined for the common case: the order just rests
                levels = self.bid_levels if is_buy else self.ask_levels
                level = levels.get(price)
                if level is None:
                    levels[price] = [order]
                    self._push_level(side, price)
                else:
                    level.append(order)
                orders = self.orders
                orders[seq] = order
                mine[seq] = order  # type: ignore[index]
                # `_fold` with its one event, inlined.
                self.state_hash = hash(
                    (
                        self.state_hash,
                        seq,
                        kind,
                        1,
                        self.last_price,
                        self.next_trade_id,
                        len(orders),
                    )
                )
                return events
            # The rolling hash: `_fold`, inlined for the places that get here.
            self.state_hash = hash(
                (
                    self.state_hash,
                    seq,
                    kind,
                    len(events),
                    self.last_price,
                    self.next_trade_id,
                    len(self.orders),
                )
            )
            return events
        # CANCEL
        _, account, oid, client_id = cmd
        orders = self.orders
        if oid:
            victim = orders.get(oid)
        else:
            oid = self._order_id_of(account, client_id)
            victim = orders.get(oid) if oid else None
        if victim is None or victim[O_ACCOUNT] != account or self._cancel_gated:
            if self._cancel_gated:
                reason = self._cancel_refused(account, victim, ts)
            else:  # a foreign order is not revealed
                reason = c.REJECT_REASON_ORDER_NOT_FOUND
            if reason:  # (a cancel in four is of an order that has already gone)
                events = [(E_REJECTED, client_id, account, reason, str(oid) if oid else "")]
                # `_fold` with its one event, inlined.
                self.state_hash = hash(
                    (
                        self.state_hash,
                        seq,
                        kind,
                        1,
                        self.last_price,
                        self.next_trade_id,
                        len(orders),
                    )
                )
                return events
            assert victim is not None
        # Take the order out of the book (its level, the indexes), release its hold.
        _, _, side, price, lots, victim_client_id, balance, mine = victim
        if side == BUY:
            released = price * lots
            balance[HOLD_QUOTE] -= released
            balance[AVAIL_QUOTE] += released
            quantity = lots * self.spec.lot_size
            is_buy = True
            level = self.bid_levels[price]
            if len(level) > _SHORT_LEVEL:  # search no long level (see `_DeepLevel`)
                level = _deepen(self.bid_levels, price)
            level.remove(victim)  # the very object: identity is compared first
            if not level:
                self._drop_level(BUY, price)
        else:
            quantity = released = lots * self.spec.lot_size
            balance[HOLD_BASE] -= released
            balance[AVAIL_BASE] += released
            is_buy = False
            level = self.ask_levels[price]
            if len(level) > _SHORT_LEVEL:
                level = _deepen(self.ask_levels, price)
            level.remove(victim)
            if not level:
                self._drop_level(SELL, price)
        del orders[oid]
        del mine[oid]
        # `_fold` with its one event, inlined.
        self.state_hash = hash(
            (self.state_hash, seq, kind, 1, self.last_price, self.next_trade_id, len(orders))
        )
        return [
            (
                E_CANCELED,
                oid,
                victim_client_id,
                account,
                quantity,
                is_buy,
                released,
                _CAUSE_USER,
            )
        ]

    def _execute_other(self, cmd: tuple[Any, ...], seq: int, ts: int) -> list[tuple[Any, ...]]:
        """`execute` for the commands other than PLACE and CANCEL."""
        kind = cmd[0]
        if kind == C_CANCEL_ALL:
            events = self._cancel_all(cmd, ts)
        elif kind == C_FUNDING:
            events = self._funding(cmd, seq)
        elif kind == C_SET_MODE:
            events = self._set_mode(cmd)
        elif kind == C_EPOCH:
            self.epoch = cmd[1]
            events = [(E_EPOCH, cmd[2], cmd[3], self.state_hash)]
        else:
            events = [(E_REJECTED, "", "", c.REJECT_REASON_UNSUPPORTED_COMMAND, f"kind {kind}")]
        return self._fold(seq, kind, events)

    # ------------------------------------------------------------------ orders

    def _fold(self, seq: int, kind: int, events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Fold a command into the rolling hash and return its events (ends `execute`)."""
        self.state_hash = hash(
            (
                self.state_hash,
                seq,
                kind,
                len(events),
                self.last_price,
                self.next_trade_id,
                len(self.orders),
            )
        )
        return events

    def _rejected(self, cmd: tuple[Any, ...], seq: int, reason: int) -> list[tuple[Any, ...]]:
        """A place command's reject: remembered, hashed, returned (ends `execute`)."""
        return self._fold(seq, C_PLACE, self._reject(cmd, seq, reason))

    def _reject(self, cmd: tuple[Any, ...], seq: int, reason: int) -> list[tuple[Any, ...]]:
        if cmd[2]:
            self._remember(cmd[1], cmd[2], (seq, REJECTED, reason, 0))
        return [(E_REJECTED, cmd[2], cmd[1], reason, "")]

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

    def _admit(self, cmd: tuple[Any, ...], ts: int, bound: int) -> tuple[int, int]:
        """Market mode, rate limit and price band: (reject reason or 0, the order's bound)."""
        _, account, _, side, otype, _, price, _, post_only, _ = cmd
        spec = self.spec
        mode = self.mode
        if mode != NORMAL and not (mode == SOFT_HALT and post_only):
            return _MODE_REJECT[mode], bound
        if spec.rate_limit and self._rate_limited(account, ts):
            return _RATE_LIMITED, bound
        if spec.price_band_bps:
            ref = self.last_price or spec.reference_price
            if ref and otype == LIMIT:
                if abs(price - ref) * 10_000 > ref * spec.price_band_bps:
                    return c.REJECT_REASON_PRICE_OUT_OF_BAND, bound
            elif ref:
                delta = ref * spec.price_band_bps // 10_000
                bound = ref + delta if side == BUY else max(ref - delta, 1)
        return 0, bound

    def _open_account(self, account: str) -> list[int]:
        """A new account's zero balance, with its (empty) index of resting orders."""
        balance = self.balances[account] = [0, 0, 0, 0]
        mine = self.account_orders[account] = {}
        ids = self._client_ids(account)
        if account and len(account) <= _MAX_ID_LENGTH:  # the place path relies on this
            self._accounts[account] = (balance, mine, ids)
        return balance

    def _rate_limited(self, account: str, ts: int) -> bool:
        limit = self.spec.rate_limit
        if not limit:
            return False
        window = ts // self.spec.rate_window_ns
        state = self.rate.get(account)
        if state is None or state[0] != window:
            self.rate[account] = [window, 1]
            return False
        state[1] += 1
        return state[1] > limit

    def _take(
        self,
        taker: list[Any],
        otype: int,
        tif: int,
        bound: int,
        reserve: int,
        tb: list[int],
        events: list[tuple[Any, ...]],
    ) -> int:
        """Fill a crossing order against the opposite side, best level first.

        Then settle what does not rest: a MARKET order's rest is cancelled (and a MARKET
        buy's unspent budget released), an IOC/FOK order's rest expires. Returns the lots
        left to rest on the book (a GTC order's remainder; 0 for the others).
        """
        spec = self.spec
        lot = spec.lot_size
        remaining: int  # (the record is a list of Any)
        taker_oid, account, side, limit, remaining, _, _, _ = taker
        is_buy = side == BUY
        market_buy = otype == MARKET and is_buy
        budget = reserve
        maker_fee, taker_fee = spec.maker_fee_bps, spec.taker_fee_bps
        charges_fees = self._charges_fees
        buyer_fee = seller_fee = 0
        if is_buy:
            levels, heap, price = self.ask_levels, self.ask_heap, self.best_ask
        else:
            levels, heap, price = self.bid_levels, self.bid_heap, self.best_bid
        fb = self.balances.get(spec.fee_account)
        if fb is None:
            fb = self._open_account(spec.fee_account)
        orders = self.orders
        trade_id = self.next_trade_id
        last_price = 0
        while remaining and price:  # `price`: the best opposite level's (0: none left)
            if bound and (price > bound if is_buy else price < bound):
                break
            level = levels[price]
            while remaining and level:
                maker = level[0]
                mrem = maker[O_REMAINING]
                maker_account = maker[O_ACCOUNT]
                if maker_account == account:
                    del level[0]
                    self._drop(maker)
                    events.append(self._cancel_resting(maker, mrem, _CAUSE_SELF_TRADE))
                    continue
                fill = remaining if remaining < mrem else mrem
                if market_buy:
                    affordable = budget // price
                    if affordable < fill:
                        fill = affordable
                        if not fill:
                            break  # the budget is spent: the level stays, matching ends
                base = fill * lot
                quote = price * fill
                mb = maker[O_BALANCE]
                if is_buy:
                    if charges_fees:
                        buyer_fee = base * taker_fee // 10_000
                        seller_fee = quote * maker_fee // 10_000
                    held = quote if market_buy else limit * fill
                    tb[HOLD_QUOTE] -= held
                    released = held - quote
                    tb[AVAIL_QUOTE] += released
                    tb[AVAIL_BASE] += base - buyer_fee
                    mb[HOLD_BASE] -= base
                    mb[AVAIL_QUOTE] += quote - seller_fee
                    if market_buy:
                        budget -= quote
                else:
                    if charges_fees:
                        buyer_fee = base * maker_fee // 10_000
                        seller_fee = quote * taker_fee // 10_000
                    released = 0
                    tb[HOLD_BASE] -= base
                    tb[AVAIL_QUOTE] += quote - seller_fee
                    mb[HOLD_QUOTE] -= quote
                    mb[AVAIL_BASE] += base - buyer_fee
                if charges_fees:
                    fb[AVAIL_BASE] += buyer_fee
                    fb[AVAIL_QUOTE] += seller_fee
                mrem -= fill
                remaining -= fill
                maker[O_REMAINING] = mrem
                last_price = price
                events.append(
                    (
                        E_TRADE,
                        trade_id,
                        price,
                        base,
                        side,
                        maker[O_ID],
                        taker_oid,
                        maker_account,
                        account,
                        base,
                        quote,
                        buyer_fee,
                        seller_fee,
                        released,
                        mrem * lot,
                        remaining * lot,
                    )
                )
                trade_id += 1
                if not mrem:
                    del level[0]
                    del orders[maker[O_ID]]
                    del maker[O_MINE][maker[O_ID]]
            if level:  # the taker is done (filled, or its budget spent)
                break
            # The level is used up: drop it, go on at the next best price.
            del levels[price]
            price = _lowest(heap, levels) if is_buy else _highest(heap, levels)
        if is_buy:
            self.best_ask = price
        else:
            self.best_bid = price
        if last_price:
            self.last_price = last_price
            self.next_trade_id = trade_id
        taker[O_REMAINING] = remaining
        if otype == MARKET:
            released = budget if is_buy else remaining * lot
            if remaining or released:
                self._release(tb, side, released)
                events.append(
                    (
                        E_CANCELED,
                        taker_oid,
                        taker[O_CLIENT_ID],
                        account,
                        remaining * lot,
                        is_buy,
                        released,
                        _CAUSE_MARKET_REMAINDER,
                    )
                )
            return 0
        if remaining and tif != GTC:
            self._expire(taker, remaining, tb, events)
            return 0
        return remaining

    def _expire(
        self, order: list[Any], lots: int, balance: list[int], events: list[tuple[Any, ...]]
    ) -> None:
        """Release an IOC/FOK order's unfilled `lots` and report them expired."""
        lot = self.spec.lot_size
        side = order[O_SIDE]
        released = order[O_PRICE] * lots if side == BUY else lots * lot
        self._release(balance, side, released)
        events.append(
            (
                E_EXPIRED,
                order[O_ID],
                order[O_CLIENT_ID],
                order[O_ACCOUNT],
                lots * lot,
                side == BUY,
                released,
            )
        )

    def _cancel_refused(self, account: str, order: list[Any] | None, ts: int) -> int:
        """Why a cancel is rejected (0: it is not), checks in their order of precedence."""
        if self.mode == HARD_HALT:
            return c.REJECT_REASON_MARKET_HARD_HALT
        if self.spec.rate_limit and self._rate_limited(account, ts):  # counts the command
            return _RATE_LIMITED
        if order is None or order[O_ACCOUNT] != account:
            return c.REJECT_REASON_ORDER_NOT_FOUND  # a foreign order is not revealed
        return 0

    def _release(self, balance: list[int], side: int, amount: int) -> None:
        if side == BUY:
            balance[HOLD_QUOTE] -= amount
            balance[AVAIL_QUOTE] += amount
        else:
            balance[HOLD_BASE] -= amount
            balance[AVAIL_BASE] += amount

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

    def _cancel_resting(self, order: list[Any], lots: int, cause: int) -> tuple[Any, ...]:
        """Release a resting order's hold and return its OrderCanceled event."""
        lot = self.spec.lot_size
        side = order[O_SIDE]
        released = order[O_PRICE] * lots if side == BUY else lots * lot
        self._release(order[O_BALANCE], side, released)
        return (
            E_CANCELED,
            order[O_ID],
            order[O_CLIENT_ID],
            order[O_ACCOUNT],
            lots * lot,
            side == BUY,
            released,
            cause,
        )

    def _unbook(self, order: list[Any], cause: int) -> tuple[Any, ...]:
        """Take a resting order out of the book: its level, the indexes, its hold."""
        side, price, lots = order[O_SIDE], order[O_PRICE], order[O_REMAINING]
        levels = self.bid_levels if side == BUY else self.ask_levels
        level = levels[price]
        if len(level) > _SHORT_LEVEL:
            level = _deepen(levels, price)
        level.remove(order)  # (a `_DeepLevel` sets the order's lots to 0: read them before)
        if not level:
            self._drop_level(side, price)
        self._drop(order)
        return self._cancel_resting(order, lots, cause)

    def _cancel_all(self, cmd: tuple[Any, ...], ts: int) -> list[tuple[Any, ...]]:
        account = cmd[1]
        if self.mode == HARD_HALT:
            return [(E_REJECTED, "", account, c.REJECT_REASON_MARKET_HARD_HALT, "cancel-all")]
        if account and self._rate_limited(account, ts):
            return [(E_REJECTED, "", account, _RATE_LIMITED, "cancel-all")]
        if account:
            victims = list(self.account_orders.get(account, {}).values())
        else:
            victims = list(self.orders.values())
        victims.sort(key=lambda o: o[O_ID])  # deterministic: oldest first
        events = [self._unbook(order, ev.CANCEL_CAUSE_CANCEL_ALL) for order in victims]
        events.append((E_MASS_CANCELED, account, len(victims)))
        return events

    # ------------------------------------------------------------------ mode, funding

    def _set_mode(self, cmd: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        _, mode, reason = cmd
        if mode not in _MODES:
            return [(E_REJECTED, "", "", c.REJECT_REASON_INVALID_MODE, f"mode {mode}")]
        previous, self.mode = self.mode, mode
        self._regate()
        return [(E_MODE, previous, mode, reason)]

    def _funding(self, cmd: tuple[Any, ...], seq: int) -> list[tuple[Any, ...]]:
        _, funding_id, account, asset, amount, direction = cmd
        spec = self.spec
        reason = 0
        if not funding_id or len(funding_id) > _MAX_ID_LENGTH:
            reason = c.REJECT_REASON_INVALID_AMOUNT
        elif not account or len(account) > _MAX_ID_LENGTH:
            reason = c.REJECT_REASON_INVALID_ACCOUNT
        elif asset != spec.base_asset and asset != spec.quote_asset:
            reason = c.REJECT_REASON_UNKNOWN_ASSET
        elif amount <= 0 or direction not in (CREDIT, DEBIT):
            reason = c.REJECT_REASON_INVALID_AMOUNT
        if not reason:
            balance = self.balances.get(account)
            slot = AVAIL_BASE if asset == spec.base_asset else AVAIL_QUOTE
            available = balance[slot] if balance else 0
            if direction == CREDIT and available > INT64_MAX - amount:
                reason = c.REJECT_REASON_BALANCE_OVERFLOW
            elif direction == DEBIT and available < amount:
                reason = _INSUFFICIENT_FUNDS
        if reason:
            event: tuple[Any, ...] = (
                E_FUNDING_REJECTED,
                funding_id,
                account,
                asset,
                amount,
                direction,
                reason,
            )
            status = REJECTED
        else:
            if balance is None:
                balance = self._open_account(account)
            balance[slot] += amount if direction == CREDIT else -amount
            kind = E_CREDITED if direction == CREDIT else E_DEBITED
            event = (kind, funding_id, account, asset, amount, balance[slot])
            status = ACCEPTED
        if funding_id:
            seen = self.funding_seen
            size = len(seen)
            seen[funding_id] = (seq, status, reason)
            if len(seen) > size:  # a new id (see _remember)
                self._funding_order.append(funding_id)
                if size >= spec.idempotency_window:
                    del seen[self._funding_order.popleft()]
        return [event]

    # ------------------------------------------------------------------ snapshots

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this engine is (msgpack-able)."""
        book: list[list[Any]] = []
        for levels in (self.bid_levels, self.ask_levels):
            for price in sorted(levels):  # live orders only (dead ones have 0 lots left)
                book.extend(o[:_ORDER_FIELDS] for o in levels[price] if o[O_REMAINING])
        return {
            "seq": self.seq,
            "mode": self.mode,
            "epoch": self.epoch,
            "state_hash": self.state_hash,
            "last_price": self.last_price,
            "next_trade_id": self.next_trade_id,
            "book": book,
            "balances": self.balances,
            "rate": self.rate,
            "idempotency": [
                [account, client_id, *_expand(self.client_orders[account][client_id])]  # type: ignore[misc]
                for account, client_id in _pairs(self._idempotency_order)
            ],
            "funding_seen": [[key, *result] for key, result in self.funding_seen.items()],
        }

    @classmethod
    def from_state(cls, spec: MarketSpec, state: dict[str, Any]) -> Engine:
        engine = cls(spec)
        for name in ("seq", "mode", "epoch", "state_hash", "last_price", "next_trade_id"):
            setattr(engine, name, state[name])
        engine._regate()
        for account, balance in state["balances"].items():
            engine._open_account(account)[:] = balance
        engine.rate = {k: list(v) for k, v in state["rate"].items()}
        for a, cid, s, st, r, o in state["idempotency"]:  # oldest first, as remembered
            engine._remember(a, cid, s if (st, r, o) == (ACCEPTED, 0, s) else (s, st, r, o))
        engine.funding_seen = {f: (s, st, r) for f, s, st, r in state["funding_seen"]}
        engine._funding_order.extend(engine.funding_seen)
        # Plain lists: a long level turns into a `_DeepLevel` on its first cancel.
        for order in state["book"]:  # in price, then time order: appending keeps priority
            side, price = order[O_SIDE], order[O_PRICE]
            levels = engine.bid_levels if side == BUY else engine.ask_levels
            level = levels.get(price)
            if level is None:
                levels[price] = [order]
            else:
                level.append(order)
            balance, mine, _ = engine._accounts[order[O_ACCOUNT]]
            order += (balance, mine)
            engine.orders[order[O_ID]] = order
            mine[order[O_ID]] = order
        engine.bid_heap = [-p for p in engine.bid_levels]
        engine.ask_heap = list(engine.ask_levels)
        heapify(engine.bid_heap)
        heapify(engine.ask_heap)
        engine.best_bid = max(engine.bid_levels, default=0)
        engine.best_ask = min(engine.ask_levels, default=0)
        return engine

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
    `_fillable`). A level becomes deep on a cancel while it is long (`_deepen`) and stays
    so until it is deleted; snapshots restore plain lists.
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


def _pairs(items: deque[str]) -> Iterator[tuple[str, str]]:
    """(account, client_order_id) keys from the flat deque that orders them."""
    it = iter(items)
    return zip(it, it, strict=False)


def _expand(result: int | tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
    """A stored idempotency result as (seq, status, reason, order_id)."""
    if isinstance(result, int):  # an accepted order: its seq, which is also its id
        return (result, ACCEPTED, 0, result)
    return result


def outcome(events: list[tuple[Any, ...]]) -> tuple[int, int]:
    """A command's (status, reject reason) from its events."""
    first = events[0]
    if first[0] == E_REJECTED:
        return REJECTED, first[3]
    if first[0] == E_FUNDING_REJECTED:
        return REJECTED, first[6]
    return ACCEPTED, 0
