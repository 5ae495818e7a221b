"""What the ledger's app and its requests carry, and the admin behind a request: one module
that the app factory (`api.py`) and the views (`views_*.py`) both import, so that neither
imports the other."""

from __future__ import annotations

from aiohttp import web

from workloads.ledger.auth import AdminTokens
from workloads.ledger.errors import ApiError, Code
from workloads.ledger.service import Ledger

LEDGER = web.AppKey("ledger", Ledger)
TOKENS = web.AppKey("tokens", AdminTokens)
ADMIN: web.RequestKey[str | None] = web.RequestKey("admin")
"""The admin's name, set by the authenticating middleware (None: tokens not configured)."""


def admin_name(request: web.Request) -> str:
    """The admin behind this request; corrections need one (names make the two-person rule)."""
    name: str | None = request.get(ADMIN)
    if name is None:
        raise ApiError(
            Code.ADMIN_IDENTITY_REQUIRED,
            "corrections need admin identities: configure LEDGER_ADMIN_TOKENS",
        )
    return name
