"""fuzz: schemathesis against the venue's `/openapi.json` while the traders trade.

At least `cases` generated requests (full form 10,000) over every documented operation,
each authenticated the way its route asks: HMAC-signed with an API key where the route has
a security requirement (a session token for logout, which takes only a session), nothing
on public routes. The signed requests rotate over several fuzzing traders, so that none of
them meets the per-minute rate limit. Now and then (a hypothesis draw) a case is steered
towards the venue's real market, a valid price and size, a fresh Idempotency-Key and an
order id the trader has, so that the success paths are fuzzed, not only the refusals of
unknown symbols.

Every response is checked by schemathesis: no 5xx (`server_errors`), nothing outside the
document (`schema_violations`: an undocumented status, content type, header or body).
Afterwards, from the events topic: every order placed and every cancel made for a fuzzing
trader was answered 2xx (`placed_by_refused`, target 0).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
import requests.auth
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contracts.v1 import events_pb2
from e2e.drills.harness import Context, exercise, sign_up
from e2e.drills.report import Plan, Result
from e2e.drills.stackvenue import DrillVenue
from e2e.drills.traders import PASSWORD
from e2e.drills.verify import envelope, read_topic
from workloads.gateway.client import GatewayClient, signed_headers

FORMS = {False: 1_000, True: 10_000}
FUZZERS = 16
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]  # fmt: skip
ORDER_OPERATIONS = {("POST", "/v1/orders"), ("DELETE", "/v1/orders"),
                    ("DELETE", "/v1/orders/{orderId}")}  # fmt: skip
"""The operations that sequence commands: their 2xx answers carry the commands' seqs."""
PRICES = ("50000.00", "55000.00", "59000.50", "61000.00", "65000.00", "70000.00")
"""Steered prices, away from the order flow's 60,000.00 (they may still trade with it)."""


class Signed(requests.auth.AuthBase):
    """HMAC-signs a request as the gateway checks it: over its method, its target as sent
    (path and query string), the timestamp and the exact body bytes."""

    def __init__(self, api_key: str, secret: str) -> None:
        self.api_key, self.secret = api_key, secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        data = body.encode() if isinstance(body, str) else body
        assert isinstance(data, bytes), "a streamed body cannot be signed"
        method = request.method or "GET"
        request.headers.update(
            signed_headers(self.api_key, self.secret, method, request.path_url, data)
        )
        return request


class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


@dataclass
class Fuzzer:
    account: str
    api_key: str
    secret: str
    token: str
    orders: list[str] = field(default_factory=list)


@dataclass
class Tally:
    cases: int = 0
    operations: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    unsent: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    answered_seqs: set[int] = field(default_factory=set)
    answered_transfers: set[str] = field(default_factory=set)


def steer(case: Any, level: int, fuzzer: Fuzzer, symbol: str, n: int) -> None:
    """Level 0: the case as generated; 1: the real market and a fresh Idempotency-Key;
    2: also a valid price and size, and one of the trader's own order ids."""
    if level == 0:
        return
    for values in (case.path_parameters, case.query, case.body):
        if isinstance(values, dict) and "symbol" in values:
            values["symbol"] = symbol
    if case.method.upper() in ("POST", "DELETE"):
        case.headers = {**(case.headers or {}), "Idempotency-Key": uuid.uuid4().hex}
    path = case.path_parameters if isinstance(case.path_parameters, dict) else {}
    if path.get("apiKey") == fuzzer.api_key:
        path["apiKey"] = f"x{fuzzer.api_key}"  # never revoke the fuzzer's own key
    if level < 2:
        return
    if case.operation.path == "/v1/orders" and isinstance(case.body, dict):
        case.body.update(symbol=symbol, price=PRICES[n % len(PRICES)],
                         quantity=f"0.00{1 + n % 9}0")  # fmt: skip
        case.body.pop("quote_budget", None)
    if case.operation.path == "/v1/account/transfers" and isinstance(case.body, dict):
        base, _, quote = symbol.partition("-")
        case.body.update(symbol=symbol, asset=(base, quote)[n % 2], amount=("0.001", "10")[n % 2],
                         direction=("to_wallet", "to_market")[n // 2 % 2])  # fmt: skip
    if "orderId" in path and fuzzer.orders:
        path["orderId"] = fuzzer.orders[n % len(fuzzer.orders)]


def call(case: Any, url: str, fuzzer: Fuzzer, session: requests.Session, tally: Tally) -> None:
    """Send one case, authenticated as its route asks, and check the response."""
    operation = f"{case.method.upper()} {case.operation.path}"
    auth: requests.auth.AuthBase | None = None
    if case.operation.definition.raw.get("security"):
        logout = case.operation.path == "/v1/auth/logout"
        auth = Bearer(fuzzer.token) if logout else Signed(fuzzer.api_key, fuzzer.secret)
    started = time.monotonic()
    try:
        response = case.call(base_url=url, session=session, auth=auth, timeout=30)
    except (requests.exceptions.InvalidHeader, ValueError, UnicodeError):
        tally.unsent += 1  # a generated header value no HTTP client sends
        return
    tally.seconds[operation] = tally.seconds.get(operation, 0.0) + time.monotonic() - started
    tally.cases += 1
    tally.operations[operation] += 1
    tally.statuses[response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        for failure in group.exceptions:
            title = str(getattr(failure, "title", type(failure).__name__))
            if response.status_code >= 500:
                tally.server_errors.append(f"{operation} -> {response.status_code} "
                                           f"{response.text[:200]}")  # fmt: skip
            else:
                tally.violations[f"{operation}: {title}"] += 1
                if len(tally.examples) < 20:
                    tally.examples.append(f"{operation} -> {response.status_code}: {title}: "
                                          f"{str(failure)[:300]}")  # fmt: skip
    if not 200 <= response.status_code < 300:
        return
    answer: dict[str, Any] = json.loads(response.content) if response.content else {}
    if (case.method.upper(), case.operation.path) in ORDER_OPERATIONS:
        tally.answered_seqs.update(int(answer[k]) for k in ("seq", "updated_seq") if k in answer)
        if case.method.upper() == "POST" and answer.get("order_id"):
            fuzzer.orders.append(str(answer["order_id"]))
    elif operation == "POST /v1/account/transfers":
        tally.answered_transfers.add(str(answer.get("transfer_id")))


def fuzz(urls: list[str], fuzzers: list[Fuzzer], symbol: str, wanted: int, seed: int,
         budget: float) -> Tally:  # fmt: skip
    """Rounds over every operation until `wanted` cases have been sent (or `budget`
    seconds have passed). Blocking: run it in a thread."""
    schema = schemathesis.openapi.from_url(urls[0] + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    sessions = [requests.Session() for _ in fuzzers]
    tally = Tally()
    deadline = time.monotonic() + budget
    # Trivial operations run out of distinct cases early: aim a quarter higher per round.
    per_operation = max(1, wanted * 5 // (4 * len(operations)))
    rounds = 0
    while tally.cases < wanted and time.monotonic() < deadline:
        rounds += 1
        for operation in operations:

            @hypothesis.seed(seed + rounds)
            @hypothesis.given(case=operation.as_strategy(), level=st.integers(0, 2))
            @hypothesis.settings(max_examples=per_operation, deadline=None, database=None,
                                 phases=[Phase.generate],
                                 suppress_health_check=list(HealthCheck))  # fmt: skip
            def one(case: Any, level: int) -> None:
                n = tally.cases + tally.unsent
                who = n % len(fuzzers)
                steer(case, level, fuzzers[who], symbol, n)
                call(case, urls[n % len(urls)], fuzzers[who], sessions[who], tally)

            if time.monotonic() < deadline:
                one()
    for session in sessions:
        session.close()
    missing = [f"{o.method.upper()} {o.path}" for o in operations
               if tally.operations[f"{o.method.upper()} {o.path}"] == 0]  # fmt: skip
    if missing:
        tally.examples.append(f"operations never called: {missing}")
    return tally


def refused_changes(events: list[events_pb2.Event], accounts: set[str], tally: Tally
                    ) -> tuple[int, int]:  # fmt: skip
    """(changes made for `accounts` that no 2xx answer gave, orders they placed): an order
    placed or canceled at a seq no order answer had, funds moved by a transfer no transfer
    answer named. (A sequenced rejection changes nothing; a fill of a resting order is
    another trader's command; the deposits of the sign-up are the drill's own.)"""
    refused = placed = 0
    by_owner = (events_pb2.CANCEL_CAUSE_USER, events_pb2.CANCEL_CAUSE_CANCEL_ALL)
    for event in events:
        kind = event.WhichOneof("body")
        seq = envelope(event).seq
        if kind == "order_accepted" and event.order_accepted.account in accounts:
            placed += 1
            refused += seq not in tally.answered_seqs
        elif kind == "order_canceled" and event.order_canceled.account in accounts:
            refused += event.order_canceled.cause in by_owner and seq not in tally.answered_seqs
        elif kind == "mass_cancel_completed" and event.mass_cancel_completed.account in accounts:
            refused += bool(event.mass_cancel_completed.canceled_orders) and (
                seq not in tally.answered_seqs
            )
        elif kind in ("funds_credited", "funds_debited"):
            funds = getattr(event, kind)
            transfer = funds.account in accounts and not funds.funding_id.startswith("deposit-")
            refused += transfer and funds.funding_id not in tally.answered_transfers
    return refused, placed


async def fuzzing(ctx: Context) -> None:
    venue, result = ctx.venue, ctx.result
    wanted = FORMS[ctx.plan.full]
    traders = await sign_up(ctx.http, venue, FUZZERS, "fuzz")
    fuzzers = []
    for trader in traders:
        me = await trader.client.call("GET", "/v1/auth/me")
        session = GatewayClient(ctx.http, trader.client.base_url)
        await session.login(str(me.body["email"]), PASSWORD)  # logout's own session
        fuzzers.append(
            Fuzzer(trader.account, trader.client.api_key, trader.client.secret, session.token)
        )
    budget = 1200.0 if ctx.plan.full else 240.0
    tally = await asyncio.to_thread(fuzz, venue.gateway_urls, fuzzers, venue.symbol, wanted,
                                    ctx.plan.seed, budget)  # fmt: skip
    events = [e for e in await read_topic(venue.broker.bootstrap, venue.topic, within=600)
              if envelope(e).symbol == venue.symbol]  # fmt: skip
    refused, placed = refused_changes(events, {f.account for f in fuzzers}, tally)
    result.figures.update(
        {
            "cycles": 1,
            "cases": tally.cases,
            "operations": len(tally.operations),
            "server_errors": len(tally.server_errors),
            "schema_violations": sum(tally.violations.values()),
            "placed_by_refused": refused,
            "orders_placed_by_fuzzing": placed,
            "unsent": tally.unsent,
            "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        }
    )
    result.details.update(
        {
            "per_operation": dict(tally.operations),
            "seconds_per_operation": {k: round(v, 1) for k, v in tally.seconds.items()},
            "transfers_answered": len(tally.answered_transfers),
            "violations": dict(tally.violations),
            "server_errors": tally.server_errors[:50],
            "examples": tally.examples,
        }
    )
    if tally.cases < wanted:
        result.problems.append(f"only {tally.cases} cases of {wanted} within {budget:.0f}s")
    if any("never called" in e for e in tally.examples):
        result.problems.append(next(e for e in tally.examples if "never called" in e))


async def run(venue: DrillVenue, plan: Plan) -> Result:
    return await exercise(venue, plan, fuzzing, rate=20.0)
