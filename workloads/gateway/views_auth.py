"""Signup, login, me, logout, and API keys (create with the secret shown once, list, revoke)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from workloads.gateway.errors import ApiError, Code
from workloads.gateway.guard import policy, principal
from workloads.gateway.jsonio import decode, json_response
from workloads.gateway.keys import PASSWORDS, SETTINGS, STORE
from workloads.gateway.store import account_of
from workloads.gateway.vocabulary import KEY_LABEL_MAX, PASSWORD_MAX, PASSWORD_MIN

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}\.[^@\s.]{1,63}$")
"""The password policy, checked at signup (a login never says it)."""


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        value = decode(await request.read())
    except ValueError:
        raise ApiError(Code.INVALID_JSON, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(Code.INVALID_JSON, "the body must be a JSON object")
    return value


def credentials(body: dict[str, Any], policy: bool = True) -> tuple[str, str]:
    """The email (lowercased) and password of a signup or, with `policy` False, a login:
    a login checks types only and leaves the length to the password check, so that a wrong
    password answers `invalid_credentials` whatever it is and never reveals the policy."""
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not EMAIL.match(email):
        raise ApiError(Code.VALIDATION_FAILED, "email must be an email address")
    if not isinstance(password, str):
        raise ApiError(Code.VALIDATION_FAILED, "password must be a string")
    if policy and not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ApiError(
            Code.VALIDATION_FAILED,
            f"password must have {PASSWORD_MIN} to {PASSWORD_MAX} characters",
        )
    return email.lower(), password


@policy("public")
async def signup(request: web.Request) -> web.Response:
    email, password = credentials(await json_object(request))
    hashed = await request.app[PASSWORDS].hash(password)
    user_id = await request.app[STORE].create_user(email, hashed)
    if user_id is None:
        raise ApiError(Code.EMAIL_TAKEN, "an account with this email exists")
    return json_response(
        {"user_id": user_id, "email": email, "account": account_of(user_id)}, status=201
    )


@policy("public")
async def login(request: web.Request) -> web.Response:
    email, password = credentials(await json_object(request), policy=False)
    store = request.app[STORE]
    found = await store.user_by_email(email)
    stored = found[1] if found else None
    possible = PASSWORD_MIN <= len(password) <= PASSWORD_MAX  # no hashing of a huge string
    if found is None or not possible or not await request.app[PASSWORDS].verify(stored, password):
        raise ApiError(Code.INVALID_CREDENTIALS, "wrong email or password")
    ttl = request.app[SETTINGS].auth.session_ttl_hours * 3600
    token, expires = await store.create_session(found[0], ttl)
    return json_response(
        {
            "token": token,
            "token_type": "Bearer",
            "expires_at": int(expires * 1000),
            "user_id": found[0],
            "account": account_of(found[0]),
        }
    )


@policy("user")
async def me(request: web.Request) -> web.Response:
    who = principal(request)
    user = await request.app[STORE].user(who.user_id) if who.user_id else None
    return json_response(
        {
            "user_id": who.user_id or None,
            "email": user["email"] if user else None,
            "account": who.account,
            "auth": "api_key" if who.api_key else "session",
            "api_key": who.api_key or None,
        }
    )


@policy("session")
async def logout(request: web.Request) -> web.Response:
    who = principal(request)
    await request.app[STORE].revoke_session(who.session_hash)
    return json_response({"logged_out": True})


def user_only(request: web.Request) -> int:
    who = principal(request)
    if who.static:
        raise ApiError(Code.FORBIDDEN, "static keys (EDGE_API_SECRETS) have no user")
    return who.user_id


@policy("user")
async def create_key(request: web.Request) -> web.Response:
    user_id = user_only(request)
    # The guard has read the body already (`can_read_body` is False by now): an empty body
    # is no label, anything else must be a JSON object.
    body = await json_object(request) if (await request.read()).strip() else {}
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > KEY_LABEL_MAX:
        raise ApiError(
            Code.VALIDATION_FAILED, f"label: a string of at most {KEY_LABEL_MAX} characters"
        )
    api_key, secret, created = await request.app[STORE].create_key(user_id, label)
    return json_response(
        {"api_key": api_key, "secret": secret, "label": label, "created_at": int(created * 1000)},
        status=201,
    )


def key_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "api_key": row["api_key"],
        "label": row["label"],
        "created_at": int(float(row["created"]) * 1000),
        "revoked_at": int(float(row["revoked"]) * 1000) if row["revoked"] is not None else None,
    }


@policy("user")
async def list_keys(request: web.Request) -> web.Response:
    rows = await request.app[STORE].list_keys(user_only(request))
    return json_response({"keys": [key_json(r) for r in rows]})


@policy("user")
async def revoke_key(request: web.Request) -> web.Response:
    api_key = request.match_info["apiKey"]
    if not await request.app[STORE].revoke_key(user_only(request), api_key):
        raise ApiError(Code.NOT_FOUND, "no such API key")
    return json_response({"api_key": api_key, "revoked": True})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/auth/signup", signup)
    router.add_post("/v1/auth/login", login)
    router.add_get("/v1/auth/me", me)
    router.add_post("/v1/auth/logout", logout)
    router.add_post("/v1/api-keys", create_key)
    router.add_get("/v1/api-keys", list_keys)
    router.add_delete("/v1/api-keys/{apiKey}", revoke_key)
