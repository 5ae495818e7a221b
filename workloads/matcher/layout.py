"""The engine's vocabulary: command and event layouts, statuses, enums, record layouts.

Shared by the engine's parts (`engine`, `book`, `risk`, `idempotency`) and re-exported by
`engine`, which is where the rest of the project reads them (`e.C_PLACE`, `e.BUY`, ...).
`EngineFields` declares, once, the attributes those parts share.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from contracts.v1 import common_pb2 as c
from contracts.v1 import events_pb2 as ev
from workloads.matcher.spec import MarketSpec

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


class EngineFields:
    """The state `Engine` and its parts share: annotations only, for the type checker.

    `Engine.__init__` sets every one of them (and says what each holds); the parts
    (`BookMixin`, `RiskMixin`, `IdempotencyMixin`) derive from this class so that each
    attribute is declared once. Nothing here exists at run time but the annotations.
    """

    spec: MarketSpec
    seq: int
    mode: c.SymbolMode.ValueType
    epoch: int
    state_hash: int
    last_price: int
    next_trade_id: int
    bid_levels: dict[int, list[list[Any]]]
    ask_levels: dict[int, list[list[Any]]]
    bid_heap: list[int]
    ask_heap: list[int]
    best_bid: int
    best_ask: int
    orders: dict[int, list[Any]]
    account_orders: dict[str, dict[int, list[Any]]]
    balances: dict[str, list[int]]
    _accounts: dict[str, tuple[list[int], dict[int, list[Any]], dict[str, Any]]]
    rate: dict[str, list[int]]
    client_orders: dict[str, dict[Any, int | tuple[int, int, int, int] | None]]
    funding_seen: dict[str, tuple[int, int, int]]
    _idempotency_order: deque[str]
    _funding_order: deque[str]
    _idempotency_items: int
    _max_quantity: int
    _fast_max_price: int
    _charges_fees: bool
    _place_gated: bool
    _cancel_gated: bool


def outcome(events: list[tuple[Any, ...]]) -> tuple[int, int]:
    """A command's (status, reject reason) from its events."""
    first = events[0]
    if first[0] == E_REJECTED:
        return REJECTED, first[3]
    if first[0] == E_FUNDING_REJECTED:
        return REJECTED, first[6]
    return ACCEPTED, 0
