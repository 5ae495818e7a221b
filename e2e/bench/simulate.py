"""Realistic matcher event streams, made by the real matcher engine in process.

For tests, the stress script and benchmarks: commands go through `workloads.matcher.engine`
and `codec.event_proto`, so the events (ids, seqs, amounts, fees, price improvement) are
exactly what a matcher would publish, and the engine's own balances and reservations are
the reference the ledger must agree with.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from contracts.v1 import events_pb2
from workloads.matcher import codec
from workloads.matcher import engine as e
from workloads.matcher.spec import MarketSpec


@dataclass
class Simulator:
    """One market's engine; `run` turns commands into published events."""

    spec: MarketSpec
    epoch: int = 1
    engine: e.Engine = field(init=False)
    ts: int = 1_700_000_000_000_000_000

    def __post_init__(self) -> None:
        self.engine = e.Engine(self.spec)

    def run(self, commands: list[tuple[Any, ...]]) -> list[events_pb2.Event]:
        out: list[events_pb2.Event] = []
        for cmd in commands:
            seq = self.engine.seq + 1
            self.ts += 1000
            events = self.engine.execute(cmd, seq, self.ts)
            out.extend(
                codec.event_proto(self.spec, ev, seq, i, self.epoch, self.ts, f"sim-{seq}", cmd[0])
                for i, ev in enumerate(events)
            )
        return out

    def start_epoch(self, epoch: int) -> list[events_pb2.Event]:
        previous, self.epoch = self.engine.epoch, epoch
        return self.run([(e.C_EPOCH, epoch, previous, "simulator")])

    def balances(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(account, asset) -> (available, hold) as the engine has them."""
        base, quote = self.spec.base_asset, self.spec.quote_asset
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for account, (ab, hb, aq, hq) in self.engine.balances.items():
            out[(account, base)] = (ab, hb)
            out[(account, quote)] = (aq, hq)
        return out


def funding(accounts: list[str], spec: MarketSpec, amount: int) -> list[tuple[Any, ...]]:
    """Credit every account with `amount` of both assets."""
    return [
        (e.C_FUNDING, f"fund-{spec.symbol}-{a}-{asset}", a, asset, amount, e.CREDIT)
        for a in accounts
        for asset in (spec.base_asset, spec.quote_asset)
    ]


def random_commands(
    rng: random.Random, accounts: list[str], count: int, mid: int = 1000
) -> Iterator[tuple[Any, ...]]:
    """A trading mix: limit orders around `mid` (some crossing), IOC, MARKET, cancels."""
    live: list[tuple[int, str]] = []
    for n in range(count):
        roll = rng.random()
        account = rng.choice(accounts)
        side = e.BUY if rng.random() < 0.5 else e.SELL
        if live and roll < 0.2:
            order_id, owner = live.pop(rng.randrange(len(live)))
            yield (e.C_CANCEL, owner, order_id, "")
        elif roll < 0.75:
            offset = rng.randrange(-5, 20)
            price = mid - offset if side == e.BUY else mid + offset
            yield (
                e.C_PLACE,
                account,
                f"c{n}",
                side,
                e.LIMIT,
                e.GTC,
                max(price, 1),
                rng.randrange(1, 8),
                False,
                0,
            )
        elif roll < 0.88:
            price = mid + 3 if side == e.BUY else mid - 3
            yield (
                e.C_PLACE,
                account,
                f"c{n}",
                side,
                e.LIMIT,
                e.IOC,
                price,
                rng.randrange(1, 8),
                False,
                0,
            )
        elif roll < 0.96:
            budget = rng.choice((0, rng.randrange(500, 20_000))) if side == e.BUY else 0
            yield (
                e.C_PLACE,
                account,
                f"c{n}",
                side,
                e.MARKET,
                e.IOC,
                0,
                rng.randrange(1, 6),
                False,
                budget,
            )
        else:
            yield (e.C_CANCEL_ALL, account)


def trade_heavy(spec: MarketSpec, makers: int, takers: int, trades: int) -> list[events_pb2.Event]:
    """A stream where most events settle trades: makers rest large orders, takers hit them
    with small IOC orders (2 events per trade: the taker's accept and the trade)."""
    sim = Simulator(spec)
    accounts = [f"m{i}" for i in range(makers)] + [f"t{i}" for i in range(takers)]
    events = sim.start_epoch(1)
    events += sim.run(funding(accounts, spec, 10**15))
    rng = random.Random(11)
    made = 0
    n = 0
    while made < trades:
        batch: list[tuple[Any, ...]] = []
        for i in range(makers):  # replenish the book: each maker one big sell and buy
            n += 1
            batch.append(
                (e.C_PLACE, f"m{i}", f"ms{n}", e.SELL, e.LIMIT, e.GTC, 1001, 10_000, False, 0)
            )
            batch.append(
                (e.C_PLACE, f"m{i}", f"mb{n}", e.BUY, e.LIMIT, e.GTC, 999, 10_000, False, 0)
            )
        for _ in range(min(trades - made, makers * 10_000)):
            n += 1
            side = e.BUY if rng.random() < 0.5 else e.SELL
            price = 1001 if side == e.BUY else 999
            batch.append(
                (
                    e.C_PLACE,
                    f"t{rng.randrange(takers)}",
                    f"t{n}",
                    side,
                    e.LIMIT,
                    e.IOC,
                    price,
                    1,
                    False,
                    0,
                )
            )
            made += 1
        events += sim.run(batch)
    return events


def body(event: events_pb2.Event) -> Any:
    kind = event.WhichOneof("body")
    assert kind is not None
    return getattr(event, kind)


async def publish(
    bootstrap: str, topic: str, events: list[events_pb2.Event], per_txn: int = 200
) -> None:
    """Publish events as the matcher's outbox does: keyed by market, in Kafka transactions."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"simulate-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        for start in range(0, len(events), per_txn):
            async with producer.transaction():
                for ev in events[start : start + per_txn]:
                    kind = ev.WhichOneof("body")
                    assert kind is not None
                    await producer.send(
                        topic,
                        ev.SerializeToString(),
                        key=getattr(ev, kind).envelope.symbol.encode(),
                        headers=[("type", kind.encode())],
                    )
    finally:
        await producer.stop()
