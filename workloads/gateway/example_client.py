"""Place a first signed order: `python -m workloads.gateway.example_client --url URL`.

Shows the whole signing recipe in a few lines (see `signed_headers` in client.py):
X-SIGNATURE = hex HMAC-SHA256(secret, METHOD + "\\n" + PATH + "\\n" + X-TS + "\\n" + BODY).
With `--ledger URL` it first deposits into the account's wallet at the ledger, then moves the
funds into the market with a signed `POST /v1/account/transfers` (the ledger funds the
matcher and books both), as in `make up`; `--fund host:port` credits the matcher directly
instead (a shortcut for a stack without a ledger).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from decimal import Decimal

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


FUNDS = ((0, 10**8), (1, 10**11))
"""Minor units of the market's (base, quote) assets to deposit: 1 BTC, 100,000 USDT."""


async def deposit(
    http: aiohttp.ClientSession, ledger: str, token: str, account: str, symbol: str
) -> None:
    """Credits the account's wallet at the ledger: in no market yet (see `allocate`)."""
    assets = symbol.split("-", 1)
    headers = {"X-Admin-Token": token} if token else {}
    for index, amount in FUNDS:
        body = {
            "deposit_id": f"ex-{uuid.uuid4().hex[:16]}",
            "account": account,
            "asset": assets[index],
            "amount": str(amount),
        }
        async with http.post(f"{ledger}/v1/admin/deposits", json=body, headers=headers) as response:
            print(f"deposit {assets[index]} to the wallet:", response.status, await response.text())


async def allocate(client: GatewayClient, symbol: str) -> None:
    """Moves the deposit from the wallet into the market: the trader's own signed request."""
    markets = await client.call("GET", "/v1/markets", sign_request=False)
    (market,) = [m for m in markets.body["markets"] if m["symbol"] == symbol]
    for index, amount in FUNDS:
        asset = (market["base_asset"], market["quote_asset"])[index]
        places = (market["base_decimals"], market["quote_decimals"])[index]
        body = {
            "symbol": symbol,
            "asset": asset,
            "amount": format(Decimal(amount).scaleb(-places), "f"),
            "direction": "to_market",
        }
        moved = await client.call(
            "POST", "/v1/account/transfers", body, idempotency_key=uuid.uuid4().hex
        )
        print(f"transfer {asset} to {symbol}:", moved.status, json.dumps(moved.body))


async def main(args: argparse.Namespace) -> None:
    async with aiohttp.ClientSession() as http:
        if args.deposit_to:  # a browser user's account (the web UI shows it): funds only
            await deposit(http, args.ledger, args.ledger_token, args.deposit_to, args.symbol)
            print("in the wallet: move it into a market with the market page's Transfer form")
            return
        client = GatewayClient(http, args.url, api_key=args.key, secret=args.secret)
        me = await client.call("GET", "/v1/auth/me")
        print("me:", me.status, json.dumps(me.body))
        if args.ledger:
            await deposit(http, args.ledger, args.ledger_token, me.body["account"], args.symbol)
            await allocate(client, args.symbol)
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
    parser.add_argument(
        "--ledger", default="", help="ledger URL to deposit through first (into the wallet)"
    )
    parser.add_argument("--ledger-token", default="", help="an admin token of the ledger, if any")
    parser.add_argument("--fund", default="", help="matcher host:port to credit directly")
    parser.add_argument(
        "--deposit-to", default="", help="with --ledger: only deposit to this account, then exit"
    )
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
