"""Translation between the contract's protobuf messages and the engine's tuples.

Kept off the engine's inner loop: requests are decoded once at the gRPC edge, and events
become protobuf only for replies and for the outbox.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from contracts.v1 import common_pb2, events_pb2, funding_pb2, matcher_pb2
from workloads.matcher import engine as e
from workloads.matcher.spec import MarketSpec

EVENT_VERSION = 1
_U64 = (1 << 64) - 1


class BadCommand(ValueError):
    """A request that cannot become a command; `reason` is the contract's RejectReason."""

    def __init__(self, reason: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def place_command(req: matcher_pb2.PlaceOrderRequest) -> tuple[Any, ...]:
    tif = req.time_in_force
    if req.order_type == e.MARKET and tif == common_pb2.TIME_IN_FORCE_UNSPECIFIED:
        tif = e.IOC  # a MARKET order is immediate by nature
    elif req.order_type == e.LIMIT and tif == common_pb2.TIME_IN_FORCE_UNSPECIFIED:
        tif = e.GTC
    return (
        e.C_PLACE,
        req.account,
        req.client_order_id,
        int(req.side),
        int(req.order_type),
        int(tif),
        req.price,
        req.quantity,
        req.post_only,
        req.quote_budget,
    )


def cancel_command(req: matcher_pb2.CancelOrderRequest) -> tuple[Any, ...]:
    order_id = 0
    if req.order_id:
        if not req.order_id.isdigit() or len(req.order_id) > 19:
            raise BadCommand(common_pb2.REJECT_REASON_ORDER_NOT_FOUND, f"order id {req.order_id!r}")
        order_id = int(req.order_id)
    if not req.account:
        raise BadCommand(common_pb2.REJECT_REASON_INVALID_ACCOUNT, "account is required")
    if not order_id and not req.client_order_id:
        raise BadCommand(common_pb2.REJECT_REASON_ORDER_NOT_FOUND, "order_id or client_order_id")
    return (e.C_CANCEL, req.account, order_id, req.client_order_id)


def mode_command(req: matcher_pb2.SetSymbolModeRequest) -> tuple[Any, ...]:
    if req.mode not in (e.NORMAL, e.CANCEL_ONLY, e.SOFT_HALT, e.HARD_HALT):
        raise BadCommand(common_pb2.REJECT_REASON_INVALID_MODE, f"mode {req.mode}")
    return (e.C_SET_MODE, int(req.mode), req.reason[:200])


def funding_command(req: funding_pb2.FundingCommand) -> tuple[Any, ...]:
    return (e.C_FUNDING, req.funding_id, req.account, req.asset, req.amount, int(req.direction))


def command(spec: MarketSpec, wrapped: matcher_pb2.Command) -> tuple[tuple[Any, ...], str, str]:
    """(command tuple, symbol, correlation id) of one batched command; raises BadCommand."""
    kind = wrapped.WhichOneof("kind")
    if kind == "place_order":
        req = wrapped.place_order
        cmd = place_command(req)
        reason = e.validate_place(spec, cmd)
        if reason:
            raise BadCommand(reason, "invalid order")
        return cmd, req.symbol, req.correlation_id
    if kind == "cancel_order":
        return (
            cancel_command(wrapped.cancel_order),
            wrapped.cancel_order.symbol,
            wrapped.cancel_order.correlation_id,
        )
    if kind == "cancel_all":
        req_all = wrapped.cancel_all
        return (e.C_CANCEL_ALL, req_all.account), req_all.symbol, req_all.correlation_id
    if kind == "set_symbol_mode":
        req_mode = wrapped.set_symbol_mode
        return mode_command(req_mode), req_mode.symbol, req_mode.correlation_id
    if kind == "funding":
        fund = wrapped.funding
        return funding_command(fund), spec.symbol, fund.correlation_id
    raise BadCommand(common_pb2.REJECT_REASON_UNSUPPORTED_COMMAND, f"command {kind}")


def event_proto(
    spec: MarketSpec,
    event: Any,
    seq: int,
    index: int,
    epoch: int,
    ts: int,
    correlation_id: str,
    command_kind: int = 0,
) -> events_pb2.Event:
    """The contract's Event for one engine event tuple, with its full envelope;
    `command_kind`: the engine's kind of the command that made it (`cmd[0]`).

    The readable form of what `EventEncoder` writes by hand for speed: the ledger's
    simulator builds events with it, and the tests check the two byte for byte.
    """
    symbol = spec.symbol
    envelope = common_pb2.EventEnvelope(
        event_id=f"{symbol}:{seq}:{index}",
        event_version=EVENT_VERSION,
        symbol=symbol,
        seq=seq,
        occurred_at=ts,
        correlation_id=correlation_id,
        causation_id=f"{symbol}:cmd:{seq}",
        epoch=epoch,
    )
    kind = event[0]
    base, quote = spec.base_asset, spec.quote_asset
    if kind == e.E_ACCEPTED:
        _, oid, cid, account, side, otype, tif, price, qty, post_only, is_quote, reserved = event
        return events_pb2.Event(
            order_accepted=events_pb2.OrderAccepted(
                envelope=envelope,
                order_id=str(oid),
                client_order_id=cid,
                account=account,
                side=side,
                order_type=otype,
                time_in_force=tif,
                price=price,
                quantity=qty,
                post_only=post_only,
                reserved_asset=quote if is_quote else base,
                reserved_amount=reserved,
            )
        )
    if kind == e.E_REJECTED:
        _, cid, account, reason, detail = event
        return events_pb2.Event(
            order_rejected=events_pb2.OrderRejected(
                envelope=envelope,
                client_order_id=cid,
                account=account,
                reason=reason,
                detail=detail,
                command=common_pb2.CommandKind.ValueType(command_kind),
            )
        )
    if kind == e.E_CANCELED:
        _, oid, cid, account, qty, is_quote, released, cause = event
        return events_pb2.Event(
            order_canceled=events_pb2.OrderCanceled(
                envelope=envelope,
                order_id=str(oid),
                client_order_id=cid,
                account=account,
                canceled_quantity=qty,
                released_asset=quote if is_quote else base,
                released_amount=released,
                cause=cause,
            )
        )
    if kind == e.E_EXPIRED:
        _, oid, cid, account, qty, is_quote, released = event
        return events_pb2.Event(
            order_expired=events_pb2.OrderExpired(
                envelope=envelope,
                order_id=str(oid),
                client_order_id=cid,
                account=account,
                expired_quantity=qty,
                released_asset=quote if is_quote else base,
                released_amount=released,
            )
        )
    if kind == e.E_TRADE:
        (
            _,
            trade_id,
            price,
            qty,
            taker_side,
            maker_oid,
            taker_oid,
            maker_account,
            taker_account,
            base_amount,
            quote_amount,
            buyer_fee,
            seller_fee,
            buyer_released,
            maker_remaining,
            taker_remaining,
        ) = event
        buyer, seller = (
            (taker_account, maker_account)
            if taker_side == e.BUY
            else (maker_account, taker_account)
        )
        return events_pb2.Event(
            trade_executed=events_pb2.TradeExecuted(
                envelope=envelope,
                trade_id=f"{symbol}:{trade_id}",
                price=price,
                quantity=qty,
                taker_side=taker_side,
                maker_order_id=str(maker_oid),
                taker_order_id=str(taker_oid),
                maker_account=maker_account,
                taker_account=taker_account,
                buyer_account=buyer,
                seller_account=seller,
                base_asset=base,
                quote_asset=quote,
                base_amount=base_amount,
                quote_amount=quote_amount,
                buyer_fee=buyer_fee,
                seller_fee=seller_fee,
                buyer_released=buyer_released,
                maker_remaining=maker_remaining,
                taker_remaining=taker_remaining,
            )
        )
    if kind == e.E_MODE:
        _, previous, mode, reason = event
        return events_pb2.Event(
            symbol_mode_changed=events_pb2.SymbolModeChanged(
                envelope=envelope, previous_mode=previous, mode=mode, reason=reason
            )
        )
    if kind == e.E_EPOCH:
        _, previous_epoch, leader, state_hash = event
        return events_pb2.Event(
            epoch_started=events_pb2.EpochStarted(
                envelope=envelope,
                previous_epoch=previous_epoch,
                leader=leader,
                state_hash=hash_bytes(state_hash),
            )
        )
    if kind == e.E_CREDITED or kind == e.E_DEBITED:
        _, funding_id, account, asset, amount, after = event
        fields: dict[str, Any] = {
            "envelope": envelope,
            "funding_id": funding_id,
            "account": account,
            "asset": asset,
            "amount": amount,
            "available_after": after,
        }
        if kind == e.E_CREDITED:
            return events_pb2.Event(funds_credited=events_pb2.FundsCredited(**fields))
        return events_pb2.Event(funds_debited=events_pb2.FundsDebited(**fields))
    if kind == e.E_FUNDING_REJECTED:
        _, funding_id, account, asset, amount, direction, reason = event
        return events_pb2.Event(
            funding_rejected=events_pb2.FundingRejected(
                envelope=envelope,
                funding_id=funding_id,
                account=account,
                asset=asset,
                amount=amount,
                direction=direction,
                reason=reason,
            )
        )
    if kind == e.E_MASS_CANCELED:
        _, account, count = event
        return events_pb2.Event(
            mass_cancel_completed=events_pb2.MassCancelCompleted(
                envelope=envelope, account=account, canceled_orders=count
            )
        )
    raise ValueError(f"unknown event kind {kind}")


def hash_bytes(state_hash: int) -> bytes:
    """The rolling state hash as 8 big-endian bytes (as GetStatus and EpochStarted show it)."""
    return (state_hash & _U64).to_bytes(8, "big")


# ---------------------------------------------------------------------- wire encoding
#
# Replies and the outbox need each event serialized. Building protobuf objects from
# keyword arguments costs ~12 us per event in Python; writing the wire format straight
# from the engine's tuples costs a fraction of that. `EventEncoder` produces exactly the
# bytes `event_proto(...).SerializeToString()` does (fields in number order, proto3
# defaults omitted; a test compares them), and replies are assembled from those bytes.

_VARINT_TABLE = [bytes((i,)) for i in range(128)] + [
    bytes(((i & 127) | 128, i >> 7)) for i in range(128, 1 << 14)
]  # every value below 2^14 as its ready-made varint (1.5 MB)
_U64_WRAP = 1 << 64


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative values as 64-bit two's complement (10 bytes)."""
    if 0 <= value < 16384:
        return _VARINT_TABLE[value]
    if value < 0:
        value += _U64_WRAP
    if value < 268435456:  # 3 or 4 bytes: prices, quantities, seqs
        if value < 2097152:
            return bytes((value & 127 | 128, value >> 7 & 127 | 128, value >> 14))
        return bytes(
            (value & 127 | 128, value >> 7 & 127 | 128, value >> 14 & 127 | 128, value >> 21)
        )
    out = bytearray()
    while value > 127:
        out.append(value & 127 | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(key: bytes, text: str) -> bytes:
    """A whole string field (key, length, UTF-8); b"" for the proto3 default."""
    if not text:
        return b""
    data = text.encode()
    size = len(data)
    return key + (_VARINT_TABLE[size] if size < 16384 else varint(size)) + data


# Keys of varint (wire type 0) and length-delimited (2) fields, by field number.
_V = [varint(n << 3) for n in range(21)]
_L = [varint(n << 3 | 2) for n in range(21)]
_EVENT_KEY = {
    e.E_ACCEPTED: _L[1],
    e.E_REJECTED: _L[2],
    e.E_CANCELED: _L[3],
    e.E_EXPIRED: _L[4],
    e.E_TRADE: _L[5],
    e.E_MODE: _L[6],
    e.E_EPOCH: _L[7],
    e.E_CREDITED: _L[8],
    e.E_DEBITED: _L[9],
    e.E_FUNDING_REJECTED: _L[10],
    e.E_MASS_CANCELED: _L[11],
}
_STATUS = [_V[1] + varint(status) if status else b"" for status in range(4)]


class EventEncoder:
    """Serializes one market's engine events and command replies to wire bytes.

    One function per event kind, fields in number order, written out by hand: Python
    calls are what this costs, so there are as few as the format allows.
    """

    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self.symbol = spec.symbol
        self._prefix = (
            _V[2] + varint(EVENT_VERSION) + _string(_L[3], spec.symbol)
        )  # event_version and symbol: the same in every envelope
        base, quote = spec.base_asset, spec.quote_asset
        self._reserved = {False: _string(_L[11], base), True: _string(_L[11], quote)}
        self._released = {False: _string(_L[6], base), True: _string(_L[6], quote)}
        self._trade_assets = _string(_L[12], base) + _string(_L[13], quote)
        self._ts, self._ts_field = 0, b""
        self._command_field = b""  # OrderRejected.command of the command being encoded
        self._bodies: dict[int, Callable[[Sequence[Any], bytes], bytes]] = {
            e.E_ACCEPTED: self._accepted,
            e.E_REJECTED: self._rejected,
            e.E_CANCELED: self._canceled,
            e.E_EXPIRED: self._canceled,
            e.E_TRADE: self._trade,
            e.E_MODE: self._mode,
            e.E_EPOCH: self._epoch,
            e.E_CREDITED: self._funds,
            e.E_DEBITED: self._funds,
            e.E_FUNDING_REJECTED: self._funding_rejected,
            e.E_MASS_CANCELED: self._mass_canceled,
        }

    def command_events(
        self,
        events: Sequence[Any],
        seq: int,
        epoch: int,
        ts: int,
        correlation_id: str,
        command_kind: int = 0,
    ) -> list[bytes]:
        """Each event of one command as a serialized `Event`, in index order;
        `command_kind`: the engine's kind of the command (`cmd[0]`), which a reject names."""
        symbol = self.symbol
        self._command_field = b"0" + varint(command_kind) if command_kind else b""
        if ts != self._ts:  # commands of one sequenced batch share their timestamp
            self._ts, self._ts_field = ts, _V[5] + varint(ts) if ts else b""
        # Every field of the envelope but event_id is the same for all of a command's events.
        shared = b"".join(
            (
                self._prefix,
                _V[4] + varint(seq) if seq else b"",
                self._ts_field,
                _string(_L[6], correlation_id),
                _string(_L[7], f"{symbol}:cmd:{seq}"),
                _V[8] + varint(epoch) if epoch else b"",
            )
        )
        bodies = self._bodies
        out = []
        for index, event in enumerate(events):
            kind = event[0]
            event_id = f"{symbol}:{seq}:{index}".encode()
            envelope = b"\x0a" + varint(len(event_id)) + event_id + shared
            body = bodies[kind](event, b"\x0a" + varint(len(envelope)) + envelope)
            out.append(_EVENT_KEY[kind] + varint(len(body)) + body)
        return out

    def _accepted(self, event: Sequence[Any], envelope: bytes) -> bytes:
        _, oid, cid, account, side, otype, tif, price, qty, post_only, is_quote, reserved = event
        return b"".join(
            (
                envelope,
                _string(b"\x12", str(oid)),
                _string(b"\x1a", cid),
                _string(b'"', account),
                b"(" + varint(side) if side else b"",
                b"0" + varint(otype) if otype else b"",
                b"8" + varint(tif) if tif else b"",
                b"@" + varint(price) if price else b"",
                b"H" + varint(qty) if qty else b"",
                b"P\x01" if post_only else b"",
                self._reserved[bool(is_quote)],
                b"`" + varint(reserved) if reserved else b"",
            )
        )

    def _rejected(self, event: Sequence[Any], envelope: bytes) -> bytes:
        _, cid, account, reason, detail = event
        return b"".join(
            (
                envelope,
                _string(b"\x12", cid),
                _string(b"\x1a", account),
                b" " + varint(reason) if reason else b"",
                _string(b"*", detail),
                self._command_field,
            )
        )

    def _canceled(self, event: Sequence[Any], envelope: bytes) -> bytes:
        """OrderCanceled, and OrderExpired: the same fields without the cause."""
        oid, cid, account, qty, is_quote, released = event[1:7]
        cause = event[7] if event[0] == e.E_CANCELED else 0
        return b"".join(
            (
                envelope,
                _string(b"\x12", str(oid)),
                _string(b"\x1a", cid),
                _string(b'"', account),
                b"(" + varint(qty) if qty else b"",
                self._released[bool(is_quote)],
                b"8" + varint(released) if released else b"",
                b"@" + varint(cause) if cause else b"",
            )
        )

    def _trade(self, event: Sequence[Any], envelope: bytes) -> bytes:
        (
            _,
            trade_id,
            price,
            qty,
            taker_side,
            maker_oid,
            taker_oid,
            maker_account,
            taker_account,
            base_amount,
            quote_amount,
            buyer_fee,
            seller_fee,
            buyer_released,
            maker_remaining,
            taker_remaining,
        ) = event
        if taker_side == e.BUY:
            buyer, seller = taker_account, maker_account
        else:
            buyer, seller = maker_account, taker_account
        return b"".join(
            (
                envelope,
                _string(b"\x12", f"{self.symbol}:{trade_id}"),
                b"\x18" + varint(price) if price else b"",
                b" " + varint(qty) if qty else b"",
                b"(" + varint(taker_side) if taker_side else b"",
                _string(b"2", str(maker_oid)),
                _string(b":", str(taker_oid)),
                _string(b"B", maker_account),
                _string(b"J", taker_account),
                _string(b"R", buyer),
                _string(b"Z", seller),
                self._trade_assets,
                b"p" + varint(base_amount) if base_amount else b"",
                b"x" + varint(quote_amount) if quote_amount else b"",
                b"\x80\x01" + varint(buyer_fee) if buyer_fee else b"",
                b"\x88\x01" + varint(seller_fee) if seller_fee else b"",
                b"\x90\x01" + varint(buyer_released) if buyer_released else b"",
                b"\x98\x01" + varint(maker_remaining) if maker_remaining else b"",
                b"\xa0\x01" + varint(taker_remaining) if taker_remaining else b"",
            )
        )

    def _mode(self, event: Sequence[Any], envelope: bytes) -> bytes:
        _, previous, mode, reason = event
        return b"".join(
            (
                envelope,
                b"\x10" + varint(previous) if previous else b"",
                b"\x18" + varint(mode) if mode else b"",
                _string(b'"', reason),
            )
        )

    def _epoch(self, event: Sequence[Any], envelope: bytes) -> bytes:
        _, previous_epoch, leader, state_hash = event
        return b"".join(
            (
                envelope,
                b"\x10" + varint(previous_epoch) if previous_epoch else b"",
                _string(b"\x1a", leader),
                b'"\x08' + hash_bytes(state_hash),
            )
        )

    def _funds(self, event: Sequence[Any], envelope: bytes) -> bytes:
        _, funding_id, account, asset, amount, after = event
        return b"".join(
            (
                envelope,
                _string(b"\x12", funding_id),
                _string(b"\x1a", account),
                _string(b'"', asset),
                b"(" + varint(amount) if amount else b"",
                b"0" + varint(after) if after else b"",
            )
        )

    def _funding_rejected(self, event: Sequence[Any], envelope: bytes) -> bytes:
        _, funding_id, account, asset, amount, direction, reason = event
        return b"".join(
            (
                envelope,
                _string(b"\x12", funding_id),
                _string(b"\x1a", account),
                _string(b'"', asset),
                b"(" + varint(amount) if amount else b"",
                b"0" + varint(direction) if direction else b"",
                b"8" + varint(reason) if reason else b"",
            )
        )

    def _mass_canceled(self, event: Sequence[Any], envelope: bytes) -> bytes:
        _, account, count = event
        return b"".join(
            (envelope, _string(b"\x12", account), b"\x18" + varint(count) if count else b"")
        )

    def reply(
        self, status: int, reason: int, seq: int, epoch: int, order_id: int, events: list[bytes]
    ) -> bytes:
        """A serialized `CommandReply` around already serialized events."""
        parts = [
            _STATUS[status] if 0 <= status < 4 else _V[1] + varint(status),
            b"\x10" + varint(reason) if reason else b"",
            b"\x18" + varint(seq) if seq else b"",
            b" " + varint(epoch) if epoch else b"",
        ]
        for event in events:
            parts += (b"*", varint(len(event)), event)
        if order_id:
            parts.append(_string(b"2", str(order_id)))
        return b"".join(parts)


def batch_reply(replies: Sequence[bytes], epoch: int) -> bytes:
    """A serialized `CommandBatchReply` around serialized replies."""
    parts: list[bytes] = []
    for reply in replies:
        parts += (b"\x0a", varint(len(reply)), reply)
    if epoch:
        parts.append(_V[2] + varint(epoch))
    return b"".join(parts)
