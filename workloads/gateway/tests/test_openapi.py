"""`/openapi.json` against reality: real responses of every route validate against the
document, and a bounded schemathesis run (EXCHANGE_SCHEMATHESIS_CASES, default 2,000 cases
over all operations) meets no 5xx."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase

from workloads.gateway.client import encode, signed_headers
from workloads.gateway.tests.conftest import GATEWAY_LEDGER_TOKEN, StackFactory

pytestmark = pytest.mark.e2e


class Caller:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.key = self.secret = self.token = ""

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: str = "key",
        idem: str | None = None,
    ) -> requests.Response:
        data = encode(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if auth == "key":
            headers.update(signed_headers(self.key, self.secret, method, path, data))
        elif auth == "session":
            headers["Authorization"] = f"Bearer {self.token}"
        if method in ("POST", "DELETE"):
            headers["Idempotency-Key"] = idem or uuid.uuid4().hex
        return self.http.request(method, self.url + path, data=data or None, headers=headers)


def test_real_responses_conform_to_the_document(make_stack: StackFactory) -> None:
    stack = make_stack(ledger=True)
    document = requests.get(stack.url + "/openapi.json").json()
    assert document["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(document)
    call = Caller(stack.url)
    seen: list[tuple[str, str, int]] = []

    def check(path: str, method: str, response: requests.Response, status: int) -> Any:
        assert response.status_code == status, (path, method, response.text)
        schema[path][method].validate_response(response)
        seen.append((path, method, status))
        return (
            response.json()
            if response.content and "json" in response.headers.get("Content-Type", "")
            else None
        )

    email = f"doc-{uuid.uuid4().hex[:8]}@example.com"
    creds = {"email": email, "password": "long enough pw"}
    check("/healthz", "GET", call("GET", "/healthz", auth=""), 200)
    check("/readyz", "GET", call("GET", "/readyz", auth=""), 200)
    check("/metrics", "GET", call("GET", "/metrics", auth=""), 200)
    user = check("/v1/auth/signup", "POST", call("POST", "/v1/auth/signup", creds, auth=""), 201)
    check("/v1/auth/signup", "POST", call("POST", "/v1/auth/signup", creds, auth=""), 409)
    login = check("/v1/auth/login", "POST", call("POST", "/v1/auth/login", creds, auth=""), 200)
    call.token = login["token"]
    key = check(
        "/v1/api-keys", "POST", call("POST", "/v1/api-keys", {"label": "doc"}, auth="session"), 201
    )
    call.key, call.secret = key["api_key"], key["secret"]
    check("/v1/api-keys", "GET", call("GET", "/v1/api-keys", auth="session"), 200)
    check("/v1/auth/me", "GET", call("GET", "/v1/auth/me"), 200)
    check("/v1/auth/me", "GET", call("GET", "/v1/auth/me", auth=""), 401)
    import asyncio

    asyncio.run(stack.fund(user["account"]))
    order = {"symbol": "BTC-USDT", "side": "SELL", "price": "60000.00", "quantity": "0.0100"}
    placed = check("/v1/orders", "POST", call("POST", "/v1/orders", order), 201)
    check(
        "/v1/orders",
        "POST",
        call("POST", "/v1/orders", {**order, "post_only": True, "side": "BUY"}),
        200,
    )  # rejected
    check("/v1/orders", "POST", call("POST", "/v1/orders", {**order, "price": "1.001"}), 400)
    check("/v1/orders", "POST", call("POST", "/v1/orders", {**order, "symbol": "NOPE"}), 404)
    path = "/v1/orders/{orderId}"
    check(path, "GET", call("GET", f"/v1/orders/{placed['order_id']}"), 200)
    check(path, "GET", call("GET", "/v1/orders/BTC-USDT:999999"), 404)
    check(path, "DELETE", call("DELETE", f"/v1/orders/{placed['order_id']}"), 200)
    check(path, "DELETE", call("DELETE", f"/v1/orders/{placed['order_id']}"), 404)
    deadline = time.monotonic() + 10
    while call("GET", "/v1/account/balances").json()["as_of_seq"]["BTC-USDT"] < placed["seq"] + 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    check("/v1/account/balances", "GET", call("GET", "/v1/account/balances"), 200)
    check("/v1/account/trades", "GET", call("GET", "/v1/account/trades"), 200)
    check("/v1/account/trades", "GET", call("GET", "/v1/account/trades?symbol=NOPE"), 404)
    check("/v1/markets", "GET", call("GET", "/v1/markets", auth=""), 200)
    check("/v1/time", "GET", call("GET", "/v1/time", auth=""), 200)
    check("/v1/orders", "GET", call("GET", "/v1/orders?status=closed"), 200)
    check("/v1/orders", "GET", call("GET", "/v1/orders?status=nope"), 400)
    check("/v1/orders", "DELETE", call("DELETE", "/v1/orders?symbol=BTC-USDT"), 200)
    check("/v1/orders", "DELETE", call("DELETE", "/v1/orders?symbol=NOPE"), 404)
    check("/v1/account/portfolio", "GET", call("GET", "/v1/account/portfolio"), 200)
    assert stack.ledger is not None
    deposited = requests.post(
        f"{stack.ledger.url}/v1/admin/deposits",
        json={"deposit_id": f"d-{uuid.uuid4().hex[:12]}", "account": user["account"],
              "asset": "USDT", "amount": "5000000"},
        headers={"X-Admin-Token": GATEWAY_LEDGER_TOKEN},
    )  # fmt: skip
    assert deposited.status_code == 201, deposited.text
    path = "/v1/account/transfers"
    move = {"symbol": "BTC-USDT", "asset": "USDT", "amount": "2.5", "direction": "to_market"}
    moved = check(path, "POST", call("POST", path, move), 202)
    check(path, "POST", call("POST", path, {**move, "amount": "9"}), 409)  # the wallet has 2.5
    check(path, "POST", call("POST", path, {**move, "amount": "0.0000001"}), 400)
    check(path, "POST", call("POST", path, {**move, "symbol": "NOPE"}), 404)
    check(path, "GET", call("GET", path + "?limit=10"), 200)
    check(path, "GET", call("GET", path + "?cursor=yesterday"), 400)
    check(path + "/{transferId}", "GET", call("GET", f"{path}/{moved['transfer_id']}"), 200)
    check(path + "/{transferId}", "GET", call("GET", f"{path}/tnope"), 404)
    balances = check("/v1/account/balances", "GET", call("GET", "/v1/account/balances"), 200)
    assert {b["asset"]: b["wallet"] for b in balances["balances"]}["USDT"] == "2.500000"
    for name in ("trades", "orderbook", "candles", "ticker"):
        route = f"/v1/markets/{{symbol}}/{name}"
        check(route, "GET", call("GET", f"/v1/markets/BTC-USDT/{name}", auth=""), 200)
        check(route, "GET", call("GET", f"/v1/markets/NOPE/{name}", auth=""), 404)
    smoke = call("POST", "/v1/smoke/trades", {"symbol": "BTC-USDT"})
    check("/v1/smoke/trades", "POST", smoke, 404)  # test-only: absent unless enabled
    check(
        "/v1/api-keys/{apiKey}",
        "DELETE",
        call("DELETE", f"/v1/api-keys/{call.key}", auth="session"),
        200,
    )
    check("/v1/auth/logout", "POST", call("POST", "/v1/auth/logout", auth="session"), 200)
    documented = {(p, m.upper()) for p, ops in document["paths"].items() for m in ops}
    covered = {(p, m) for p, m, _ in seen}
    assert documented - covered == {("/ws", "GET")}  # /ws is covered by the WebSocket tests


def test_schemathesis_finds_no_server_error(make_stack: StackFactory) -> None:
    stack = make_stack(ledger=True, EDGE_RATE_LIMIT_PER_MINUTE="0")
    call = Caller(stack.url)
    creds = {"email": "fuzz@example.com", "password": "long enough pw"}
    call("POST", "/v1/auth/signup", creds, auth="")
    token = call("POST", "/v1/auth/login", creds, auth="").json()["token"]
    schema = schemathesis.openapi.from_url(stack.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    total = int(os.environ.get("EXCHANGE_SCHEMATHESIS_CASES", "2000"))
    # Trivial operations run out of distinct cases early; aim a quarter higher per operation.
    per_operation = max(1, total * 5 // (4 * len(operations)))
    server_errors: list[str] = []
    cases = 0

    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            nonlocal cases
            headers = dict(case.headers or {})
            headers["Authorization"] = f"Bearer {token}"
            headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
            if not 0 < len(headers["Idempotency-Key"]) <= 64:
                headers["Idempotency-Key"] = uuid.uuid4().hex
            response = case.call(base_url=stack.url, headers=headers, timeout=30)
            cases += 1
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code} "
                    f"{response.text[:200]} body={json.dumps(case.body, default=str)[:200]}"
                )

        run()
    print(f"schemathesis: {cases} cases over {len(operations)} operations")
    assert cases >= min(total, len(operations)) // 2
    assert not server_errors, server_errors[:5]
