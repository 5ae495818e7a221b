"""Unit tests of the gateway's pure parts: decimal conversion, signing, the book with its
checksum and diffs, candles and ticker, the order cache, batching and settings."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import pytest

from contracts.v1 import common_pb2 as c
from contracts.v1 import events_pb2 as ev
from contracts.v1 import matcher_pb2
from workloads.gateway import auth
from workloads.gateway.batching import MicroBatcher
from workloads.gateway.book import Book
from workloads.gateway.candles import MINUTE_MS, CandleSeries
from workloads.gateway.errors import REJECT_CODES, ApiError, reject_code
from workloads.gateway.hub import close_frame, text_frame
from workloads.gateway.marketdata import Projection
from workloads.gateway.markets import Market, MarketError, NotRepresentable, parse_markets
from workloads.gateway.settings import GatewaySettings, SettingsError

pytestmark = pytest.mark.unit
M = Market("BTC-USDT", "BTC", "USDT")


def env(
    symbol: str = "BTC-USDT", seq: int = 1, index: int = 0, epoch: int = 1, ms: int = 0
) -> c.EventEnvelope:
    return c.EventEnvelope(
        event_id=f"{symbol}:{seq}:{index}",
        symbol=symbol,
        seq=seq,
        epoch=epoch,
        occurred_at=ms * 1_000_000,
    )


def accepted(
    seq: int,
    side: Any,
    price: int,
    qty: int,
    account: str = "a",
    tif: Any = c.TIME_IN_FORCE_GTC,
    epoch: int = 1,
) -> ev.Event:
    reserved = price * qty // M.lot_size if side == c.SIDE_BUY else qty
    return ev.Event(
        order_accepted=ev.OrderAccepted(
            envelope=env(seq=seq, epoch=epoch),
            order_id=str(seq),
            account=account,
            side=side,
            order_type=c.ORDER_TYPE_LIMIT,
            time_in_force=tif,
            price=price,
            quantity=qty,
            reserved_asset="USDT" if side == c.SIDE_BUY else "BTC",
            reserved_amount=reserved,
        )
    )


def trade(
    seq: int,
    index: int,
    maker: int,
    taker: int,
    price: int,
    qty: int,
    mrem: int,
    trem: int,
    taker_side: Any = c.SIDE_BUY,
    ms: int = 0,
) -> ev.Event:
    return ev.Event(
        trade_executed=ev.TradeExecuted(
            envelope=env(seq=seq, index=index, ms=ms),
            trade_id=str(seq * 10 + index),
            price=price,
            quantity=qty,
            taker_side=taker_side,
            maker_order_id=str(maker),
            taker_order_id=str(taker),
            maker_account="m",
            taker_account="t",
            buyer_account="t" if taker_side == c.SIDE_BUY else "m",
            seller_account="m" if taker_side == c.SIDE_BUY else "t",
            base_asset="BTC",
            quote_asset="USDT",
            base_amount=qty,
            quote_amount=price * qty // M.lot_size,
            maker_remaining=mrem,
            taker_remaining=trem,
        )
    )


def test_decimal_conversion_is_exact_and_refuses_what_is_not_a_step() -> None:
    assert M.quantity_units("0.0100") == 1_000_000 and M.format_quantity(1_000_000) == "0.0100"
    assert M.price_units("60000.00") == 6_000_000 and M.format_price(6_000_000) == "60000.00"
    assert M.price_units("0.01") == 1 and M.quote_units("1.5") == 1_500_000
    for bad, code in (
        ("0.00015", "quantity_not_on_lot"),
        ("-1", "invalid_quantity"),
        ("1e3", "invalid_quantity"),
        ("abc", "invalid_quantity"),
        ("0", "invalid_quantity"),
        (" 1", "invalid_quantity"),
    ):
        with pytest.raises(NotRepresentable) as refused:
            M.quantity_units(bad)
        assert refused.value.code == code, bad
    with pytest.raises(NotRepresentable) as refused:
        M.price_units("60000.001")
    assert refused.value.code == "price_not_on_tick"
    with pytest.raises(MarketError):
        Market("X-Y", "X", "Y", lot_size=3, base_decimals=0, quote_decimals=0)
    assert parse_markets("")[0].symbol == "BTC-USDT"
    with pytest.raises(MarketError):
        parse_markets('[{"symbol": "A-B", "bogus": 1}]')
    assert M.matcher_env()["MATCHER_MARKET_LOT_SIZE"] == "10000"


def test_signature_covers_method_path_timestamp_and_body() -> None:
    sig = auth.sign("s3cret", "post", "/v1/orders", "1700000000000", b'{"a":1}')
    assert sig == auth.sign("s3cret", "POST", "/v1/orders", "1700000000000", b'{"a":1}')
    for changed in (
        ("GET", "/v1/orders", "1700000000000", b'{"a":1}'),
        ("POST", "/v1/order", "1700000000000", b'{"a":1}'),
        ("POST", "/v1/orders", "1700000000001", b'{"a":1}'),
        ("POST", "/v1/orders", "1700000000000", b'{"a":2}'),
    ):
        assert auth.sign("s3cret", *changed) != sig
    auth.check_timestamp("1000", 30_000, 30)
    with pytest.raises(ApiError) as stale:
        auth.check_timestamp("1000", 31_001, 30)
    assert stale.value.code == "stale_timestamp"


def test_reject_reasons_map_one_to_one_to_codes() -> None:
    assert reject_code(c.REJECT_REASON_INSUFFICIENT_FUNDS) == "insufficient_funds"
    assert len(set(REJECT_CODES.values())) == len(REJECT_CODES)


def test_book_levels_diffs_and_checksum() -> None:
    book = Book(M)
    book.apply(accepted(1, c.SIDE_SELL, 6_000_000, 300_000))
    book.apply(accepted(2, c.SIDE_SELL, 6_000_100, 100_000))
    first = book.take_diff()
    assert first is not None and first["asks"] == [["60000.00", "0.0030"], ["60001.00", "0.0010"]]
    # A GTC buy of 4 lots takes 3 at 60000.00 and rests 1 at 60000.50.
    book.apply(accepted(3, c.SIDE_BUY, 6_000_050, 400_000, account="t"))
    book.apply(trade(3, 1, 1, 3, 6_000_000, 300_000, 0, 100_000))
    diff = book.take_diff()
    assert diff is not None and diff["prev_seq"] == 2 and diff["seq"] == 3
    assert diff["asks"] == [["60000.00", "0.0000"]] and diff["bids"] == [["60000.50", "0.0010"]]
    book.apply(
        ev.Event(
            order_canceled=ev.OrderCanceled(
                envelope=env(seq=4),
                order_id="2",
                canceled_quantity=100_000,
                cause=ev.CANCEL_CAUSE_USER,
            )
        )
    )
    snapshot = book.snapshot()
    assert snapshot["asks"] == [] and snapshot["bids"] == [["60000.50", "0.0010"]]
    text = "60000.50:0.0010|"
    assert snapshot["checksum"] == zlib.crc32(text.encode())
    book.apply(
        ev.Event(
            order_canceled=ev.OrderCanceled(
                envelope=env(seq=5),
                order_id="77",
                canceled_quantity=10_000,
                cause=ev.CANCEL_CAUSE_USER,
            )
        )
    )
    assert book.needs_resync  # an order it never saw: ask the matcher for a snapshot


def test_candles_order_by_seq_finalize_at_boundaries_and_count_late_trades() -> None:
    series = CandleSeries(M)
    base = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE_MS
    series.add((5, 0), base + 1_000, 200, 10_000, 2_000)
    series.add((3, 0), base + 2_000, 100, 10_000, 1_000)  # earlier seq arriving late: the open
    assert series.add((3, 0), base + 2_000, 100, 10_000, 1_000) == []  # a duplicate
    candle = series.candles[base]
    assert (candle.open, candle.close, candle.high, candle.low) == (100, 200, 200, 100)
    changed = series.add((9, 0), base + MINUTE_MS + 5, 150, 10_000, 1_500)
    assert candle.final and candle in changed
    series.add((4, 0), base + 30_000, 90, 10_000, 900)  # late trade for a final candle
    assert candle.revision == 1 and candle.low == 90 and candle.trades == 3
    ticker = series.ticker(base + 2 * MINUTE_MS)
    assert ticker["open"] == "1.00" and ticker["last_price"] == "1.50" and ticker["trades"] == 4
    assert series.tick(base + 3 * MINUTE_MS + 5_000)[0].start == base + MINUTE_MS


def test_projection_orders_balances_and_epoch_fencing() -> None:
    projection = Projection({"BTC-USDT": M})
    funds = ev.Event(
        funds_credited=ev.FundsCredited(
            envelope=env(seq=1, epoch=2),
            account="t",
            asset="USDT",
            amount=10**9,
            available_after=10**9,
        )
    )
    assert projection.apply_feed(funds)
    stale = ev.Event(
        funds_credited=ev.FundsCredited(
            envelope=env(seq=2, epoch=1), account="t", asset="USDT", amount=5, available_after=5
        )
    )
    assert not projection.apply_feed(stale)  # a deposed leader's event: dropped
    assert not projection.apply_feed(funds)  # already applied
    sell = accepted(3, c.SIDE_SELL, 6_000_000, 20_000, account="m", epoch=2)
    buy = accepted(4, c.SIDE_BUY, 6_000_000, 10_000, account="t", epoch=2)
    for event in (sell, buy):
        event.order_accepted.envelope.epoch = 2
        projection.apply_feed(event)
    fill = trade(4, 1, 3, 4, 6_000_000, 10_000, 10_000, 0)
    fill.trade_executed.envelope.epoch = 2
    projection.apply_feed(fill)
    projection.orders.apply(fill, from_feed=False)  # the same fact again (from a reply)
    maker = projection.orders.get("BTC-USDT", 3)
    assert maker is not None and maker.status == "PARTIALLY_FILLED" and maker.filled == 10_000
    taker = projection.orders.get("BTC-USDT", 4)
    assert taker is not None and taker.status == "FILLED"
    usdt = projection.balances.raw("t")[("BTC-USDT", "USDT")]
    assert usdt == (10**9 - 6_000_000, 0)


def test_a_balance_snapshot_replaces_the_market_and_absorbs_the_events_at_or_below_it() -> None:
    projection = Projection({"BTC-USDT": M})
    for seq, account in ((1, "t"), (2, "gone")):
        projection.apply_feed(
            ev.Event(
                funds_credited=ev.FundsCredited(
                    envelope=env(seq=seq), account=account, asset="USDT", available_after=7
                )
            )
        )
    projection.balances.install(
        matcher_pb2.BalancesSnapshot(
            symbol="BTC-USDT",
            seq=3,
            base_asset="BTC",
            quote_asset="USDT",
            accounts=[matcher_pb2.AccountBalance(account="t", base_hold=5, quote_available=100)],
        )
    )
    snapshot = {("BTC-USDT", "BTC"): (0, 5), ("BTC-USDT", "USDT"): (100, 0)}
    assert projection.balances.raw("t") == snapshot
    assert projection.balances.raw("gone") == {}
    buy = accepted(3, c.SIDE_BUY, 1, 10_000, account="t")  # in the snapshot already
    assert projection.apply_feed(buy)  # the order cache and book still take it
    assert projection.balances.raw("t")[("BTC-USDT", "USDT")] == (100, 0)
    projection.apply_feed(accepted(4, c.SIDE_BUY, 1, 10_000, account="t"))  # above: applied
    assert projection.balances.raw("t")[("BTC-USDT", "USDT")] == (99, 1)


async def test_batcher_coalesces_and_hands_each_caller_its_result() -> None:
    calls: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0)
        return [i * 2 for i in items]

    batcher = MicroBatcher[int, int]("t", double, window=0.002, max_size=50)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(120)))
    assert results == [i * 2 for i in range(120)]
    assert len(calls) <= 4 and max(len(c) for c in calls) == 50

    async def broken(items: list[int]) -> list[int]:
        raise RuntimeError("down")

    failing = MicroBatcher[int, int]("f", broken, window=0.001)
    with pytest.raises(RuntimeError):
        await failing.submit(1)


def test_frames_and_settings() -> None:
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert close_frame(4008, "slow")[:4] == b"\x88\x06\x0f\xa8"
    settings = GatewaySettings.from_env(
        {"EDGE_API_SECRETS": "k1:s1,k2:s2", "EDGE_WS_ALLOWED_ORIGINS": "https://a.example/"}
    )
    assert settings.auth.api_secrets == {"k1": "s1", "k2": "s2"}
    assert settings.ws.allowed_origins == frozenset({"https://a.example"})
    for bad in (
        {"EDGE_AUTH_SKEW_SEC": "x"},
        {"EDGE_API_SECRETS": "nosecret"},
        {"EDGE_DISABLE_CORE": "maybe"},
        {"EDGE_MARKETS": "[{]"},
    ):
        with pytest.raises(SettingsError):
            GatewaySettings.from_env(bad)


def test_the_document_publishes_what_the_validators_enforce() -> None:
    """One vocabulary: the place-order schema has exactly the validator's fields and enums,
    and a body outside it is refused by the validator too."""
    from workloads.gateway import openapi, vocabulary
    from workloads.gateway.views_orders import place_request

    place = openapi.PLACE
    assert set(place["properties"]) == vocabulary.ORDER_FIELDS
    assert place["required"] == list(vocabulary.ORDER_REQUIRED)
    assert place["properties"]["side"]["enum"] == list(vocabulary.SIDES)
    body = {"symbol": "BTC-USDT", "side": "BUY", "price": "1.00", "quantity": "0.0001"}
    assert place_request(body, M, "a", "k").side == c.SIDE_BUY
    too_long = "x" * (vocabulary.CLIENT_ORDER_ID_MAX + 1)
    for bad in ({**body, "side": "HOLD"}, {**body, "colour": "red"},
                {**body, "client_order_id": too_long}):  # fmt: skip
        with pytest.raises(ApiError):
            place_request(bad, M, "a", "k")
