"""Translation between the contract's protobuf messages and the engine's tuples.

Kept off the engine's inner loop: requests are decoded once at the gRPC edge, and events
become protobuf only for replies and for the outbox.
"""

from __future__ import annotations

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
) -> events_pb2.Event:
    """The contract's Event for one engine event tuple, with its full envelope."""
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
