"""Admin identities from tokens, compared in constant time.

`LEDGER_ADMIN_TOKENS="alice:tok1,bob:tok2"` maps tokens to admin names (the two-person rule
of corrections needs names). A presented token is compared with every configured one with
`hmac.compare_digest`, and the loop never stops early, so the time taken does not tell how
much of a token matched, nor which admin's it was close to.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class AdminTokens:
    by_token: Mapping[str, str]

    @property
    def enabled(self) -> bool:
        return bool(self.by_token)

    def identify(self, presented: str | None) -> str | None:
        """The admin whose token this is, or None."""
        if not presented:
            return None
        candidate = presented.encode()
        found: str | None = None
        for token, name in self.by_token.items():
            if hmac.compare_digest(token.encode(), candidate):
                found = name
        return found
