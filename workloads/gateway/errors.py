"""Typed API errors: `{"code": ..., "message": ...}` with a documented HTTP status.

Gateway codes are stable strings. The matcher's `RejectReason` numbers map one to one to
codes named after them (`REJECT_REASON_INSUFFICIENT_FUNDS` -> `insufficient_funds`), so a
client sees the same code whether the gateway or the matcher refused the order.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from contracts.v1 import common_pb2

API_ERRORS = Counter(
    "gateway_api_errors_total",
    "Typed error responses by machine-readable code and HTTP status (the golden signal's "
    "reject rate by code)",
    ["code", "status"],
)


class Code(StrEnum):
    """The gateway's own error codes (beside the matcher's, see `reject_code`)."""

    BAD_REQUEST = "bad_request"
    INVALID_JSON = "invalid_json"
    VALIDATION_FAILED = "validation_failed"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNKNOWN_MARKET = "unknown_market"
    ORDER_NOT_FOUND = "order_not_found"
    TRANSFER_NOT_FOUND = "transfer_not_found"
    # authentication and abuse
    MISSING_CREDENTIALS = "missing_credentials"
    INVALID_TIMESTAMP = "invalid_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    UNKNOWN_API_KEY = "unknown_api_key"
    API_KEY_REVOKED = "api_key_revoked"
    INVALID_SIGNATURE = "invalid_signature"
    REPLAYED_REQUEST = "replayed_request"
    INVALID_SESSION = "invalid_session"
    INVALID_CREDENTIALS = "invalid_credentials"
    EMAIL_TAKEN = "email_taken"
    RATE_LIMITED = "rate_limited"
    MISSING_IDEMPOTENCY_KEY = "missing_idempotency_key"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    # the core
    CORE_UNAVAILABLE = "core_unavailable"
    HISTORY_UNAVAILABLE = "history_unavailable"
    LEDGER_UNAVAILABLE = "ledger_unavailable"
    NOT_LEADER = "not_leader"
    INTERNAL = "internal_error"
    # the test-only smoke route
    SMOKE_WOULD_CROSS = "smoke_would_cross"
    SMOKE_NO_TRADE = "smoke_no_trade"


STATUS: dict[str, int] = {
    Code.BAD_REQUEST: 400,
    Code.INVALID_JSON: 400,
    Code.VALIDATION_FAILED: 400,
    Code.NOT_FOUND: 404,
    Code.FORBIDDEN: 403,
    Code.METHOD_NOT_ALLOWED: 405,
    Code.UNKNOWN_MARKET: 404,
    Code.ORDER_NOT_FOUND: 404,
    Code.TRANSFER_NOT_FOUND: 404,
    Code.MISSING_CREDENTIALS: 401,
    Code.INVALID_TIMESTAMP: 401,
    Code.STALE_TIMESTAMP: 401,
    Code.UNKNOWN_API_KEY: 401,
    Code.API_KEY_REVOKED: 401,
    Code.INVALID_SIGNATURE: 401,
    Code.REPLAYED_REQUEST: 401,
    Code.INVALID_SESSION: 401,
    Code.INVALID_CREDENTIALS: 401,
    Code.EMAIL_TAKEN: 409,
    Code.RATE_LIMITED: 429,
    Code.MISSING_IDEMPOTENCY_KEY: 400,
    Code.IDEMPOTENCY_KEY_REUSED: 409,
    Code.IDEMPOTENCY_IN_PROGRESS: 409,
    Code.ORIGIN_NOT_ALLOWED: 403,
    Code.CORE_UNAVAILABLE: 503,
    Code.HISTORY_UNAVAILABLE: 503,
    Code.LEDGER_UNAVAILABLE: 503,
    Code.NOT_LEADER: 503,
    Code.INTERNAL: 500,
    Code.SMOKE_WOULD_CROSS: 409,
    Code.SMOKE_NO_TRADE: 409,
}


def reject_code(reason: int) -> str:
    """The gateway code of a matcher RejectReason (one to one, by name)."""
    try:
        name = common_pb2.RejectReason.Name(common_pb2.RejectReason.ValueType(reason))
    except ValueError:
        return f"reject_{reason}"
    return name.removeprefix("REJECT_REASON_").lower()


REJECT_CODES: dict[int, str] = {
    number: reject_code(number) for number in common_pb2.RejectReason.values() if number
}
# HTTP status of a matcher refusal answered as an error (cancels, pre-sequencing checks).
REJECT_STATUS: dict[str, int] = {
    "unknown_market": 404,
    "order_not_found": 404,
    "rate_limited": 429,
    "insufficient_funds": 409,  # a transfer the wallet cannot cover (orders: sequenced, 200)
    "market_cancel_only": 409,
    "market_soft_halt": 409,
    "market_hard_halt": 409,
    "not_leader": 503,
    "stale_epoch": 503,
}
# Matcher reasons the gateway can already see in the request: answered 400 before any call.
VALIDATION_CODES = frozenset(
    reject_code(n) for n in common_pb2.RejectReason.values() if 100 < n < 200
)


class ApiError(Exception):
    """Raised anywhere in a request; the error middleware turns it into the JSON body."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.status = status or STATUS.get(self.code, 400)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}

    def response(self) -> web.Response:
        """The error as the client gets it; every error response is made here, and counted."""
        API_ERRORS.labels(self.code, str(self.status)).inc()
        return web.json_response(self.body(), status=self.status, headers=self.headers)


def documented_codes() -> dict[str, int]:
    """Every error code with its HTTP status, for the OpenAPI document and the README."""
    table = dict(STATUS)
    for code in REJECT_CODES.values():
        table.setdefault(code, REJECT_STATUS.get(code, 400))
    return table
