"""A small, obviously-correct model of the engine, for property tests only.

Same policies as `workloads.matcher.engine`, written for clarity instead of speed: the
book is one list of orders, the best maker is found by scanning it, and nothing is
inlined or cached. It must produce exactly the engine's events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contracts.v1 import common_pb2 as c
from contracts.v1 import events_pb2 as ev
from workloads.matcher import engine as e
from workloads.matcher.spec import INT64_MAX, MarketSpec


@dataclass
class Order:
    order_id: int
    account: str
    side: int
    price: int
    lots: int
    client_id: str


class ReferenceModel:
    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self.book: list[Order] = []  # in arrival order
        self.balances: dict[str, list[int]] = {}
        self.mode = e.NORMAL
        self.last_price = 0
        self.next_trade_id = 1
        self.results: dict[
            tuple[str, str], int
        ] = {}  # (account, client id) -> order id (0: rejected)
        self.funding_ids: set[str] = set()
        self.rate: dict[str, tuple[int, int]] = {}

    # -- helpers
    def balance(self, account: str) -> list[int]:
        return self.balances.setdefault(account, [0, 0, 0, 0])

    def rate_limited(self, account: str, ts: int) -> bool:
        if not self.spec.rate_limit:
            return False
        window = ts // self.spec.rate_window_ns
        old_window, count = self.rate.get(account, (-1, 0))
        count = count + 1 if old_window == window else 1
        self.rate[account] = (window, count)
        return count > self.spec.rate_limit

    def makers_for(self, side: int) -> list[Order]:
        """Resting orders a taker on `side` can hit, best price first, then oldest first."""
        opposite = [o for o in self.book if o.side != side]
        if side == e.BUY:
            return sorted(opposite, key=lambda o: (o.price, o.order_id))
        return sorted(opposite, key=lambda o: (-o.price, o.order_id))

    def hold_amount(self, order: Order, lots: int) -> int:
        return order.price * lots if order.side == e.BUY else lots * self.spec.lot_size

    def release(self, account: str, side: int, amount: int) -> None:
        b = self.balance(account)
        if side == e.BUY:
            b[3] -= amount
            b[2] += amount
        else:
            b[1] -= amount
            b[0] += amount

    def cancel_resting(self, order: Order, cause: int) -> tuple[Any, ...]:
        self.book.remove(order)
        released = self.hold_amount(order, order.lots)
        self.release(order.account, order.side, released)
        return (
            e.E_CANCELED,
            order.order_id,
            order.client_id,
            order.account,
            order.lots * self.spec.lot_size,
            order.side == e.BUY,
            released,
            cause,
        )

    # -- commands
    def execute(self, cmd: tuple[Any, ...], seq: int, ts: int) -> list[tuple[Any, ...]]:
        kind = cmd[0]
        if kind == e.C_PLACE:
            return self.place(cmd, seq, ts)
        if kind == e.C_CANCEL:
            return self.cancel(cmd, ts)
        if kind == e.C_CANCEL_ALL:
            return self.cancel_all(cmd, ts)
        if kind == e.C_SET_MODE:
            if cmd[1] not in (e.NORMAL, e.CANCEL_ONLY, e.SOFT_HALT, e.HARD_HALT):
                return [(e.E_REJECTED, "", "", c.REJECT_REASON_INVALID_MODE, f"mode {cmd[1]}")]
            previous, self.mode = self.mode, cmd[1]
            return [(e.E_MODE, previous, cmd[1], cmd[2])]
        if kind == e.C_FUNDING:
            return self.funding(cmd)
        raise AssertionError(f"unexpected command {cmd}")

    def reject(self, cmd: tuple[Any, ...], reason: int) -> list[tuple[Any, ...]]:
        if cmd[2]:
            self.results[(cmd[1], cmd[2])] = 0
        return [(e.E_REJECTED, cmd[2], cmd[1], reason, "")]

    def place(self, cmd: tuple[Any, ...], seq: int, ts: int) -> list[tuple[Any, ...]]:
        spec = self.spec
        _, account, client_id, side, otype, tif, price, qty, post_only, budget = cmd
        reason = e.validate_place(spec, cmd)
        if reason:
            return self.reject(cmd, reason)
        if self.mode == e.CANCEL_ONLY:
            return self.reject(cmd, c.REJECT_REASON_MARKET_CANCEL_ONLY)
        if self.mode == e.HARD_HALT:
            return self.reject(cmd, c.REJECT_REASON_MARKET_HARD_HALT)
        if self.mode == e.SOFT_HALT and not post_only:
            return self.reject(cmd, c.REJECT_REASON_MARKET_SOFT_HALT)
        if self.rate_limited(account, ts):
            return self.reject(cmd, c.REJECT_REASON_RATE_LIMITED)
        lots = qty // spec.lot_size
        ref = (self.last_price or spec.reference_price) if spec.price_band_bps else 0
        limit = price if otype == e.LIMIT else 0
        if ref and otype == e.LIMIT and abs(price - ref) * 10_000 > ref * spec.price_band_bps:
            return self.reject(cmd, c.REJECT_REASON_PRICE_OUT_OF_BAND)
        if ref and otype == e.MARKET:
            delta = ref * spec.price_band_bps // 10_000
            limit = ref + delta if side == e.BUY else max(ref - delta, 1)
        open_orders = [o for o in self.book if o.account == account]
        if tif == e.GTC and open_orders and len(open_orders) >= spec.max_open_orders:
            return self.reject(cmd, c.REJECT_REASON_TOO_MANY_OPEN_ORDERS)
        makers = self.makers_for(side)

        def reachable(order: Order) -> bool:
            if not limit:
                return True
            return order.price <= limit if side == e.BUY else order.price >= limit

        crosses = bool(makers) and (otype == e.MARKET or reachable(makers[0]))
        if post_only and crosses:
            return self.reject(cmd, c.REJECT_REASON_POST_ONLY_WOULD_TAKE)
        if otype == e.MARKET and not makers:
            return self.reject(cmd, c.REJECT_REASON_NO_LIQUIDITY)
        if tif == e.FOK:
            fillable = sum(o.lots for o in makers if reachable(o) and o.account != account)
            if fillable < lots:
                return self.reject(cmd, c.REJECT_REASON_FOK_NOT_FILLABLE)
        if account not in self.balances:
            return self.reject(cmd, c.REJECT_REASON_INSUFFICIENT_FUNDS)
        b = self.balance(account)
        if side == e.BUY:
            reserve = price * lots if otype == e.LIMIT else (budget or b[2])
            if reserve <= 0 or b[2] < reserve:
                return self.reject(cmd, c.REJECT_REASON_INSUFFICIENT_FUNDS)
            b[2] -= reserve
            b[3] += reserve
        else:
            reserve = qty
            if b[0] < reserve:
                return self.reject(cmd, c.REJECT_REASON_INSUFFICIENT_FUNDS)
            b[0] -= reserve
            b[1] += reserve
        events: list[tuple[Any, ...]] = [
            (
                e.E_ACCEPTED,
                seq,
                client_id,
                account,
                side,
                otype,
                tif,
                price,
                qty,
                post_only,
                side == e.BUY,
                reserve,
            )
        ]
        if client_id:
            self.results[(account, client_id)] = seq
        budget_left = reserve
        remaining = lots
        if crosses:
            for maker in makers:
                if not remaining or not reachable(maker):
                    break
                if maker.account == account:
                    events.append(self.cancel_resting(maker, ev.CANCEL_CAUSE_SELF_TRADE))
                    continue
                fill = min(remaining, maker.lots)
                out_of_budget = False
                if otype == e.MARKET and side == e.BUY and budget_left // maker.price < fill:
                    # The budget buys no more lots at this price, nor at any worse one.
                    fill = budget_left // maker.price
                    out_of_budget = True
                    if fill == 0:
                        break
                events.append(
                    self.trade(maker, account, side, otype, price, seq, fill, remaining - fill)
                )
                if otype == e.MARKET and side == e.BUY:
                    budget_left -= maker.price * fill
                remaining -= fill
                if out_of_budget:
                    break
        if otype == e.MARKET:
            released = budget_left if side == e.BUY else remaining * spec.lot_size
            if remaining or released:
                self.release(account, side, released)
                events.append(
                    (
                        e.E_CANCELED,
                        seq,
                        client_id,
                        account,
                        remaining * spec.lot_size,
                        side == e.BUY,
                        released,
                        ev.CANCEL_CAUSE_MARKET_REMAINDER,
                    )
                )
        elif remaining and tif == e.GTC:
            self.book.append(Order(seq, account, side, price, remaining, client_id))
        elif remaining:
            released = price * remaining if side == e.BUY else remaining * spec.lot_size
            self.release(account, side, released)
            events.append(
                (
                    e.E_EXPIRED,
                    seq,
                    client_id,
                    account,
                    remaining * spec.lot_size,
                    side == e.BUY,
                    released,
                )
            )
        return events

    def trade(
        self,
        maker: Order,
        taker: str,
        side: int,
        otype: int,
        limit: int,
        taker_id: int,
        fill: int,
        left: int,
    ) -> tuple[Any, ...]:
        spec = self.spec
        base = fill * spec.lot_size
        quote = maker.price * fill
        buyer, seller = (taker, maker.account) if side == e.BUY else (maker.account, taker)
        buyer_bps = spec.taker_fee_bps if side == e.BUY else spec.maker_fee_bps
        seller_bps = spec.maker_fee_bps if side == e.BUY else spec.taker_fee_bps
        buyer_fee = base * buyer_bps // 10_000
        seller_fee = quote * seller_bps // 10_000
        buyer_limit = maker.price if side == e.SELL or otype == e.MARKET else limit
        released = (buyer_limit - maker.price) * fill
        bb, sb, fb = self.balance(buyer), self.balance(seller), self.balance(spec.fee_account)
        bb[3] -= buyer_limit * fill
        bb[2] += released
        bb[0] += base - buyer_fee
        sb[1] -= base
        sb[2] += quote - seller_fee
        fb[0] += buyer_fee
        fb[2] += seller_fee
        maker.lots -= fill
        if not maker.lots:
            self.book.remove(maker)
        self.last_price = maker.price
        trade_id = self.next_trade_id
        self.next_trade_id += 1
        return (
            e.E_TRADE,
            trade_id,
            maker.price,
            base,
            side,
            maker.order_id,
            taker_id,
            maker.account,
            taker,
            base,
            quote,
            buyer_fee,
            seller_fee,
            released,
            maker.lots * spec.lot_size,
            left * spec.lot_size,
        )

    def cancel(self, cmd: tuple[Any, ...], ts: int) -> list[tuple[Any, ...]]:
        _, account, oid, client_id = cmd
        if not oid and client_id:
            oid = self.results.get((account, client_id), 0)
        found = [o for o in self.book if o.order_id == oid and o.account == account]
        if self.mode == e.HARD_HALT:
            reason = c.REJECT_REASON_MARKET_HARD_HALT
        elif self.rate_limited(account, ts):
            reason = c.REJECT_REASON_RATE_LIMITED
        elif not oid or not found:
            reason = c.REJECT_REASON_ORDER_NOT_FOUND
        else:
            return [self.cancel_resting(found[0], ev.CANCEL_CAUSE_USER)]
        return [(e.E_REJECTED, client_id, account, reason, str(oid) if oid else "")]

    def cancel_all(self, cmd: tuple[Any, ...], ts: int) -> list[tuple[Any, ...]]:
        account = cmd[1]
        if self.mode == e.HARD_HALT:
            return [(e.E_REJECTED, "", account, c.REJECT_REASON_MARKET_HARD_HALT, "cancel-all")]
        if account and self.rate_limited(account, ts):
            return [(e.E_REJECTED, "", account, c.REJECT_REASON_RATE_LIMITED, "cancel-all")]
        victims = sorted(
            (o for o in self.book if not account or o.account == account), key=lambda o: o.order_id
        )
        events = [self.cancel_resting(o, ev.CANCEL_CAUSE_CANCEL_ALL) for o in victims]
        events.append((e.E_MASS_CANCELED, account, len(victims)))
        return events

    def funding(self, cmd: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        _, funding_id, account, asset, amount, direction = cmd
        spec = self.spec
        self.funding_ids.add(funding_id)
        reason = 0
        if asset not in (spec.base_asset, spec.quote_asset):
            reason = c.REJECT_REASON_UNKNOWN_ASSET
        elif amount <= 0 or direction not in (e.CREDIT, e.DEBIT):
            reason = c.REJECT_REASON_INVALID_AMOUNT
        else:
            slot = 0 if asset == spec.base_asset else 2
            available = self.balances[account][slot] if account in self.balances else 0
            if direction == e.CREDIT and available + amount > INT64_MAX:
                reason = c.REJECT_REASON_BALANCE_OVERFLOW
            elif direction == e.DEBIT and available < amount:
                reason = c.REJECT_REASON_INSUFFICIENT_FUNDS
        if reason:
            return [(e.E_FUNDING_REJECTED, funding_id, account, asset, amount, direction, reason)]
        b = self.balance(account)
        b[slot] += amount if direction == e.CREDIT else -amount
        kind = e.E_CREDITED if direction == e.CREDIT else e.E_DEBITED
        return [(kind, funding_id, account, asset, amount, b[slot])]
