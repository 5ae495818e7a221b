"""A market's specification: assets, integer scales, limits and fees.

Units, fixed for the whole engine (no floats anywhere on the money path):
- quantity: base-asset minor units (satoshi for BTC), a positive multiple of `lot_size`.
- price: quote-asset minor units per lot, a positive multiple of `tick_size`.
- notional of `q` at price `p`: `p * q // lot_size` quote minor units, exact because `q`
  is a multiple of `lot_size`.
The gateway converts decimal strings to these units at the edge.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

INT64_MAX = (1 << 63) - 1


class SpecError(ValueError):
    """The market specification is inconsistent; the message names the field."""


@dataclass(frozen=True, slots=True)
class MarketSpec:
    symbol: str
    base_asset: str
    quote_asset: str
    lot_size: int = 1
    """Base minor units per lot: the quantity increment."""
    tick_size: int = 1
    """Quote minor units per lot: the price increment."""
    max_price: int = 10**12
    """Largest price accepted; with `max_lots` it bounds every notional below 2**63."""
    max_lots: int = 10**6
    """Largest order size in lots."""
    price_band_bps: int = 0
    """Limit prices must lie within this many basis points of the reference price
    (the last trade, else `reference_price`); 0 disables the band."""
    reference_price: int = 0
    """Reference price before the first trade; 0 means no band until a trade happens."""
    max_open_orders: int = 1000
    """Resting orders per account."""
    rate_limit: int = 0
    """Commands per account per `rate_window_ns` of sequencer time; 0 disables."""
    rate_window_ns: int = 1_000_000_000
    maker_fee_bps: int = 0
    taker_fee_bps: int = 0
    fee_account: str = "fees"
    """System account that receives fees (allowed to be the only non-trader account)."""
    idempotency_window: int = 1_000_000
    """How many (account, client order id) results are remembered; the oldest is forgotten
    first, deterministically, so the window is part of the replicated state."""

    def __post_init__(self) -> None:
        for name in ("lot_size", "tick_size", "max_price", "max_lots", "rate_window_ns"):
            if getattr(self, name) <= 0:
                raise SpecError(f"{name} must be positive, got {getattr(self, name)}")
        for name in (
            "price_band_bps",
            "reference_price",
            "max_open_orders",
            "rate_limit",
            "maker_fee_bps",
            "taker_fee_bps",
        ):
            if getattr(self, name) < 0:
                raise SpecError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.maker_fee_bps > 10_000 or self.taker_fee_bps > 10_000:
            raise SpecError("fees above 10000 bps (100%) make no sense")
        if self.max_price * self.max_lots > INT64_MAX // 2:
            raise SpecError("max_price * max_lots must stay below 2**62 so notionals fit int64")
        if self.max_lots * self.lot_size > INT64_MAX // 2:
            raise SpecError("max_lots * lot_size must stay below 2**62")
        if not self.symbol or self.base_asset == self.quote_asset:
            raise SpecError("a market needs a symbol and two different assets")

    @classmethod
    def from_env(cls, prefix: str = "MATCHER_MARKET_") -> MarketSpec:
        """Read the spec from `MATCHER_MARKET_SYMBOL`, `..._BASE`, `..._QUOTE`, `..._LOT_SIZE`..."""
        env = os.environ
        ints = {}
        for name in cls.__dataclass_fields__:
            key = prefix + name.upper()
            if name in ("symbol", "base_asset", "quote_asset", "fee_account") or key not in env:
                continue
            try:
                ints[name] = int(env[key])
            except ValueError:
                raise SpecError(f"{key}={env[key]!r} is not an integer") from None
        symbol = env.get(prefix + "SYMBOL", "BTC-USDT")
        base, _, quote = symbol.partition("-")
        return cls(
            symbol=symbol,
            base_asset=env.get(prefix + "BASE_ASSET", base),
            quote_asset=env.get(prefix + "QUOTE_ASSET", quote or "USDT"),
            fee_account=env.get(prefix + "FEE_ACCOUNT", "fees"),
            **ints,
        )
