"""The wire encoder writes exactly what protobuf would, for every kind of event."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.internal import encoder as pb_encoder

from contracts.v1 import common_pb2, events_pb2, matcher_pb2
from workloads.matcher import codec, wal
from workloads.matcher import engine as e
from workloads.matcher import outbox as ob
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.unit

SPEC = MarketSpec("ÉTH-USDT", "ÉTH", "USDT", maker_fee_bps=10, taker_fee_bps=20)


def commands() -> list[tuple[Any, ...]]:
    """Every kind of command, with crossing orders, cancels, rejects and odd strings."""
    rng = random.Random(3)
    cmds: list[tuple[Any, ...]] = []
    for n in range(6):
        cmds.append((e.C_FUNDING, f"f-b-{n}", f"acct-{n}", "ÉTH", 10**12, e.CREDIT))
        cmds.append((e.C_FUNDING, f"f-q-{n}", f"acct-{n}", "USDT", 10**15, e.CREDIT))
    for i in range(1_500):
        account = f"acct-{rng.randrange(6)}"
        side = rng.choice((e.BUY, e.SELL))
        roll = rng.random()
        if roll < 0.2:
            cmds.append((e.C_CANCEL, account, rng.randrange(1, i + 20), ""))
        elif roll < 0.3:
            cmds.append((e.C_PLACE, account, f"m{i}", side, e.MARKET, e.IOC, 0, 7, False, 0))
        else:
            tif = rng.choice((e.GTC, e.GTC, e.IOC, e.FOK))
            price = 100_000 + rng.randrange(-30, 30)
            post_only = tif == e.GTC and rng.random() < 0.1
            cmds.append((e.C_PLACE, account, f"c{i}", side, e.LIMIT, tif, price, 5, post_only, 0))
    cmds += [
        (e.C_SET_MODE, e.CANCEL_ONLY, "drill ✓"),
        (e.C_PLACE, "acct-1", "x", e.BUY, e.LIMIT, e.GTC, 100_000, 5, False, 0),
        (e.C_SET_MODE, e.NORMAL, ""),
        (e.C_EPOCH, 7, 6, "pod-a"),
        (e.C_FUNDING, "bad-asset", "acct-1", "NOPE", 5, e.DEBIT),
        (e.C_FUNDING, "too-much", "acct-2", "USDT", 10**18, e.DEBIT),
        (e.C_FUNDING, "debit", "acct-2", "USDT", 7, e.DEBIT),
        (e.C_CANCEL_ALL, "acct-3"),
        (e.C_CANCEL_ALL, ""),
        (e.C_PLACE, "acct-5", "ü-" + "x" * 60, e.BUY, e.LIMIT, e.GTC, 99_000, 3, True, 0),
        (99,),
    ]
    return cmds


def test_events_and_replies_are_byte_identical_to_protobuf() -> None:
    engine = e.Engine(SPEC)
    encoder = codec.EventEncoder(SPEC)
    kinds: set[int] = set()
    for seq, cmd in enumerate(commands(), 1):
        ts = 1_700_000_000_000_000_000 + seq * 1_000 if seq % 5 else 0
        correlation_id = f"req-{seq}-ø" if seq % 3 else ""
        events = engine.execute(cmd, seq, ts)
        epoch = seq % 4
        expected = [
            codec.event_proto(
                SPEC, event, seq, i, epoch, ts, correlation_id, cmd[0]
            ).SerializeToString()
            for i, event in enumerate(events)
        ]
        encoded = encoder.command_events(events, seq, epoch, ts, correlation_id, cmd[0])
        assert encoded == expected, (cmd, events)
        status, reason = e.outcome(events)
        order_id = seq if status == e.ACCEPTED and cmd[0] == e.C_PLACE else 0
        reply = matcher_pb2.CommandReply(
            status=matcher_pb2.CommandStatus.ValueType(status),
            reject_reason=reason,  # type: ignore[arg-type]
            seq=seq,
            epoch=epoch,
            order_id=str(order_id) if order_id else "",
            events=[events_pb2.Event.FromString(x) for x in expected],
        )
        wire = encoder.reply(status, reason, seq, epoch, order_id, encoded)
        assert wire == reply.SerializeToString()
        kinds.update(event[0] for event in events)
    assert kinds == set(range(e.E_ACCEPTED, e.E_MASS_CANCELED + 1)), "not every kind was seen"


def test_batch_reply_and_refusals_parse_as_the_contract_says() -> None:
    encoder = codec.EventEncoder(SPEC)
    refused = encoder.reply(2, 104, 0, 3, 0, [])
    duplicate = encoder.reply(3, 0, 41, 3, 41, [])
    wire = codec.batch_reply([refused, duplicate], 3)
    parsed = matcher_pb2.CommandBatchReply.FromString(wire)
    assert parsed.epoch == 3
    assert [(r.status, r.reject_reason, r.seq, r.order_id) for r in parsed.replies] == [
        (2, 104, 0, ""),
        (3, 0, 41, "41"),
    ]
    assert wire == parsed.SerializeToString()


def test_varint_matches_protobuf_for_every_range() -> None:
    rng = random.Random(5)
    values = [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455, 268_435_456]
    values += [2**63 - 1, -1, -(2**63)]
    values += [rng.randrange(-(2**63), 2**63) for _ in range(2_000)]
    values += [rng.randrange(0, 2**30) for _ in range(2_000)]
    for value in values:
        assert codec.varint(value) == pb_encoder._VarintBytes(value & (2**64 - 1)), value  # type: ignore[attr-defined]


def test_a_rejected_order_names_the_kind_of_command_it_answers() -> None:
    engine = e.Engine(SPEC)
    rejected: set[int] = set()
    for seq, cmd in enumerate(commands(), 1):
        for i, event in enumerate(engine.execute(cmd, seq, seq * 1_000)):
            if event[0] == e.E_REJECTED:
                proto = codec.event_proto(SPEC, event, seq, i, 1, seq * 1_000, "", cmd[0])
                assert proto.order_rejected.command == cmd[0]
                rejected.add(cmd[0])
    assert {e.C_PLACE, e.C_CANCEL} <= rejected, rejected
    assert common_pb2.COMMAND_KIND_PLACE == e.C_PLACE  # one numbering, the engine's
    assert common_pb2.COMMAND_KIND_CANCEL == e.C_CANCEL
    assert common_pb2.COMMAND_KIND_CANCEL_ALL == e.C_CANCEL_ALL
    assert common_pb2.COMMAND_KIND_SET_MODE == e.C_SET_MODE
    assert common_pb2.COMMAND_KIND_FUNDING == e.C_FUNDING


def test_the_outbox_publishes_the_bytes_the_replies_encoded(tmp_path: Path) -> None:
    engine = e.Engine(SPEC)
    encoder = codec.EventEncoder(SPEC)
    entries = []
    for seq, cmd in enumerate(commands()[:40], 1):
        events = engine.execute(cmd, seq, seq * 1_000)
        entries.append((seq * 1_000, cmd, events, f"c{seq}", engine.state_hash))
    writer = wal.WalWriter(tmp_path, 1)
    writer.write(wal.encode(1, 3, entries[-1][4], entries), 1)
    writer.sync()
    writer.close()

    shared = ob.EncodedEvents()
    for seq, (ts, cmd, events, correlation_id, _) in enumerate(entries, 1):
        if seq % 2:  # as the reply path leaves them; even seqs the outbox encodes itself
            shared.put(seq, encoder.command_events(events, seq, 3, ts, correlation_id, cmd[0]))
    marker = [b"from-the-reply"] * len(entries[4][2])
    shared.take(5)
    shared.put(5, marker)
    published = ob._WalTail(tmp_path, SPEC, 1, shared).read(1 << 20)
    assert [c.seq for c in published] == list(range(1, 41))
    assert [value for _, value in published[4].events] == marker  # taken, not re-encoded
    for command, (ts, cmd, events, correlation_id, _) in zip(published, entries, strict=True):
        if command.seq != 5:
            assert [value for _, value in command.events] == encoder.command_events(
                events, command.seq, 3, ts, correlation_id, cmd[0]
            )
    assert len(shared) == 0


def test_encoded_events_are_bounded_and_dropped_once_published() -> None:
    shared = ob.EncodedEvents(limit=3)
    for seq in range(1, 6):
        shared.put(seq, [b"x"])
    assert len(shared) == 3  # the outbox lags: the rest it encodes from the WAL
    shared.drop_through(2)
    assert len(shared) == 1 and shared.take(3) == [b"x"]
    shared.put(9, [b"y"])
    shared.drop_through(8)
    assert shared.take(9) == [b"y"] and len(shared) == 0
