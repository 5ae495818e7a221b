"""Who is calling: HMAC-signed API keys (X-API-KEY, X-TS, X-SIGNATURE) or a session token.

The signature is hex HMAC-SHA256 with the key's secret over `METHOD\\nPATH\\nX-TS\\nBODY`,
where PATH is the request target as sent (path and query string) and X-TS is epoch
milliseconds. The decisions are pure functions; the caller does the I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from workloads.gateway.errors import ApiError, Code
from workloads.gateway.store import KeyRecord, Principal, Store, account_of


def payload(method: str, path: str, ts: str, body: bytes) -> bytes:
    return b"\n".join((method.upper().encode(), path.encode(), ts.encode(), body))


def sign(secret: str, method: str, path: str, ts: str, body: bytes = b"") -> str:
    return hmac.new(secret.encode(), payload(method, path, ts, body), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    api_key: str
    ts: str
    signature: str


def signed_headers(headers: object) -> SignedHeaders | None:
    """The three signing headers, None when none is given; raises when only some are."""
    get = getattr(headers, "get")  # noqa: B009  (a multidict or a dict)
    values = [get(name, "") for name in ("X-API-KEY", "X-TS", "X-SIGNATURE")]
    if not any(values):
        return None
    if not all(values):
        raise ApiError(Code.MISSING_CREDENTIALS, "X-API-KEY, X-TS and X-SIGNATURE go together")
    return SignedHeaders(*values)


def check_timestamp(ts: str, now_ms: int, skew_sec: int) -> None:
    if not ts.isdigit() or len(ts) > 15:
        raise ApiError(Code.INVALID_TIMESTAMP, "X-TS must be epoch milliseconds")
    if abs(now_ms - int(ts)) > skew_sec * 1000:
        raise ApiError(
            Code.STALE_TIMESTAMP, f"X-TS is more than {skew_sec}s away from the server's clock"
        )


def check_signature(
    record: KeyRecord, method: str, path: str, given: SignedHeaders, body: bytes
) -> None:
    expected = hmac.digest(
        record.secret_bytes, payload(method, path, given.ts, body), hashlib.sha256
    ).hex()
    if not hmac.compare_digest(expected, given.signature.lower()):
        raise ApiError(Code.INVALID_SIGNATURE, "X-SIGNATURE does not match the request")


def principal_of(record: KeyRecord) -> Principal:
    return record.principal


async def verify_signed(
    store: Store, given: SignedHeaders, method: str, path: str, body: bytes, now_ms: int, skew: int
) -> Principal:
    """A signed request's principal; raises the typed 401 otherwise. Replay and revocation
    are checked afterwards, in the batched admission."""
    check_timestamp(given.ts, now_ms, skew)
    record = store.cached_key(given.api_key) or await store.key(given.api_key)
    if record is None:
        raise ApiError(Code.UNKNOWN_API_KEY, "unknown API key")
    check_signature(record, method, path, given, body)
    return principal_of(record)


async def verify_session(store: Store, authorization: str) -> Principal:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(Code.INVALID_SESSION, "Authorization must be `Bearer <session token>`")
    found = await store.session_user(token.strip())
    if found is None:
        raise ApiError(Code.INVALID_SESSION, "the session is unknown, expired or logged out")
    user_id, digest = found
    return Principal(user_id, account_of(user_id), session_hash=digest)
