"""The engine's risk: admission, balances, funding and rate limits.

- Admission: `validate_place` (stateless checks of a place command), the market mode, the
  per-account rate limit and the price band for orders (`_admit`) and cancels
  (`_cancel_refused`). The place path inlines the common case (see `Engine.execute`).
- Balances: per account [available base, hold base, available quote, hold quote]; an
  order's hold is released by `_release` (the place path and matching reserve and settle
  inline).
- Funding: credits and debits from the ledger, remembered by funding id.
An account is opened with its index of resting orders and its table of client order ids
(`_open_account`), so `RiskMixin` builds on `IdempotencyMixin`.
"""

from __future__ import annotations

from typing import Any

from contracts.v1 import common_pb2 as c
from workloads.matcher.idempotency import IdempotencyMixin
from workloads.matcher.layout import (
    _INSUFFICIENT_FUNDS,
    _MAX_ID_LENGTH,
    _MODE_REJECT,
    _RATE_LIMITED,
    ACCEPTED,
    AVAIL_BASE,
    AVAIL_QUOTE,
    BUY,
    CREDIT,
    DEBIT,
    E_CREDITED,
    E_DEBITED,
    E_FUNDING_REJECTED,
    FOK,
    GTC,
    HARD_HALT,
    HOLD_BASE,
    HOLD_QUOTE,
    IOC,
    LIMIT,
    MARKET,
    NORMAL,
    O_ACCOUNT,
    REJECTED,
    SELL,
    SOFT_HALT,
)
from workloads.matcher.spec import INT64_MAX, MarketSpec


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


class RiskMixin(IdempotencyMixin):
    """`Engine`'s accounts: `balances`, `_accounts`, `rate`; admission and funding."""

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

    def _cancel_refused(self, account: str, order: list[Any] | None, ts: int) -> int:
        """Why a cancel is rejected (0: it is not), checks in their order of precedence."""
        if self.mode == HARD_HALT:
            return c.REJECT_REASON_MARKET_HARD_HALT
        if self.spec.rate_limit and self._rate_limited(account, ts):  # counts the command
            return _RATE_LIMITED
        if order is None or order[O_ACCOUNT] != account:
            return c.REJECT_REASON_ORDER_NOT_FOUND  # a foreign order is not revealed
        return 0

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

    def _release(self, balance: list[int], side: int, amount: int) -> None:
        if side == BUY:
            balance[HOLD_QUOTE] -= amount
            balance[AVAIL_QUOTE] += amount
        else:
            balance[HOLD_BASE] -= amount
            balance[AVAIL_BASE] += amount

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
            self._remember_funding(funding_id, (seq, status, reason))
        return [event]
