"""Authentication, replay protection, rate limits and idempotency, in one middleware.

Each route declares its policy with `@policy(...)`: `none` (ops endpoints), `public`
(signup, login, market data: rate-limited by client address), `user` (a signed API key
or a session) or `session` (a session only). Order of checks, cheapest first, and none of
them reaches the matcher when it fails: credentials present; X-TS within the skew; key
known; signature valid; Idempotency-Key present on POST/DELETE; then one batched
`gw_batch` (key not revoked, signature not seen, rate window not full, key claimed).

An idempotent request's response (status and body) is stored once the handler returns
(below 500; a 5xx releases the claim so a retry runs again). The same key with the same
method, target and body gets the stored response back with `Idempotent-Replayed: true`;
with a different request, 409 `idempotency_key_reused`; while the first is still running,
409 `idempotency_in_progress`. Keys are scoped per principal (anonymous calls share one
scope, and the body, which holds the credentials, is part of the match).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import Counter

from workloads.gateway import auth, schema
from workloads.gateway.errors import ApiError, Code
from workloads.gateway.keys import PRINCIPAL, SETTINGS, STORE
from workloads.gateway.store import Admission, Principal, Verdict

AUTH_FAILURES = Counter("gateway_auth_failures_total", "Refused requests by reason", ["reason"])
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
F = TypeVar("F", bound=Callable[..., Any])
POLICIES = ("none", "public", "user", "session")
MAX_IDEMPOTENCY_KEY = 64


def policy(kind: str) -> Callable[[F], F]:
    assert kind in POLICIES

    def mark(handler: F) -> F:
        handler.edge_policy = kind  # type: ignore[attr-defined]
        return handler

    return mark


def policy_of(request: web.Request) -> str:
    handler = request.match_info.handler
    return getattr(handler, "edge_policy", "none")


def principal(request: web.Request) -> Principal:
    found = request.get(PRINCIPAL)
    if not isinstance(found, Principal):
        raise ApiError(Code.MISSING_CREDENTIALS, "this route needs credentials")
    return found


def rate_headers(limit: int, count: int, now: float) -> dict[str, str]:
    if limit <= 0:
        return {}
    reset = max(1, math.ceil(60 - now % 60))
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, limit - count)),
        "X-RateLimit-Reset": str(reset),
    }


async def authenticate(
    request: web.Request, kind: str, body: bytes
) -> tuple[Principal | None, str]:
    settings = request.app[SETTINGS]
    store = request.app[STORE]
    if kind == "public":
        return None, ""
    given = auth.signed_headers(request.headers) if kind == "user" else None
    if given is not None:
        found = await auth.verify_signed(
            store,
            given,
            request.method,
            request.raw_path,
            body,
            int(time.time() * 1000),
            settings.auth.skew_sec,
        )
        return found, given.signature
    authorization = request.headers.get("Authorization")
    if authorization:
        return await auth.verify_session(store, authorization), ""
    raise ApiError(
        Code.MISSING_CREDENTIALS,
        "sign the request (X-API-KEY, X-TS, X-SIGNATURE) or send a session token"
        if kind == "user"
        else "send the session token: Authorization: Bearer <token>",
    )


def stored_response(
    verdict: Verdict, headers: dict[str, str], unwritten: tuple[int, bytes] | None
) -> web.Response:
    if verdict.verdict == schema.IDEMPOTENT_MISMATCH:
        raise ApiError(
            Code.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was used for a different request",
            headers=headers,
        )
    if not verdict.stored_status and unwritten is not None:
        verdict = Verdict(verdict.verdict, verdict.rate_count, unwritten[0], unwritten[1])
    if not verdict.stored_status:
        raise ApiError(
            Code.IDEMPOTENCY_IN_PROGRESS,
            "a request with this Idempotency-Key is still running; retry",
            headers={**headers, "Retry-After": "1"},
        )
    return web.Response(
        body=verdict.stored_body or b"",
        status=verdict.stored_status,
        content_type="application/json",
        headers={**headers, "Idempotent-Replayed": "true"},
    )


def refusal(verdict: Verdict, headers: dict[str, str], now: float) -> ApiError | None:
    if verdict.verdict == schema.REVOKED:
        return ApiError(Code.API_KEY_REVOKED, "the API key was revoked", headers=headers)
    if verdict.verdict == schema.REPLAYED:
        return ApiError(
            Code.REPLAYED_REQUEST,
            "this signature was already used; sign every request anew",
            headers=headers,
        )
    if verdict.verdict == schema.RATE_LIMITED:
        retry = str(max(1, math.ceil(60 - now % 60)))
        return ApiError(
            Code.RATE_LIMITED, "rate limit exceeded", headers={**headers, "Retry-After": retry}
        )
    return None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    kind = getattr(request.match_info.handler, "edge_policy", "none")
    if kind == "none":
        return await handler(request)
    settings = request.app[SETTINGS]
    store = request.app[STORE]
    method = request.method
    try:
        body = await request.read()
        found, signature = await authenticate(request, kind, body)
        if found is not None:
            request[PRINCIPAL] = found
        idempotent = method == "POST" or method == "DELETE"
        key = request.headers.get("Idempotency-Key", "") if idempotent else ""
        if idempotent and not key:
            raise ApiError(Code.MISSING_IDEMPOTENCY_KEY, "POST and DELETE need an Idempotency-Key")
        if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
            raise ApiError(
                Code.VALIDATION_FAILED,
                f"Idempotency-Key: at most {MAX_IDEMPOTENCY_KEY} printable characters",
            )
        scope = found.name if found else "anon"
        digest = (
            hashlib.sha256(b"\n".join((method.encode(), request.raw_path.encode(), body))).digest()
            if key
            else b""
        )
        verdict = await store.admit(
            Admission(
                scope if found else f"ip:{request.remote}",
                found.api_key if found and found.api_key and not found.static else "",
                signature,
                scope,
                key,
                digest,
            )
        )
        now = time.time()
        headers = rate_headers(settings.auth.rate_limit_per_minute, verdict.rate_count, now)
        if verdict.verdict:
            refused = refusal(verdict, headers, now)
            if refused is not None:
                raise refused
            if verdict.verdict in (schema.IDEMPOTENT_MATCH, schema.IDEMPOTENT_MISMATCH):
                return stored_response(verdict, headers, store.unwritten.get((scope, key)))
    except ApiError as exc:
        AUTH_FAILURES.labels(exc.code).inc()
        raise
    try:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = exc.response()
    except BaseException:
        if key:
            await store.release_idempotent(scope, key)
        raise
    response.headers.update(headers)
    if key and isinstance(response, web.Response):
        if response.status >= 500:
            await store.release_idempotent(scope, key)
        else:
            stored = response.body if isinstance(response.body, bytes) else b""
            store.finish_idempotent_later(scope, key, response.status, stored)
    return response
