"""The ledger's posting rules: one matcher event in, at most one balanced journal entry out.

Pure functions over immutable data: NamedTuples for entries and events, and plain tuples
for posting lines (a trade makes seven; a plain tuple costs a fifth of a NamedTuple, which
matters at tens of thousands of events per second). The money semantics are the
matcher engine's (`workloads/matcher/engine.py`), mirrored posting by posting, so that the
ledger's balances equal the matcher's in-memory risk balances:

- OrderAccepted: `reserved_amount` of `reserved_asset` moves available -> hold.
- OrderCanceled / OrderExpired (also a MARKET order's remainder): `released_amount` moves
  hold -> available.
- TradeExecuted: the buyer's quote hold drops by quote + buyer_released, of which
  buyer_released (price improvement) returns to the buyer's available; the seller's base
  hold drops by base; the buyer receives base - buyer_fee, the seller quote - seller_fee;
  the fees go to the fee account.
- FundsCredited / FundsDebited: the account's available changes against a system
  counterparty (`@external` for deposits and withdrawals, `@corrections` for corrections),
  or, for a transfer between the account's wallet and the market, against `@transfers`
  (into the market: the wallet's side was booked when the transfer was asked) or against
  the account's own wallet bucket (out of the market).
- Everything else (rejections, mode and epoch changes, mass-cancel summaries) moves no
  money, but still advances the market's applied seq.

Every entry's postings sum to zero per asset (the database checks it again). Zero amounts
are not posted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from contracts.v1 import events_pb2

AVAILABLE = "available"  # allocated to markets (the matchers' available), summed
HOLD = "hold"  # held by open orders, summed over markets
WALLET = "wallet"  # the account's own, in no market: no matcher knows of it
EXTERNAL = "@external"
CORRECTIONS = "@corrections"
TRANSFERS = "@transfers"  # funds on their way from a wallet into a market
CORRECTION_FUNDING_PREFIX = "corr."

KIND_RESERVE = "reserve"
KIND_RELEASE = "release"
KIND_TRADE = "trade"
KIND_FUNDING = "funding"
KIND_CORRECTION = "correction"
KIND_DEPOSIT = "deposit"
KIND_WITHDRAWAL = "withdrawal"
KIND_TRANSFER = "transfer"


Line = tuple[str, str, str, int]
"""A posting as the rules make it: (owner, asset, bucket, amount), amount signed, never 0."""


class Posting(NamedTuple):
    """A `Line` with names, for reading and tests (equal to the plain tuple of its fields)."""

    owner: str
    asset: str
    bucket: str  # AVAILABLE, HOLD or WALLET
    amount: int  # signed minor units, never 0


class Entry(NamedTuple):
    """A journal transaction to be: its unique reference is the event id."""

    reference: str
    kind: str
    market: str
    seq: int
    epoch: int
    occurred_at: int
    postings: tuple[Line, ...]
    trade_id: str | None = None
    correction_id: str | None = None
    funding_id: str | None = None  # for funding: the counterparty is resolved by the caller


class Incoming(NamedTuple):
    """One decoded event on its way to the applier, with its entry precomputed."""

    market: str
    seq: int
    idx: int  # the event's index within its command (from event_id)
    epoch: int
    event_id: str
    kind: str  # the Event oneof's field name, e.g. "trade_executed"
    entry: Entry | None
    payload: bytes  # the serialized Event (kept to park it behind a gap)


class FundingOrigin(NamedTuple):
    """Who is on the other side of a funding event, from the ledger's funding request."""

    counterparty: str
    kind: str  # KIND_FUNDING, KIND_CORRECTION or KIND_TRANSFER
    correction_id: str | None
    bucket: str = AVAILABLE  # the counterparty's (WALLET: a transfer out of the market)


DEFAULT_ORIGIN = FundingOrigin(EXTERNAL, KIND_FUNDING, None)


def _move(owner: str, asset: str, amount: int, source: str, target: str) -> tuple[Line, ...]:
    """Two lines moving `amount` of one owner's asset between buckets; none for zero."""
    if not amount:
        return ()
    return ((owner, asset, source, -amount), (owner, asset, target, amount))


def entry_for(kind: str, body: Any, fee_account: str) -> Entry | None:
    """The entry an event body (a message of the Event oneof) implies, or None.

    Funding is booked against `@external` here; the applier re-points it at the real
    counterparty of the ledger's own funding request (`with_origin`).
    """
    make = _MAKERS.get(kind)
    if make is None:
        return None
    env = body.envelope
    return make(body, env.event_id, env.symbol, env.seq, env.epoch, env.occurred_at, fee_account)


# The makers take the envelope's fields already read: `from_event` has read them to check
# the event id, and a protobuf field read costs as much as building a small tuple.


def _reserve(
    body: Any, ref: str, market: str, seq: int, epoch: int, at: int, fee_account: str
) -> Entry | None:
    lines = _move(body.account, body.reserved_asset, body.reserved_amount, AVAILABLE, HOLD)
    return Entry(ref, KIND_RESERVE, market, seq, epoch, at, lines) if lines else None


def _release(
    body: Any, ref: str, market: str, seq: int, epoch: int, at: int, fee_account: str
) -> Entry | None:
    lines = _move(body.account, body.released_asset, body.released_amount, HOLD, AVAILABLE)
    return Entry(ref, KIND_RELEASE, market, seq, epoch, at, lines) if lines else None


def _trade(
    t: Any, ref: str, market: str, seq: int, epoch: int, at: int, fee_account: str
) -> Entry | None:
    buyer, seller = t.buyer_account, t.seller_account
    base, quote = t.base_asset, t.quote_asset
    base_amount, quote_amount = t.base_amount, t.quote_amount
    buyer_fee, seller_fee, released = t.buyer_fee, t.seller_fee, t.buyer_released
    lines: list[Line] = []
    add = lines.append
    if quote_amount + released:
        add((buyer, quote, HOLD, -(quote_amount + released)))
    if released:
        add((buyer, quote, AVAILABLE, released))
    if quote_amount != seller_fee:
        add((seller, quote, AVAILABLE, quote_amount - seller_fee))
    if seller_fee:
        add((fee_account, quote, AVAILABLE, seller_fee))
    if base_amount:
        add((seller, base, HOLD, -base_amount))
    if base_amount != buyer_fee:
        add((buyer, base, AVAILABLE, base_amount - buyer_fee))
    if buyer_fee:
        add((fee_account, base, AVAILABLE, buyer_fee))
    if not lines:
        return None
    return Entry(ref, KIND_TRADE, market, seq, epoch, at, tuple(lines), t.trade_id)


def _credit(
    body: Any, ref: str, market: str, seq: int, epoch: int, at: int, fee_account: str
) -> Entry | None:
    return funding_entry("funds_credited", body, DEFAULT_ORIGIN)


def _debit(
    body: Any, ref: str, market: str, seq: int, epoch: int, at: int, fee_account: str
) -> Entry | None:
    return funding_entry("funds_debited", body, DEFAULT_ORIGIN)


_Maker = Callable[[Any, str, str, int, int, int, str], "Entry | None"]
_MAKERS: dict[str, _Maker] = {
    "trade_executed": _trade,
    "order_accepted": _reserve,
    "order_canceled": _release,
    "order_expired": _release,
    "funds_credited": _credit,
    "funds_debited": _debit,
}


def trade_entry(t: events_pb2.TradeExecuted, env: Any, fee_account: str) -> Entry | None:
    return _trade(t, env.event_id, env.symbol, env.seq, env.epoch, env.occurred_at, fee_account)


def funding_entry(
    kind: str,
    body: events_pb2.FundsCredited | events_pb2.FundsDebited,
    origin: FundingOrigin,
) -> Entry | None:
    amount = body.amount if kind == "funds_credited" else -body.amount
    if not amount:
        return None
    env = body.envelope
    return Entry(
        env.event_id,
        origin.kind,
        env.symbol,
        env.seq,
        env.epoch,
        env.occurred_at,
        (
            (body.account, body.asset, AVAILABLE, amount),
            (origin.counterparty, body.asset, AVAILABLE, -amount),
        ),
        None,
        origin.correction_id,
        body.funding_id,
    )


def with_origin(entry: Entry, origin: FundingOrigin) -> Entry:
    """A funding entry re-pointed at its real counterparty (and correction, if any)."""
    account, (_, asset, _, amount) = entry.postings
    return entry._replace(
        kind=origin.kind,
        correction_id=origin.correction_id,
        postings=(account, (origin.counterparty, asset, origin.bucket, amount)),
    )


def decode(payload: bytes, fee_account: str) -> Incoming:
    """A serialized `Event` -> Incoming; raises ValueError for one that is unusable."""
    event = events_pb2.Event.FromString(payload)
    return from_event(event, payload, fee_account)


def from_event(event: events_pb2.Event, payload: bytes, fee_account: str) -> Incoming:
    """Runs for every event settled: each protobuf field is read once."""
    kind = event.WhichOneof("body")
    if kind is None:
        raise ValueError("event without a body")
    body = getattr(event, kind)
    env = body.envelope
    event_id, symbol, seq = env.event_id, env.symbol, env.seq
    head, _, index = event_id.rpartition(":")
    if not index.isdigit() or head != f"{symbol}:{seq}":
        raise ValueError(f"event id {event_id!r} is not <symbol>:<seq>:<index>")
    epoch = env.epoch
    make = _MAKERS.get(kind)
    entry = (
        make(body, event_id, symbol, seq, epoch, env.occurred_at, fee_account)
        if make is not None
        else None
    )
    return Incoming(symbol, seq, int(index), epoch, event_id, kind, entry, payload)


def balanced(postings: tuple[Line, ...]) -> bool:
    """Whether postings sum to zero per asset (the double-entry rule)."""
    sums: dict[str, int] = {}
    for _, asset, _, amount in postings:
        sums[asset] = sums.get(asset, 0) + amount
    return not any(sums.values())


def is_system(owner: str, fee_account: str) -> bool:
    """Designated system accounts: counterparties and the fee account (may go negative)."""
    return owner.startswith("@") or owner == fee_account
