"""Balances per account, market and asset, projected from the core events topic.

The matcher is the risk authority: what it holds is what an account can trade with. Its
events carry every change (funding with the resulting available balance, holds on accept,
releases on cancel and expiry, settlement on trades), so replaying the topic in seq order
rebuilds exactly the matcher's available/hold. Only the feed applies events here (never
replies), in seq order per market, so nothing is applied twice.

The topic need not hold its whole history: the feed installs each market's balances from
the matcher's committed snapshot at a seq (`GetBalances`), and from then on the events at or
below that seq are already in it and are skipped here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from contracts.v1 import common_pb2, events_pb2, matcher_pb2
from workloads.gateway.markets import Market


class Balances:
    def __init__(self, markets: dict[str, Market]) -> None:
        self.markets = markets
        # account -> (symbol, asset) -> [available, hold]
        self.accounts: dict[str, dict[tuple[str, str], list[int]]] = defaultdict(dict)
        self.snapshot_seq: dict[str, int] = {}  # symbol -> seq of the installed snapshot

    def _slot(self, account: str, symbol: str, asset: str) -> list[int]:
        slots = self.accounts[account]
        slot = slots.get((symbol, asset))
        if slot is None:
            slot = slots[(symbol, asset)] = [0, 0]
        return slot

    def install(self, snapshot: matcher_pb2.BalancesSnapshot) -> None:
        """Replace a market's balances by the matcher's snapshot. The caller has applied no
        event of that market above `snapshot.seq` (it would be lost)."""
        symbol = snapshot.symbol
        for slots in self.accounts.values():
            for key in [key for key in slots if key[0] == symbol]:
                del slots[key]
        base, quote = snapshot.base_asset, snapshot.quote_asset
        for row in snapshot.accounts:
            self._slot(row.account, symbol, base)[:] = [row.base_available, row.base_hold]
            self._slot(row.account, symbol, quote)[:] = [row.quote_available, row.quote_hold]
        self.snapshot_seq[symbol] = snapshot.seq

    def apply(self, event: events_pb2.Event, envelope: common_pb2.EventEnvelope) -> None:
        if envelope.seq <= self.snapshot_seq.get(envelope.symbol, 0):
            return  # the market's snapshot holds it already
        body = event.WhichOneof("body")
        if body == "funds_credited" or body == "funds_debited":
            f = getattr(event, body)
            self._slot(f.account, f.envelope.symbol, f.asset)[0] = f.available_after
        elif body == "order_accepted":
            a = event.order_accepted
            slot = self._slot(a.account, a.envelope.symbol, a.reserved_asset)
            slot[0] -= a.reserved_amount
            slot[1] += a.reserved_amount
        elif body == "order_canceled" or body == "order_expired":
            c = getattr(event, body)
            if c.released_amount:
                slot = self._slot(c.account, c.envelope.symbol, c.released_asset)
                slot[0] += c.released_amount
                slot[1] -= c.released_amount
        elif body == "trade_executed":
            self._trade(event.trade_executed)

    def _trade(self, t: events_pb2.TradeExecuted) -> None:
        symbol = t.envelope.symbol
        fee_account = "fees"  # the matcher's MarketSpec.fee_account default
        buyer_quote = self._slot(t.buyer_account, symbol, t.quote_asset)
        buyer_quote[1] -= t.quote_amount + t.buyer_released
        buyer_quote[0] += t.buyer_released
        self._slot(t.buyer_account, symbol, t.base_asset)[0] += t.base_amount - t.buyer_fee
        self._slot(t.seller_account, symbol, t.base_asset)[1] -= t.base_amount
        self._slot(t.seller_account, symbol, t.quote_asset)[0] += t.quote_amount - t.seller_fee
        if t.buyer_fee:
            self._slot(fee_account, symbol, t.base_asset)[0] += t.buyer_fee
        if t.seller_fee:
            self._slot(fee_account, symbol, t.quote_asset)[0] += t.seller_fee

    def of(self, account: str) -> list[dict[str, Any]]:
        """Per asset: available and hold summed over markets, with the per-market split."""
        totals: dict[str, dict[str, Any]] = {}
        for (symbol, asset), (available, hold) in sorted(self.accounts.get(account, {}).items()):
            market = self.markets.get(symbol)
            if market is None:
                continue
            places = market.asset_decimals(asset)
            entry = totals.setdefault(
                asset, {"asset": asset, "available": 0, "hold": 0, "places": places, "markets": []}
            )
            entry["available"] += available
            entry["hold"] += hold
            entry["markets"].append(
                {
                    "symbol": symbol,
                    "available": market.format_amount(asset, available),
                    "hold": market.format_amount(asset, hold),
                }
            )
        out = []
        for asset, entry in sorted(totals.items()):
            places = entry.pop("places")
            scale = 10**places
            out.append(
                {
                    **entry,
                    "asset": asset,
                    "available": _fmt(entry["available"], places, scale),
                    "hold": _fmt(entry["hold"], places, scale),
                    "total": _fmt(entry["available"] + entry["hold"], places, scale),
                }
            )
        return out

    def raw(self, account: str) -> dict[tuple[str, str], tuple[int, int]]:
        return {k: (v[0], v[1]) for k, v in self.accounts.get(account, {}).items()}


def _fmt(units: int, places: int, scale: int) -> str:
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), scale)
    return f"{sign}{whole}.{frac:0{places}d}" if places else f"{sign}{whole}"
