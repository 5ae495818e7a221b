"""The gRPC edge: typed rejects for bad input (state unchanged), fencing, idempotency, queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from contracts.v1 import common_pb2 as c
from contracts.v1 import funding_pb2, matcher_pb2, matcher_pb2_grpc
from e2e.env.process import free_port
from workloads.matcher import engine as e
from workloads.matcher.epoch import FileEpoch
from workloads.matcher.sequencer import Sequencer, SequencerSettings
from workloads.matcher.service import MAX_BATCH, MatcherService
from workloads.matcher.spec import MarketSpec

pytestmark = pytest.mark.unit

SPEC = MarketSpec("BTC-USDT", "BTC", "USDT", lot_size=10, tick_size=5, max_lots=1_000)


@dataclass
class Harness:
    stub: matcher_pb2_grpc.MatcherStub
    sequencer: Sequencer
    fencing: FileEpoch

    async def fund(self, account: str, asset: str, amount: int) -> None:
        reply = await self.stub.ApplyFunding(
            funding_pb2.FundingCommand(
                funding_id=f"{account}-{asset}-{amount}",
                account=account,
                asset=asset,
                amount=amount,
                direction=funding_pb2.FUNDING_DIRECTION_CREDIT,
            )
        )
        assert reply.status == matcher_pb2.COMMAND_STATUS_ACCEPTED


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    fencing = FileEpoch(tmp_path / "epoch", "test-instance")
    epoch = await fencing.acquire()
    sequencer = Sequencer(e.Engine(SPEC), tmp_path, epoch, fencing, SequencerSettings())
    sequencer.start()
    server = grpc.aio.server()
    matcher_pb2_grpc.add_MatcherServicer_to_server(
        MatcherService(SPEC, sequencer, lambda: 0), server
    )
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield Harness(matcher_pb2_grpc.MatcherStub(channel), sequencer, fencing)
    await channel.close()
    await server.stop(None)
    await sequencer.close()


def order(**overrides: object) -> matcher_pb2.PlaceOrderRequest:
    fields: dict[str, object] = {
        "symbol": "BTC-USDT",
        "account": "alice",
        "client_order_id": "o-1",
        "side": c.SIDE_BUY,
        "order_type": c.ORDER_TYPE_LIMIT,
        "time_in_force": c.TIME_IN_FORCE_GTC,
        "price": 100,
        "quantity": 50,
    }
    fields.update(overrides)
    return matcher_pb2.PlaceOrderRequest(**fields)  # type: ignore[arg-type]


async def test_accepted_order_carries_seq_epoch_and_envelope(harness: Harness) -> None:
    await harness.fund("alice", "USDT", 1_000_000)
    reply = await harness.stub.PlaceOrder(order(correlation_id="req-1"))
    assert reply.status == matcher_pb2.COMMAND_STATUS_ACCEPTED
    assert reply.epoch == 1 and reply.seq == 2 and reply.order_id == "2"
    accepted = reply.events[0].order_accepted
    assert accepted.envelope.seq == 2 and accepted.envelope.epoch == 1
    assert accepted.envelope.correlation_id == "req-1"
    assert accepted.reserved_asset == "USDT" and accepted.reserved_amount == 100 * 5
    assert harness.sequencer.durable_seq >= reply.seq, "replied before the WAL was durable"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"symbol": "DOGE-USDT"}, c.REJECT_REASON_UNKNOWN_MARKET),
        ({"quantity": 0}, c.REJECT_REASON_INVALID_QUANTITY),
        ({"quantity": -10}, c.REJECT_REASON_INVALID_QUANTITY),
        ({"quantity": 2**62}, c.REJECT_REASON_INVALID_QUANTITY),
        ({"quantity": 15}, c.REJECT_REASON_QUANTITY_NOT_ON_LOT),
        ({"price": 103}, c.REJECT_REASON_PRICE_NOT_ON_TICK),
        ({"price": 2**62}, c.REJECT_REASON_INVALID_PRICE),
        ({"side": 9}, c.REJECT_REASON_UNKNOWN_SIDE),
        ({"order_type": 42}, c.REJECT_REASON_UNKNOWN_ORDER_TYPE),
        ({"time_in_force": 17}, c.REJECT_REASON_UNKNOWN_TIME_IN_FORCE),
        ({"account": ""}, c.REJECT_REASON_INVALID_ACCOUNT),
        ({"client_order_id": "x" * 65}, c.REJECT_REASON_INVALID_CLIENT_ORDER_ID),
    ],
)
async def test_bad_input_gets_a_typed_reject_and_changes_nothing(
    harness: Harness, overrides: dict[str, object], reason: int
) -> None:
    await harness.fund("alice", "USDT", 1_000_000)
    engine = harness.sequencer.engine
    before = (engine.seq, engine.state_hash, engine.to_state())
    reply = await harness.stub.PlaceOrder(order(**overrides))
    assert reply.status == matcher_pb2.COMMAND_STATUS_REJECTED
    assert reply.reject_reason == reason
    assert (engine.seq, engine.state_hash, engine.to_state()) == before


async def test_oversized_batch_is_refused_whole(harness: Harness) -> None:
    batch = matcher_pb2.CommandBatch(
        commands=[
            matcher_pb2.Command(place_order=order(client_order_id=f"b{i}"))
            for i in range(MAX_BATCH + 1)
        ]
    )
    engine = harness.sequencer.engine
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.stub.SubmitBatch(batch)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "BATCH_TOO_LARGE" in str(refused.value.details())
    assert engine.seq == 0


async def test_batch_mixes_refused_and_sequenced_commands_in_order(harness: Harness) -> None:
    await harness.fund("alice", "USDT", 1_000_000)
    batch = matcher_pb2.CommandBatch(
        commands=[
            matcher_pb2.Command(place_order=order(client_order_id="good-1")),
            matcher_pb2.Command(place_order=order(client_order_id="bad", price=7)),
            matcher_pb2.Command(place_order=order(client_order_id="good-2", price=95)),
            matcher_pb2.Command(
                cancel_order=matcher_pb2.CancelOrderRequest(
                    symbol="BTC-USDT", account="alice", order_id="2"
                )
            ),
        ]
    )
    reply = await harness.stub.SubmitBatch(batch)
    statuses = [r.status for r in reply.replies]
    assert statuses == [1, 2, 1, 1]
    assert [r.seq for r in reply.replies] == [2, 0, 3, 4]
    assert reply.replies[1].reject_reason == c.REJECT_REASON_PRICE_NOT_ON_TICK


async def test_retry_with_same_client_order_id_returns_the_original(harness: Harness) -> None:
    await harness.fund("alice", "USDT", 1_000_000)
    first = await harness.stub.PlaceOrder(order(client_order_id="same"))
    again = await harness.stub.PlaceOrder(order(client_order_id="same", price=200))
    assert again.status == matcher_pb2.COMMAND_STATUS_DUPLICATE
    assert (again.seq, again.order_id) == (first.seq, first.order_id)
    assert harness.sequencer.engine.seq == first.seq, "a duplicate must not be sequenced"
    book = await harness.stub.GetOrderBook(
        matcher_pb2.GetOrderBookRequest(symbol="BTC-USDT", depth=5)
    )
    assert [(lvl.price, lvl.quantity, lvl.orders) for lvl in book.bids] == [(100, 50, 1)]
    assert book.seq == first.seq


async def test_not_leader_fails_with_failed_precondition(harness: Harness) -> None:
    harness.fencing.epoch = 0  # lost leadership
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.stub.PlaceOrder(order())
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == "NOT_LEADER"


async def test_status_reports_seq_epoch_mode_hash_and_durability(harness: Harness) -> None:
    await harness.fund("alice", "USDT", 1_000)
    mode = await harness.stub.SetSymbolMode(
        matcher_pb2.SetSymbolModeRequest(
            symbol="BTC-USDT", mode=c.SYMBOL_MODE_CANCEL_ONLY, reason="drill"
        )
    )
    assert mode.status == matcher_pb2.COMMAND_STATUS_ACCEPTED
    status = await harness.stub.GetStatus(matcher_pb2.GetStatusRequest(symbol="BTC-USDT"))
    assert (status.seq, status.epoch, status.mode) == (2, 1, c.SYMBOL_MODE_CANCEL_ONLY)
    assert status.last_durable_seq == 2 and status.leader
    assert len(status.state_hash) == 8
    rejected = await harness.stub.PlaceOrder(order())
    assert rejected.reject_reason == c.REJECT_REASON_MARKET_CANCEL_ONLY
    unknown_mode = c.SymbolMode.ValueType(99)
    bad_mode = await harness.stub.SetSymbolMode(
        matcher_pb2.SetSymbolModeRequest(symbol="BTC-USDT", mode=unknown_mode)
    )
    assert bad_mode.reject_reason == c.REJECT_REASON_INVALID_MODE


async def test_balances_are_a_committed_snapshot_that_conserves_funds(harness: Harness) -> None:
    await harness.fund("alice", "USDT", 1_000_000)
    await harness.fund("bob", "BTC", 1_000)
    sell = order(account="bob", client_order_id="s1", side=c.SIDE_SELL, quantity=30)
    assert (await harness.stub.PlaceOrder(sell)).status == matcher_pb2.COMMAND_STATUS_ACCEPTED
    await harness.stub.PlaceOrder(order(client_order_id="b1", quantity=50))  # 30 fill, 20 rest
    snapshot = await harness.stub.GetBalances(matcher_pb2.GetBalancesRequest(symbol="BTC-USDT"))
    status = await harness.stub.GetStatus(matcher_pb2.GetStatusRequest(symbol="BTC-USDT"))
    assert snapshot.seq == status.seq == 4 and snapshot.seq <= status.committed_seq
    assert (snapshot.base_asset, snapshot.quote_asset, snapshot.epoch) == ("BTC", "USDT", 1)
    rows = {a.account: a for a in snapshot.accounts}
    assert sum(a.base_available + a.base_hold for a in rows.values()) == 1_000
    assert sum(a.quote_available + a.quote_hold for a in rows.values()) == 1_000_000
    assert rows["alice"].quote_hold == 2 * 100  # 20 base units rest: 2 lots at 100
    assert rows["alice"].base_available == 30 and rows["bob"].quote_available == 3 * 100
    held = await harness.stub.GetReservations(matcher_pb2.GetReservationsRequest(symbol="BTC-USDT"))
    assert {a.account: (a.base_hold, a.quote_hold) for a in held.accounts} == {
        name: (r.base_hold, r.quote_hold) for name, r in rows.items() if r.base_hold or r.quote_hold
    }
    assert list(rows) == sorted(rows) and all(
        any((r.base_available, r.base_hold, r.quote_available, r.quote_hold)) for r in rows.values()
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.stub.GetBalances(matcher_pb2.GetBalancesRequest(symbol="ETH-USDT"))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reservations_report_what_open_orders_hold(harness: Harness) -> None:
    await harness.fund("alice", "USDT", 1_000_000)
    await harness.stub.PlaceOrder(order(client_order_id="r1", price=100, quantity=50))
    await harness.stub.PlaceOrder(order(client_order_id="r2", price=90, quantity=20))
    held = await harness.stub.GetReservations(matcher_pb2.GetReservationsRequest(symbol="BTC-USDT"))
    assert held.seq == 3 and held.quote_asset == "USDT"
    assert [(a.account, a.base_hold, a.quote_hold, a.open_orders) for a in held.accounts] == [
        ("alice", 0, 100 * 5 + 90 * 2, 2)
    ]
