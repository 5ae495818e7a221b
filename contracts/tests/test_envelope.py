"""Every event carries the full envelope, and the topic's record type covers every event."""

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from contracts.v1 import common_pb2, events_pb2

pytestmark = pytest.mark.unit

ENVELOPE_FIELDS = {
    "event_id": FieldDescriptor.TYPE_STRING,
    "event_version": FieldDescriptor.TYPE_UINT32,
    "symbol": FieldDescriptor.TYPE_STRING,
    "seq": FieldDescriptor.TYPE_UINT64,
    "occurred_at": FieldDescriptor.TYPE_INT64,
    "correlation_id": FieldDescriptor.TYPE_STRING,
    "causation_id": FieldDescriptor.TYPE_STRING,
    "epoch": FieldDescriptor.TYPE_UINT64,
}

REQUIRED_EVENTS = {
    "OrderAccepted",
    "OrderRejected",
    "OrderCanceled",
    "OrderExpired",
    "TradeExecuted",
    "SymbolModeChanged",
    "EpochStarted",
    "FundsCredited",
    "FundsDebited",
    "FundingRejected",
}


def event_messages() -> list[Descriptor]:
    """Every message type defined in events.proto except the topic's wrapper."""
    file = events_pb2.DESCRIPTOR
    return [d for name, d in file.message_types_by_name.items() if name != "Event"]


def test_envelope_has_every_field_with_its_type() -> None:
    fields = common_pb2.EventEnvelope.DESCRIPTOR.fields_by_name
    assert {name: f.type for name, f in fields.items()} == ENVELOPE_FIELDS


@pytest.mark.parametrize("message", event_messages(), ids=lambda d: d.name)
def test_event_carries_envelope_as_field_one(message: Descriptor) -> None:
    envelope = message.fields_by_number.get(1)
    assert envelope is not None, f"{message.name} has no field 1"
    assert envelope.name == "envelope"
    assert envelope.message_type is common_pb2.EventEnvelope.DESCRIPTOR


def test_topic_record_covers_every_event_exactly_once() -> None:
    body = events_pb2.Event.DESCRIPTOR.oneofs_by_name["body"]
    carried = [f.message_type.name for f in body.fields if f.message_type is not None]
    assert len(carried) == len(set(carried))
    assert set(carried) == {d.name for d in event_messages()}
    assert set(carried) >= REQUIRED_EVENTS


def test_reject_reasons_are_grouped_and_typed() -> None:
    values = common_pb2.RejectReason.DESCRIPTOR.values
    assert all(v.number == 0 or 100 <= v.number < 700 for v in values)
    assert common_pb2.RejectReason.Value("REJECT_REASON_NOT_LEADER") == 501


def test_event_round_trips_through_bytes() -> None:
    envelope = common_pb2.EventEnvelope(
        event_id="BTC-USDT:3:42:0", event_version=1, symbol="BTC-USDT", seq=42, epoch=3
    )
    event = events_pb2.Event(
        trade_executed=events_pb2.TradeExecuted(envelope=envelope, trade_id="t-1", price=100)
    )
    decoded = events_pb2.Event.FromString(event.SerializeToString())
    assert decoded.WhichOneof("body") == "trade_executed"
    assert decoded.trade_executed.envelope.seq == 42
