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

`Engine` is the one class callers use, and this module re-exports the names they read
(`e.C_PLACE`, `e.BUY`, `e.validate_place`, ...). Its parts: `layout` (command, event and
record layouts; the attributes the parts share), `book` (levels, heaps, best prices,
views), `risk` (admission, balances, funding, rate limits) and `idempotency` (client order
ids and funding ids remembered). Commands, matching and snapshots are here, with the hot
paths (`execute`'s place and cancel, `_take`, the rolling hash) inline as they were.
"""

from __future__ import annotations

from collections import deque
from heapq import heapify
from typing import Any

from contracts.v1 import common_pb2 as c
from contracts.v1 import events_pb2 as ev
from workloads.matcher.book import BookMixin, _deepen, _highest, _lowest
from workloads.matcher.book import _DeepLevel as _DeepLevel
from workloads.matcher.idempotency import _expand, _pairs
from workloads.matcher.layout import (
    _CAUSE_MARKET_REMAINDER,
    _CAUSE_SELF_TRADE,
    _CAUSE_USER,
    _INSUFFICIENT_FUNDS,
    _MAX_ID_LENGTH,
    _MODES,
    _ORDER_FIELDS,
    _RATE_LIMITED,
)
from workloads.matcher.layout import ACCEPTED as ACCEPTED
from workloads.matcher.layout import AVAIL_BASE as AVAIL_BASE
from workloads.matcher.layout import AVAIL_QUOTE as AVAIL_QUOTE
from workloads.matcher.layout import BUY as BUY
from workloads.matcher.layout import C_CANCEL as C_CANCEL
from workloads.matcher.layout import C_CANCEL_ALL as C_CANCEL_ALL
from workloads.matcher.layout import C_EPOCH as C_EPOCH
from workloads.matcher.layout import C_FUNDING as C_FUNDING
from workloads.matcher.layout import C_PLACE as C_PLACE
from workloads.matcher.layout import C_SET_MODE as C_SET_MODE
from workloads.matcher.layout import CANCEL_ONLY as CANCEL_ONLY
from workloads.matcher.layout import CREDIT as CREDIT
from workloads.matcher.layout import DEBIT as DEBIT
from workloads.matcher.layout import DUPLICATE as DUPLICATE
from workloads.matcher.layout import E_ACCEPTED as E_ACCEPTED
from workloads.matcher.layout import E_CANCELED as E_CANCELED
from workloads.matcher.layout import E_CREDITED as E_CREDITED
from workloads.matcher.layout import E_DEBITED as E_DEBITED
from workloads.matcher.layout import E_EPOCH as E_EPOCH
from workloads.matcher.layout import E_EXPIRED as E_EXPIRED
from workloads.matcher.layout import E_FUNDING_REJECTED as E_FUNDING_REJECTED
from workloads.matcher.layout import E_MASS_CANCELED as E_MASS_CANCELED
from workloads.matcher.layout import E_MODE as E_MODE
from workloads.matcher.layout import E_REJECTED as E_REJECTED
from workloads.matcher.layout import E_TRADE as E_TRADE
from workloads.matcher.layout import FOK as FOK
from workloads.matcher.layout import GTC as GTC
from workloads.matcher.layout import HARD_HALT as HARD_HALT
from workloads.matcher.layout import HOLD_BASE as HOLD_BASE
from workloads.matcher.layout import HOLD_QUOTE as HOLD_QUOTE
from workloads.matcher.layout import IOC as IOC
from workloads.matcher.layout import LIMIT as LIMIT
from workloads.matcher.layout import MARKET as MARKET
from workloads.matcher.layout import NORMAL as NORMAL
from workloads.matcher.layout import O_ACCOUNT as O_ACCOUNT
from workloads.matcher.layout import O_BALANCE as O_BALANCE
from workloads.matcher.layout import O_CLIENT_ID as O_CLIENT_ID
from workloads.matcher.layout import O_ID as O_ID
from workloads.matcher.layout import O_MINE as O_MINE
from workloads.matcher.layout import O_PRICE as O_PRICE
from workloads.matcher.layout import O_REMAINING as O_REMAINING
from workloads.matcher.layout import O_SIDE as O_SIDE
from workloads.matcher.layout import REJECTED as REJECTED
from workloads.matcher.layout import SELL as SELL
from workloads.matcher.layout import SOFT_HALT as SOFT_HALT
from workloads.matcher.layout import outcome as outcome
from workloads.matcher.risk import RiskMixin
from workloads.matcher.risk import validate_place as validate_place
from workloads.matcher.spec import MarketSpec

# A level longer than this when one of its orders is cancelled becomes a `_DeepLevel`, where
# cancels mark orders dead instead of searching the list; a shorter one (nearly all of them)
# takes the order out at once, as fast as before. Read only in this module (its two cancel
# paths), where the tests set it.
_SHORT_LEVEL = 32


class Engine(BookMixin, RiskMixin):
    """One market's book, risk and idempotency state: the class callers use.

    Its parts: `BookMixin` (book.py), `RiskMixin` (risk.py, on `IdempotencyMixin` in
    idempotency.py); the commands, matching and snapshots are here.
    """

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
        self.bid_levels = {}
        self.ask_levels = {}
        self.bid_heap = []  # negated prices; stale entries are skipped lazily
        self.ask_heap = []
        # The best price per side (0: the side is empty), kept exact as levels come and go:
        # placing an order reads one attribute instead of peeking into a heap and a dict.
        self.best_bid = 0
        self.best_ask = 0
        self.orders = {}
        # Resting orders per account, made with the account's balance and kept (cheaper
        # than churn); `_accounts` holds both and the account's idempotency keys, for the
        # place path's single lookup.
        self.account_orders = {}
        self.balances = {}
        self._accounts = {}
        self.rate = {}  # account -> [window index, commands in it]
        # Place results by idempotency key, per account: account -> client_order_id ->
        # (seq, status, reason, order_id); an accepted order's result is stored as just its
        # seq (= order id). Nested rather than keyed by (account, client_order_id): no key
        # tuple to build and hash per place, and the account's table comes with the account
        # lookup the place path makes anyway (see `_client_ids` for its one odd key).
        self.client_orders = {}
        self.funding_seen = {}  # funding_id -> (seq, status, reason)
        # The keys of the two tables in insertion order, so that forgetting the oldest is
        # O(1): `del table[next(iter(table))]` rescans the dict's growing prefix of deleted
        # slots on every call (microseconds per command once a window is full). Place keys
        # go in flat, two items each (account, client_order_id): no tuple per key.
        self._idempotency_order = deque()
        self._funding_order = deque()
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

    # ------------------------------------------------------------------ mode

    def _set_mode(self, cmd: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        _, mode, reason = cmd
        if mode not in _MODES:
            return [(E_REJECTED, "", "", c.REJECT_REASON_INVALID_MODE, f"mode {mode}")]
        previous, self.mode = self.mode, mode
        self._regate()
        return [(E_MODE, previous, mode, reason)]

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
