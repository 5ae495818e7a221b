"""The market catalogue and the conversion between JSON decimal strings and matcher units.

Units are the matcher's (see workloads/matcher/spec.py): a quantity is base minor units
(a multiple of `lot_size`), a price is quote minor units *per lot* (a multiple of
`tick_size`). A decimal price P (quote per one whole base unit) is therefore
`P * 10**quote_decimals * lot_size / 10**base_decimals` per lot. Conversions are exact
(integers for a plain `123.45`, else Fraction, which also words the refusal); a decimal
that is not a whole number of steps is refused, never rounded.

`EDGE_MARKETS` is a JSON array of objects with the fields of `Market` (`matcher` is the
leader's gRPC `host:port`; without it the market is a sample market). `matcher_env()`
gives the `MATCHER_MARKET_*` variables that keep a matcher consistent with this catalogue.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any


class MarketError(ValueError):
    """The catalogue is inconsistent; the message names the market and field."""


class NotRepresentable(ValueError):
    """A decimal string that is not a whole number of the market's steps.

    `code` is the gateway error code (the matcher's reject reason for the same mistake).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _steps_decimals(step: Fraction) -> int:
    """Decimal places needed to write multiples of `step` exactly; raises if infinite."""
    den = step.denominator
    places = 0
    while den % 10 == 0:
        den //= 10
        places += 1
    while den % 2 == 0 or den % 5 == 0:
        den //= 2 if den % 2 == 0 else 5
        places += 1
    if den != 1:
        raise MarketError(f"step {step} has no finite decimal form")
    return places


@dataclass(frozen=True)
class Market:
    symbol: str
    base_asset: str
    quote_asset: str
    base_decimals: int = 8
    """Minor units per whole base unit, as a power of ten (8: satoshi)."""
    quote_decimals: int = 6
    lot_size: int = 10_000
    """Base minor units per lot (10,000 sat = 0.0001 BTC)."""
    tick_size: int = 1
    """Quote minor units per lot per price step (with the defaults: 0.01 USDT per BTC)."""
    max_price: int = 10**12
    max_lots: int = 10**6
    price_band_bps: int = 0
    """Limit prices within this many basis points of the last trade (the matcher's band);
    0: none."""
    matcher: str = ""
    """The matcher's gRPC target; empty: a sample market (no orders, sample data only)."""

    def __post_init__(self) -> None:
        if not self.symbol or len(self.symbol) > 32 or "/" in self.symbol or ":" in self.symbol:
            raise MarketError(f"market symbol {self.symbol!r} is empty, too long or has / or :")
        if self.base_asset == self.quote_asset or not self.base_asset or not self.quote_asset:
            raise MarketError(f"{self.symbol}: needs two different assets")
        for name in ("lot_size", "tick_size", "max_price", "max_lots"):
            if getattr(self, name) <= 0:
                raise MarketError(f"{self.symbol}: {name} must be positive")
        if not 0 <= self.price_band_bps <= 10_000:
            raise MarketError(f"{self.symbol}: price_band_bps must lie in 0..10000")
        for name in ("base_decimals", "quote_decimals"):
            if not 0 <= getattr(self, name) <= 18:
                raise MarketError(f"{self.symbol}: {name} must lie in 0..18")
        # Integer constants for formatting (Fraction is too slow for every message):
        # decimal digits of a price = units * _price_num // _price_den, at _price_places.
        qty_places = _steps_decimals(self.quantity_step)
        price_places = _steps_decimals(self.price_step)
        setattr_ = object.__setattr__
        setattr_(self, "_qty_places", qty_places)
        setattr_(self, "_qty_div", 10 ** (self.base_decimals - qty_places))
        setattr_(self, "_price_places", price_places)
        setattr_(self, "_price_num", 10 ** (self.base_decimals + price_places))
        setattr_(self, "_price_den", 10**self.quote_decimals * self.lot_size)

    # ------------------------------------------------------------------ steps

    @property
    def quantity_step(self) -> Fraction:
        return Fraction(self.lot_size, 10**self.base_decimals)

    @property
    def price_step(self) -> Fraction:
        return Fraction(self.tick_size * 10**self.base_decimals, 10**self.quote_decimals) / (
            self.lot_size
        )

    @property
    def live(self) -> bool:
        return bool(self.matcher)

    # ------------------------------------------------------------------ decimal -> units

    def quantity_units(self, text: object, field: str = "quantity") -> int:
        plain = _plain(text)
        if plain is not None:  # the common case, in integers; anything else takes Fraction
            units, rest = divmod(plain[0] * 10**self.base_decimals, 10 ** plain[1])
            largest = self.max_lots * self.lot_size
            if not rest and 0 < units <= largest and not units % self.lot_size:
                return int(units)
        value = _decimal(text, field, "invalid_quantity")
        units_f = value * 10**self.base_decimals
        if units_f <= 0 or units_f.denominator != 1 or units_f > self.max_lots * self.lot_size:
            raise NotRepresentable(
                "invalid_quantity",
                f"{field} must be positive, at most {self.max_lots} lots, and a whole number "
                f"of {self.format_quantity(self.lot_size)} steps",
            )
        if int(units_f) % self.lot_size:
            raise NotRepresentable(
                "quantity_not_on_lot",
                f"{field} must be a multiple of {self.format_quantity(self.lot_size)}",
            )
        return int(units_f)

    def price_units(self, text: object, field: str = "price") -> int:
        plain = _plain(text)
        if plain is not None:
            units, rest = divmod(
                plain[0] * 10**self.quote_decimals * self.lot_size,
                10 ** (plain[1] + self.base_decimals),
            )
            if not rest and 0 < units <= self.max_price and not units % self.tick_size:
                return int(units)
        value = _decimal(text, field, "invalid_price")
        units_f = value * 10**self.quote_decimals * self.lot_size / 10**self.base_decimals
        if units_f <= 0 or units_f > self.max_price:
            raise NotRepresentable("invalid_price", f"{field} must be positive and in range")
        if units_f.denominator != 1 or int(units_f) % self.tick_size:
            raise NotRepresentable(
                "price_not_on_tick",
                f"{field} must be a multiple of {self.format_price(self.tick_size)}",
            )
        return int(units_f)

    def quote_units(self, text: object, field: str = "quote_budget") -> int:
        return self.amount_units(self.quote_asset, text, field)

    def amount_units(self, asset: str, text: object, field: str = "amount") -> int:
        """An amount of `asset` (base or quote) in its minor units: positive and a whole
        number of them (the asset's smallest unit is 10**-decimals)."""
        places = self.asset_decimals(asset)
        value = _decimal(text, field, "invalid_amount")
        units = value * 10**places
        if units <= 0 or units.denominator != 1 or units >= 2**62:
            raise NotRepresentable(
                "invalid_amount", f"{field} must be positive with at most {places} decimals"
            )
        return int(units)

    # ------------------------------------------------------------------ units -> decimal

    def format_quantity(self, units: int) -> str:
        places: int = self._qty_places  # type: ignore[attr-defined]
        if places < self.base_decimals:
            div: int = self._qty_div  # type: ignore[attr-defined]
            if units % div:
                return _digits(units, self.base_decimals)
            units //= div
        return _digits(units, places)

    def format_price(self, units: int) -> str:
        scaled, rest = divmod(units * self._price_num, self._price_den)  # type: ignore[attr-defined]
        if rest:  # not on the tick grid (cannot come from the matcher): exact, slow path
            exact = Decimal(units * 10**self.base_decimals) / (
                10**self.quote_decimals * self.lot_size
            )
            return str(exact)
        return _digits(scaled, self._price_places)  # type: ignore[attr-defined]

    def format_amount(self, asset: str, units: int) -> str:
        places = self.base_decimals if asset == self.base_asset else self.quote_decimals
        return _digits(units, places)

    def asset_decimals(self, asset: str) -> int:
        return self.base_decimals if asset == self.base_asset else self.quote_decimals

    def describe(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "base_asset": self.base_asset,
            "quote_asset": self.quote_asset,
            "quantity_step": self.format_quantity(self.lot_size),
            "price_step": self.format_price(self.tick_size),
            "live": self.live,
        }

    def matcher_env(self) -> dict[str, str]:
        """The matcher's MATCHER_MARKET_* variables for the same market."""
        return {
            "MATCHER_MARKET_SYMBOL": self.symbol,
            "MATCHER_MARKET_BASE_ASSET": self.base_asset,
            "MATCHER_MARKET_QUOTE_ASSET": self.quote_asset,
            "MATCHER_MARKET_LOT_SIZE": str(self.lot_size),
            "MATCHER_MARKET_TICK_SIZE": str(self.tick_size),
            "MATCHER_MARKET_MAX_PRICE": str(self.max_price),
            "MATCHER_MARKET_MAX_LOTS": str(self.max_lots),
            "MATCHER_MARKET_PRICE_BAND_BPS": str(self.price_band_bps),
        }

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_PLAIN = re.compile(r"([0-9]{1,40})(?:\.([0-9]{1,40}))?")


def _plain(text: object) -> tuple[int, int] | None:
    """`"123.45"` -> (12345, 2): a plain positive decimal as digits and decimal places;
    None for anything else (the exact path decides, and words the refusal)."""
    if type(text) is not str or len(text) > 40:
        return None
    found = _PLAIN.fullmatch(text)
    if found is None:
        return None
    whole, fraction = found.groups()
    if fraction is None:
        return int(whole), 0
    return int(whole + fraction), len(fraction)


def _decimal(text: object, field: str, code: str) -> Fraction:
    if not isinstance(text, str) or not 0 < len(text) <= 40:
        raise NotRepresentable(code, f'{field} must be a decimal string such as "1.25"')
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise NotRepresentable(code, f"{field} {text!r} is not a decimal number") from None
    if not value.is_finite() or text.strip() != text or "e" in text.lower():
        raise NotRepresentable(code, f"{field} must be a plain decimal string")
    return Fraction(value)


def _digits(number: int, places: int) -> str:
    """`number` / 10**places as a decimal string with exactly `places` decimals."""
    sign = "-" if number < 0 else ""
    digits = str(abs(number)).rjust(places + 1, "0")
    if not places:
        return sign + digits
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def _format(value: Fraction, places: int) -> str:
    scaled = value * 10**places
    assert scaled.denominator == 1, "values of this market are whole steps"
    number = int(scaled)
    sign = "-" if number < 0 else ""
    digits = str(abs(number)).rjust(places + 1, "0")
    if not places:
        return sign + digits
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


DEFAULT_MARKETS = (Market("BTC-USDT", "BTC", "USDT", matcher="127.0.0.1:50051"),)


def parse_markets(raw: str) -> tuple[Market, ...]:
    """The catalogue from JSON (a list of Market objects); the default when empty."""
    if not raw.strip():
        return DEFAULT_MARKETS
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MarketError(f"not JSON: {exc}") from None
    if not isinstance(items, list) or not items:
        raise MarketError("must be a non-empty JSON array of markets")
    known = {f.name for f in fields(Market)}
    markets = []
    for item in items:
        if not isinstance(item, dict) or set(item) - known:
            raise MarketError(f"unknown fields {sorted(set(item) - known)} in {item}")
        symbol = str(item.get("symbol", ""))
        base, _, quote = symbol.partition("-")
        item = {"base_asset": base, "quote_asset": quote, **item}
        try:
            markets.append(Market(**item))
        except TypeError as exc:
            raise MarketError(f"{symbol}: {exc}") from None
    symbols = [m.symbol for m in markets]
    if len(set(symbols)) != len(symbols):
        raise MarketError("a symbol appears twice")
    return tuple(markets)


def catalogue_json(markets: tuple[Market, ...]) -> str:
    return json.dumps([m.to_json() for m in markets])
