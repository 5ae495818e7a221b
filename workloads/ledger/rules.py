"""The ledger's posting rules: one matcher event in, at most one balanced journal entry out.

Pure functions over immutable data (NamedTuples: frozen and as cheap to build as tuples,
which matters at tens of thousands of events per second). The money semantics are the
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
  counterparty (`@external` for deposits and withdrawals, `@corrections` for corrections).
- Everything else (rejections, mode and epoch changes, mass-cancel summaries) moves no
  money, but still advances the market's applied seq.

Every entry's postings sum to zero per asset (the database checks it again). Zero amounts
are not posted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from contracts.v1 import events_pb2

AVAILABLE = "available"
HOLD = "hold"
EXTERNAL = "@external"
CORRECTIONS = "@corrections"
CORRECTION_FUNDING_PREFIX = "corr."

KIND_RESERVE = "reserve"
KIND_RELEASE = "release"
KIND_TRADE = "trade"
KIND_FUNDING = "funding"
KIND_CORRECTION = "correction"


class Posting(NamedTuple):
    owner: str
    asset: str
    bucket: str  # AVAILABLE or HOLD
    amount: int  # signed minor units, never 0


class Entry(NamedTuple):
    """A journal transaction to be: its unique reference is the event id."""

    reference: str
    kind: str
    market: str
    seq: int
    epoch: int
    occurred_at: int
    postings: tuple[Posting, ...]
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
    kind: str  # KIND_FUNDING or KIND_CORRECTION
    correction_id: str | None


DEFAULT_ORIGIN = FundingOrigin(EXTERNAL, KIND_FUNDING, None)


def _move(owner: str, asset: str, amount: int, source: str, target: str) -> tuple[Posting, ...]:
    if not amount:
        return ()
    return (Posting(owner, asset, source, -amount), Posting(owner, asset, target, amount))


def entry_for(kind: str, body: Any, fee_account: str) -> Entry | None:
    """The entry an event body (a message of the Event oneof) implies, or None.

    Funding is booked against `@external` here; the applier re-points it at the real
    counterparty of the ledger's own funding request (`with_origin`).
    """
    env = body.envelope
    if kind == "trade_executed":
        return trade_entry(body, env, fee_account)
    if kind == "order_accepted":
        postings = _move(body.account, body.reserved_asset, body.reserved_amount, AVAILABLE, HOLD)
        return _entry(env, KIND_RESERVE, postings)
    if kind == "order_canceled" or kind == "order_expired":
        postings = _move(body.account, body.released_asset, body.released_amount, HOLD, AVAILABLE)
        return _entry(env, KIND_RELEASE, postings)
    if kind == "funds_credited" or kind == "funds_debited":
        return funding_entry(kind, body, DEFAULT_ORIGIN)
    return None


def _entry(
    env: Any, kind: str, postings: tuple[Posting, ...], trade_id: str | None = None
) -> Entry | None:
    if not postings:
        return None
    return Entry(
        env.event_id, kind, env.symbol, env.seq, env.epoch, env.occurred_at, postings, trade_id
    )


def trade_entry(t: events_pb2.TradeExecuted, env: Any, fee_account: str) -> Entry | None:
    buyer, seller = t.buyer_account, t.seller_account
    base, quote = t.base_asset, t.quote_asset
    base_amount, quote_amount = t.base_amount, t.quote_amount
    buyer_fee, seller_fee, released = t.buyer_fee, t.seller_fee, t.buyer_released
    candidates = (
        Posting(buyer, quote, HOLD, -(quote_amount + released)),
        Posting(buyer, quote, AVAILABLE, released),
        Posting(seller, quote, AVAILABLE, quote_amount - seller_fee),
        Posting(fee_account, quote, AVAILABLE, seller_fee),
        Posting(seller, base, HOLD, -base_amount),
        Posting(buyer, base, AVAILABLE, base_amount - buyer_fee),
        Posting(fee_account, base, AVAILABLE, buyer_fee),
    )
    postings = tuple(p for p in candidates if p.amount)
    return _entry(env, KIND_TRADE, postings, t.trade_id)


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
            Posting(body.account, body.asset, AVAILABLE, amount),
            Posting(origin.counterparty, body.asset, AVAILABLE, -amount),
        ),
        None,
        origin.correction_id,
        body.funding_id,
    )


def with_origin(entry: Entry, origin: FundingOrigin) -> Entry:
    """A funding entry re-pointed at its real counterparty (and correction, if any)."""
    account, counter = entry.postings
    return entry._replace(
        kind=origin.kind,
        correction_id=origin.correction_id,
        postings=(account, counter._replace(owner=origin.counterparty)),
    )


def decode(payload: bytes, fee_account: str) -> Incoming:
    """A serialized `Event` -> Incoming; raises ValueError for one that is unusable."""
    event = events_pb2.Event.FromString(payload)
    return from_event(event, payload, fee_account)


def from_event(event: events_pb2.Event, payload: bytes, fee_account: str) -> Incoming:
    kind = event.WhichOneof("body")
    if kind is None:
        raise ValueError("event without a body")
    body = getattr(event, kind)
    env = body.envelope
    _, _, index = env.event_id.rpartition(":")
    if not index.isdigit() or env.event_id != f"{env.symbol}:{env.seq}:{index}":
        raise ValueError(f"event id {env.event_id!r} is not <symbol>:<seq>:<index>")
    return Incoming(
        env.symbol,
        env.seq,
        int(index),
        env.epoch,
        env.event_id,
        kind,
        entry_for(kind, body, fee_account),
        payload,
    )


def balanced(postings: tuple[Posting, ...]) -> bool:
    """Whether postings sum to zero per asset (the double-entry rule)."""
    sums: dict[str, int] = {}
    for p in postings:
        sums[p.asset] = sums.get(p.asset, 0) + p.amount
    return not any(sums.values())


def is_system(owner: str, fee_account: str) -> bool:
    """Designated system accounts: counterparties and the fee account (may go negative)."""
    return owner.startswith("@") or owner == fee_account
