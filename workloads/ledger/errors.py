"""Typed API errors: every 4xx is `{"code", "message"}` with a stable code, and is counted.

Domain code raises `ApiError` (or one of the helpers); the middleware in `api` turns it into
the JSON response at the edge. Codes are part of the API: a retired code stays reserved.
"""

from __future__ import annotations

from enum import Enum


class Code(Enum):
    """Stable error codes and their HTTP status."""

    MALFORMED_JSON = ("malformed_json", 400)
    INVALID_PAYLOAD = ("invalid_payload", 400)
    INVALID_FIELD = ("invalid_field", 400)
    UNAUTHORIZED = ("unauthorized", 401)
    ADMIN_IDENTITY_REQUIRED = ("admin_identity_required", 403)
    SELF_APPROVAL = ("self_approval", 403)
    NOT_FOUND = ("not_found", 404)
    UNKNOWN_CORRECTION = ("unknown_correction", 404)
    UNKNOWN_TRADE = ("unknown_trade", 404)
    UNKNOWN_MARKET = ("unknown_market", 404)
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405)
    IDEMPOTENCY_CONFLICT = ("idempotency_conflict", 409)
    ALREADY_APPROVED = ("already_approved", 409)
    ALREADY_APPLIED = ("already_applied", 409)
    INSUFFICIENT_APPROVALS = ("insufficient_approvals", 409)
    ALREADY_REVERSED = ("already_reversed", 409)
    LATCH_RELEASE_REFUSED = ("latch_release_refused", 409)
    STALE_EPOCH = ("stale_epoch", 409)
    MATCHER_REJECTED = ("matcher_rejected", 409)
    INSUFFICIENT_FUNDS = ("insufficient_funds", 409)
    PAYLOAD_TOO_LARGE = ("payload_too_large", 413)
    UNKNOWN_ACCOUNT = ("unknown_account", 422)
    UNKNOWN_ASSET = ("unknown_asset", 422)
    NEGATIVE_AMOUNT = ("negative_amount", 422)
    INVALID_AMOUNT = ("invalid_amount", 422)
    INVALID_EVENT = ("invalid_event", 422)
    NOT_REVERSIBLE = ("not_reversible", 422)
    UNKNOWN_REFERENCE = ("unknown_reference", 422)
    NO_MATCHER = ("market_has_no_matcher", 422)
    NOT_READY = ("not_ready", 503)

    @property
    def name_(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]


class ApiError(Exception):
    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
