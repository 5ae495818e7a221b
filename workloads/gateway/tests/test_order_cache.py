"""The order-status cache applies each fact once, whichever way it arrives first (the
matcher's reply or the events topic), and keeps no per-order set for it."""

from __future__ import annotations

import gc

import pytest

from contracts.v1 import common_pb2 as c
from workloads.gateway.orders import MAX_FILLS_KEPT, OrderCache
from workloads.gateway.tests.test_units import M, accepted, trade

pytestmark = pytest.mark.unit


def test_each_fact_once_in_either_order() -> None:
    cache = OrderCache({"BTC-USDT": M})
    maker, taker = (
        accepted(3, c.SIDE_SELL, 6_000_000, 30_000),
        accepted(4, c.SIDE_BUY, 6_000_000, 10_000),
    )
    first = trade(4, 1, 3, 4, 6_000_000, 10_000, 20_000, 0)
    second = trade(5, 1, 3, 9, 6_000_000, 10_000, 10_000, 0)
    # The reply of command 4 arrives before the topic has brought command 3.
    cache.apply(taker, from_feed=False)
    cache.apply(first, from_feed=False)
    cache.apply(maker, from_feed=True)
    for event in (taker, first):  # now the topic, with what the reply already applied
        cache.apply(event, from_feed=True)
    cache.apply(second, from_feed=True)
    cache.apply(second, from_feed=False)  # a late reply of something the topic brought
    resting = cache.get("BTC-USDT", 3)
    assert resting is not None and resting.filled == 20_000 and resting.remaining == 10_000
    assert resting.status == "PARTIALLY_FILLED" and len(resting.fills) == 2
    assert resting.reply_keys == ()  # the topic passed every reply fact
    taken = cache.get("BTC-USDT", 4)
    assert taken is not None and taken.status == "FILLED" and len(taken.fills) == 1


def test_a_busy_resting_order_stays_small_and_untracked() -> None:
    cache = OrderCache({"BTC-USDT": M})
    cache.apply(accepted(1, c.SIDE_SELL, 6_000_000, 10**9), from_feed=True)
    for seq in range(2, 300):
        cache.apply(
            trade(seq, 1, 1, seq, 6_000_000, 10_000, 10**9 - seq * 10_000, 0), from_feed=True
        )
    order = cache.get("BTC-USDT", 1)
    assert order is not None and len(order.fills) == MAX_FILLS_KEPT
    assert order.filled == 298 * 10_000
    gc.collect()
    gc.collect()  # a tuple is untracked once its items are: they may go first
    assert not gc.is_tracked(order.fills) and not gc.is_tracked(order.reply_keys)
