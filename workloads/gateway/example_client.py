"""Place a first signed order: `python -m workloads.gateway.example_client --url URL`.

Shows the whole signing recipe in a few lines (see `signed_headers` in client.py):
X-SIGNATURE = hex HMAC-SHA256(secret, METHOD + "\\n" + PATH + "\\n" + X-TS + "\\n" + BODY).
With `--ledger URL` it first deposits through the ledger (which funds the matcher and books
the deposit), as in `make up`; `--fund host:port` credits the matcher directly instead (a
shortcut for a stack without a ledger).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

import aiohttp
import grpc

from contracts.v1 import funding_pb2, matcher_pb2_grpc
from workloads.gateway.client import GatewayClient


async def fund(matcher: str, account: str, symbol: str) -> None:
    base, _, quote = symbol.partition("-")
    async with grpc.aio.insecure_channel(matcher) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        for asset, amount in ((base, 10**8), (quote, 10**11)):  # 1 BTC, 100,000 USDT
            await stub.ApplyFunding(
                funding_pb2.FundingCommand(
                    funding_id=f"example-{account}-{asset}-{uuid.uuid4().hex[:8]}",
                    account=account,
                    asset=asset,
                    amount=amount,
                    direction=funding_pb2.FUNDING_DIRECTION_CREDIT,
                )
            )


async def deposit(http: aiohttp.ClientSession, ledger: str, account: str, symbol: str) -> None:
    base, _, quote = symbol.partition("-")
    for asset, amount in ((base, 10**8), (quote, 10**11)):
        body = {
            "adjustment_id": f"ex-{uuid.uuid4().hex[:16]}",
            "symbol": symbol,
            "account": account,
            "asset": asset,
            "amount": amount,
            "direction": "credit",
            "reason": "example client deposit",
            "wait_ms": 10_000,
        }
        async with http.post(f"{ledger}/v1/admin/adjustments", json=body) as response:
            print(f"deposit {asset}:", response.status, await response.text())


async def main(args: argparse.Namespace) -> None:
    async with aiohttp.ClientSession() as http:
        if args.deposit_to:  # a browser user's account (the web UI shows it): funds only
            await deposit(http, args.ledger, args.deposit_to, args.symbol)
            return
        client = GatewayClient(http, args.url, api_key=args.key, secret=args.secret)
        me = await client.call("GET", "/v1/auth/me")
        print("me:", me.status, json.dumps(me.body))
        if args.ledger:
            await deposit(http, args.ledger, me.body["account"], args.symbol)
        elif args.fund:
            await fund(args.fund, me.body["account"], args.symbol)
        order = {
            "symbol": args.symbol,
            "side": args.side,
            "type": "LIMIT",
            "price": args.price,
            "quantity": args.quantity,
        }
        placed = await client.call("POST", "/v1/orders", order, idempotency_key=uuid.uuid4().hex)
        print("order:", placed.status, json.dumps(placed.body, indent=2))
        print("trace id:", placed.headers.get("X-Trace-Id"))
        if placed.status < 300:
            got = await client.call("GET", f"/v1/orders/{placed.body['order_id']}")
            print("status:", got.body.get("status"))
        book = await client.call("GET", f"/v1/markets/{args.symbol}/orderbook", sign_request=False)
        print("book:", json.dumps(book.body))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8081")
    parser.add_argument("--key", default="demo")
    parser.add_argument("--secret", default="demo-secret")
    parser.add_argument("--symbol", default="BTC-USDT")
    parser.add_argument("--side", default="BUY", choices=("BUY", "SELL"))
    parser.add_argument("--price", default="60000.00")
    parser.add_argument("--quantity", default="0.0100")
    parser.add_argument("--ledger", default="", help="ledger URL to deposit through first")
    parser.add_argument("--fund", default="", help="matcher host:port to credit directly")
    parser.add_argument(
        "--deposit-to", default="", help="with --ledger: only deposit to this account, then exit"
    )
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
