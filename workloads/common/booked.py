"""A settled trade read back from the ledger's postings (pure): who bought, who sold, how
much, and each side's fee.

The ledger books a trade as postings, not as a row of prices (see `workloads/ledger/rules.py`,
`_trade`): the seller's base and the buyer's quote leave their holds, the buyer's price
improvement returns to its available quote, each side receives the other asset less its fee,
and the fees go to the venue's account. Self-trades are prevented by the matcher, so the buyer
and the seller are always two accounts, and the derivation is exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

HOLD, AVAILABLE = "hold", "available"
Posting = tuple[str, str, str, int]
"""(owner, asset, bucket, amount), as the ledger's postings and accounts hold them."""


@dataclass(frozen=True)
class BookedTrade:
    buyer: str
    seller: str
    quantity: int
    """Base minor units the seller gave up."""
    quote_amount: int
    """Quote minor units the trade was worth (what the buyer paid, improvement returned)."""
    buyer_fee: int
    """In the base asset: what the buyer did not receive of `quantity`."""
    seller_fee: int
    """In the quote asset: what the seller did not receive of `quote_amount`."""

    def price(self, lot_size: int) -> int:
        """Quote minor units per lot (exact: the engine's notional is price times lots)."""
        return self.quote_amount * lot_size // self.quantity if self.quantity else 0


def booked_trade(base: str, quote: str, postings: Iterable[Posting]) -> BookedTrade:
    lines = list(postings)
    seller = next((o for o, a, b, n in lines if a == base and b == HOLD and n < 0), "")
    buyer = next((o for o, a, b, n in lines if a == quote and b == HOLD and n < 0), "")

    def total(owner: str, asset: str, bucket: str) -> int:
        return sum(n for o, a, b, n in lines if o == owner and a == asset and b == bucket)

    quantity = -total(seller, base, HOLD)
    quote_amount = -total(buyer, quote, HOLD) - total(buyer, quote, AVAILABLE)
    return BookedTrade(
        buyer=buyer,
        seller=seller,
        quantity=quantity,
        quote_amount=quote_amount,
        buyer_fee=quantity - total(buyer, base, AVAILABLE),
        seller_fee=quote_amount - total(seller, quote, AVAILABLE),
    )
