"""Request bodies: JSON in, validated values out, or a typed `ApiError`. Pure.

Amounts are integers in minor units, given as JSON integers or decimal strings (int64 does
not survive every JSON client as a number); they are bounded by 2**62 so that no sum of a
few of them can overflow PostgreSQL's bigint. Injected events use the contract's protobuf
JSON mapping (field names in snake_case or camelCase), parsed strictly: an unknown field
or a wrong type is `invalid_payload`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from contracts.v1 import events_pb2
from workloads.ledger.errors import ApiError, Code
from workloads.ledger.settings import Market

MAX_AMOUNT = 1 << 62
NAME = re.compile(r"^[A-Za-z0-9_.@:\-]{1,64}$")
USER = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")  # no "@": those names are the system's
ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,48}$")
ASSET = re.compile(r"^[A-Za-z0-9]{1,16}$")


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(Code.MALFORMED_JSON, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(Code.INVALID_PAYLOAD, "the body must be a JSON object")
    return value


def only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(Code.INVALID_PAYLOAD, f"unknown field(s): {', '.join(unknown)}")


def text(body: dict[str, Any], name: str, pattern: re.Pattern[str], required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not pattern.match(value):
        raise ApiError(Code.INVALID_FIELD, f"{name} must be a string matching {pattern.pattern}")
    return value


def amount(body: dict[str, Any], name: str, *, signed: bool = False) -> int:
    """A non-zero integer amount (positive unless `signed`)."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(Code.INVALID_AMOUNT, f"{name} must be an integer (minor units)")
    if isinstance(value, str):
        if not re.fullmatch(r"-?\d{1,19}", value.strip()):
            raise ApiError(Code.INVALID_AMOUNT, f"{name} must be an integer (minor units)")
        value = int(value)
    if value < 0 and not signed:
        raise ApiError(Code.NEGATIVE_AMOUNT, f"{name} must be positive, got {value}")
    if value == 0 or abs(value) > MAX_AMOUNT:
        raise ApiError(Code.INVALID_AMOUNT, f"{name} must be non-zero and at most 2**62")
    return value


def flag(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(Code.INVALID_FIELD, f"{name} must be true or false")
    return value


def market(markets: tuple[Market, ...], symbol: str) -> Market:
    for m in markets:
        if m.symbol == symbol:
            return m
    raise ApiError(Code.UNKNOWN_MARKET, f"market {symbol!r} is not configured")


def asset_of(m: Market, asset: str) -> str:
    if asset not in m.assets:
        raise ApiError(Code.UNKNOWN_ASSET, f"{asset!r} is not an asset of {m.symbol}")
    return asset


def event(message: type[Message], body: dict[str, Any]) -> Any:
    """An event message from its protobuf JSON mapping, strictly."""
    try:
        return json_format.ParseDict(body, message(), ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise ApiError(Code.INVALID_PAYLOAD, f"not a valid {message.__name__}: {exc}") from None


def checked_envelope(env: Any, markets: tuple[Market, ...]) -> Market:
    m = market(markets, env.symbol)
    if env.seq < 1:
        raise ApiError(Code.INVALID_EVENT, "envelope.seq must be at least 1")
    index = env.event_id.rpartition(":")[2]
    if not index.isdigit() or env.event_id != f"{env.symbol}:{env.seq}:{index}":
        raise ApiError(Code.INVALID_EVENT, "envelope.event_id must be <symbol>:<seq>:<index>")
    if env.epoch >= MAX_AMOUNT or env.occurred_at < 0:
        raise ApiError(Code.INVALID_EVENT, "envelope.epoch or occurred_at out of range")
    return m


def non_negative(**amounts: int) -> None:
    for name, value in amounts.items():
        if value < 0:
            raise ApiError(Code.NEGATIVE_AMOUNT, f"{name} must not be negative, got {value}")
        if value > MAX_AMOUNT:
            raise ApiError(Code.INVALID_AMOUNT, f"{name} must be at most 2**62")


def trade(body: dict[str, Any], markets: tuple[Market, ...]) -> events_pb2.TradeExecuted:
    t: events_pb2.TradeExecuted = event(events_pb2.TradeExecuted, body)
    m = checked_envelope(t.envelope, markets)
    asset_of(m, t.base_asset)
    asset_of(m, t.quote_asset)
    if t.base_asset != m.base_asset or t.quote_asset != m.quote_asset:
        raise ApiError(Code.UNKNOWN_ASSET, f"{m.symbol} trades {m.base_asset}/{m.quote_asset}")
    if not t.trade_id or len(t.trade_id) > 64:
        raise ApiError(Code.INVALID_EVENT, "trade_id is required (at most 64 characters)")
    for name in ("buyer_account", "seller_account"):
        if not USER.match(getattr(t, name)):
            raise ApiError(Code.INVALID_FIELD, f"{name} is not a valid account name")
    if t.buyer_account == t.seller_account:
        raise ApiError(Code.INVALID_EVENT, "buyer and seller must differ")
    non_negative(
        base_amount=t.base_amount,
        quote_amount=t.quote_amount,
        buyer_fee=t.buyer_fee,
        seller_fee=t.seller_fee,
        buyer_released=t.buyer_released,
    )
    if not t.base_amount or not t.quote_amount:
        raise ApiError(Code.INVALID_AMOUNT, "base_amount and quote_amount must be positive")
    if t.buyer_fee > t.base_amount or t.seller_fee > t.quote_amount:
        raise ApiError(Code.INVALID_AMOUNT, "a fee cannot exceed the amount it is taken from")
    return t


def reserve(body: dict[str, Any], markets: tuple[Market, ...]) -> events_pb2.OrderAccepted:
    o: events_pb2.OrderAccepted = event(events_pb2.OrderAccepted, body)
    m = checked_envelope(o.envelope, markets)
    asset_of(m, o.reserved_asset)
    if not USER.match(o.account):
        raise ApiError(Code.INVALID_FIELD, "account is not a valid account name")
    non_negative(reserved_amount=o.reserved_amount)
    if not o.reserved_amount:
        raise ApiError(Code.INVALID_AMOUNT, "reserved_amount must be positive")
    return o


def release(body: dict[str, Any], markets: tuple[Market, ...]) -> events_pb2.OrderCanceled:
    o: events_pb2.OrderCanceled = event(events_pb2.OrderCanceled, body)
    m = checked_envelope(o.envelope, markets)
    asset_of(m, o.released_asset)
    if not USER.match(o.account):
        raise ApiError(Code.INVALID_FIELD, "account is not a valid account name")
    non_negative(released_amount=o.released_amount, canceled_quantity=o.canceled_quantity)
    return o
