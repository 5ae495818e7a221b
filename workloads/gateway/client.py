"""A small async client for the gateway: signs requests exactly as the server checks them.

Used by the example client, the tests and the load generator. The body is serialized once
and those exact bytes are both signed and sent.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from workloads.gateway.auth import sign


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any
    raw: bytes


def encode(body: Any) -> bytes:
    return b"" if body is None else json.dumps(body, separators=(",", ":")).encode()


def signed_headers(
    api_key: str, secret: str, method: str, path: str, body: bytes, ts: int | None = None
) -> dict[str, str]:
    stamp = str(int(time.time() * 1000) if ts is None else ts)
    return {
        "X-API-KEY": api_key,
        "X-TS": stamp,
        "X-SIGNATURE": sign(secret, method, path, stamp, body),
    }


class GatewayClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        api_key: str = "",
        secret: str = "",
        token: str = "",
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.api_key, self.secret, self.token = api_key, secret, token

    def on(self, base_url: str) -> GatewayClient:
        """The same credentials against another replica."""
        return GatewayClient(
            self.session, base_url, api_key=self.api_key, secret=self.secret, token=self.token
        )

    def headers(
        self, method: str, path: str, body: bytes, idempotency_key: str | None, sign_request: bool
    ) -> dict[str, str]:
        headers = {"Content-Type": "application/json"} if body else {}
        if sign_request and self.api_key:
            headers.update(signed_headers(self.api_key, self.secret, method, path, body))
        elif sign_request and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if idempotency_key is None and method in ("POST", "DELETE"):
            idempotency_key = uuid.uuid4().hex
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotency_key: str | None = None,
        sign_request: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = encode(body)
        sent = self.headers(method, path, data, idempotency_key, sign_request)
        sent.update(headers or {})
        async with self.session.request(
            method, self.base_url + path, data=data or None, headers=sent
        ) as response:
            raw = await response.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return Reply(response.status, dict(response.headers), parsed, raw)

    async def login(self, email: str, password: str, *, signup: bool = False) -> dict[str, Any]:
        if signup:
            await self.call(
                "POST",
                "/v1/auth/signup",
                {"email": email, "password": password},
                sign_request=False,
            )
        reply = await self.call(
            "POST", "/v1/auth/login", {"email": email, "password": password}, sign_request=False
        )
        if reply.status != 200:
            raise RuntimeError(f"login failed: {reply.status} {reply.body}")
        self.token = reply.body["token"]
        return reply.body  # type: ignore[no-any-return]

    async def new_api_key(self, label: str = "") -> tuple[str, str]:
        reply = await self.call("POST", "/v1/api-keys", {"label": label})
        if reply.status != 201:
            raise RuntimeError(f"key creation failed: {reply.status} {reply.body}")
        return reply.body["api_key"], reply.body["secret"]
