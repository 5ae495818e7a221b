"""The OpenAPI 3 document served at `/openapi.json` (tests check real responses against it)."""

from __future__ import annotations

from typing import Any

from workloads.gateway.errors import documented_codes
from workloads.gateway.vocabulary import (
    CLIENT_ORDER_ID_MAX,
    KEY_LABEL_MAX,
    ORDER_REQUIRED,
    ORDER_TYPES,
    PASSWORD_MAX,
    PASSWORD_MIN,
    SIDES,
    TIME_IN_FORCE,
)
from workloads.gateway.wallet import DIRECTIONS

INTERVAL_NAMES = ["1m", "5m", "15m", "1h", "4h", "1d", "1w"]
"""The candle intervals (as `workloads.history.queries.INTERVALS`)."""
MILLIS = {"type": "integer", "minimum": 0, "maximum": 10**15}
DEC = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "decimal string"}
NDEC = {**DEC, "nullable": True}
STR = {"type": "string"}
NSTR = {"type": "string", "nullable": True}
INT = {"type": "integer"}
NINT = {"type": "integer", "nullable": True}
BOOL = {"type": "boolean"}


def obj(
    props: dict[str, Any], required: list[str] | None = None, extra: bool = True
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    schema["required"] = list(props) if required is None else required
    if not extra:
        schema["additionalProperties"] = False
    return schema


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def arr(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


LEVEL = {"type": "array", "items": DEC, "minItems": 2, "maxItems": 2}
FILL = obj(
    {
        "trade_id": STR,
        "order_id": STR,
        "symbol": STR,
        "side": {"enum": ["BUY", "SELL"]},
        "liquidity": {"enum": ["MAKER", "TAKER"]},
        "price": DEC,
        "quantity": DEC,
        "fee": DEC,
        "fee_asset": STR,
        "seq": INT,
        "time": INT,
    }
)
ORDER = obj(
    {
        "order_id": STR,
        "client_order_id": STR,
        "symbol": STR,
        "side": {"type": "string", "enum": ["BUY", "SELL"], "nullable": True},
        "type": {"type": "string", "enum": ["LIMIT", "MARKET"], "nullable": True},
        "time_in_force": {"type": "string", "enum": ["GTC", "IOC", "FOK"], "nullable": True},
        "price": NDEC,
        "quantity": NDEC,
        "filled_quantity": DEC,
        "remaining_quantity": DEC,
        "average_price": NDEC,
        "status": {"enum": ["ACCEPTED", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED"]},
        "reject_reason": NSTR,
        "post_only": BOOL,
        "seq": INT,
        "updated_seq": INT,
        "epoch": INT,
        "created_at": INT,
        "fills": arr(ref("Fill")),
        "duplicate": BOOL,
        "as_of_seq": INT,
    },
    required=["order_id", "symbol", "status", "seq", "epoch", "filled_quantity", "fills"],
)
ORDER_SUMMARY = obj(
    {k: v for k, v in ORDER["properties"].items() if k != "fills"},
    required=[r for r in ORDER["required"] if r != "fills"],
)
MARKET = obj(
    {
        "symbol": STR,
        "base_asset": STR,
        "quote_asset": STR,
        "base_decimals": INT,
        "quote_decimals": INT,
        "tick_size": DEC,
        "lot_size": DEC,
        "min_price": DEC,
        "max_price": DEC,
        "min_quantity": DEC,
        "max_quantity": DEC,
        "price_band_bps": INT,
        "price_band": {**obj({"low": DEC, "high": DEC}), "nullable": True},
        "mode": {"enum": ["UNSPECIFIED", "NORMAL", "CANCEL_ONLY", "SOFT_HALT", "HARD_HALT"]},
        "last_price": NDEC,
        "trading": BOOL,
        "sample": BOOL,
    }
)
ACCOUNT_FILL = obj(
    {
        "trade_id": STR,
        "order_id": NSTR,
        "symbol": STR,
        "side": {"enum": ["BUY", "SELL"]},
        "liquidity": {"type": "string", "enum": ["MAKER", "TAKER"], "nullable": True},
        "price": DEC,
        "quantity": DEC,
        "quote_amount": DEC,
        "fee": DEC,
        "fee_asset": STR,
        "seq": INT,
        "time": INT,
    }
)
TRADE = obj(
    {
        "trade_id": STR,
        "symbol": STR,
        "price": DEC,
        "quantity": DEC,
        "taker_side": {"enum": ["BUY", "SELL"]},
        "seq": INT,
        "index": INT,
        "time": INT,
    },
    required=["trade_id", "symbol", "price", "quantity", "taker_side", "seq", "time"],
)
CANDLE = obj(
    {
        "symbol": STR,
        "interval": {"enum": INTERVAL_NAMES},
        "open_time": INT,
        "close_time": INT,
        "open": DEC,
        "high": DEC,
        "low": DEC,
        "close": DEC,
        "volume": DEC,
        "quote_volume": DEC,
        "trades": INT,
        "final": BOOL,
        "revision": INT,
    }
)
TICKER = obj(
    {
        "symbol": STR,
        "window_start": INT,
        "window_end": INT,
        "last_price": NDEC,
        "open": NDEC,
        "high": NDEC,
        "low": NDEC,
        "volume": DEC,
        "quote_volume": DEC,
        "trades": INT,
        "change": {"type": "string"},
        "change_percent": {"type": "string"},
        "sample": BOOL,
    }
)
BOOK = obj(
    {
        "symbol": STR,
        "seq": INT,
        "bids": arr(LEVEL),
        "asks": arr(LEVEL),
        "checksum": {"type": "integer", "minimum": 0, "maximum": 4294967295},
        "sample": BOOL,
    }
)
BALANCE = obj(
    {
        "asset": STR,
        "wallet": {
            **NDEC,
            "description": "in the wallet, in no market (the ledger's); null when the ledger "
            "cannot be read",
        },
        "available": {**DEC, "description": "available in the markets, summed"},
        "hold": {**DEC, "description": "held by open orders in the markets, summed"},
        "total": {**DEC, "description": "wallet + available + hold"},
        "markets": arr(obj({"symbol": STR, "available": DEC, "hold": DEC})),
    }
)
DIRECTION = {
    "type": "string",
    "enum": list(DIRECTIONS),
    "description": "to_market: from the wallet into the market; to_wallet: back",
}
TRANSFER = obj(
    {
        "transfer_id": STR,
        "symbol": STR,
        "asset": STR,
        "amount": DEC,
        "direction": DIRECTION,
        "status": {
            "type": "string",
            "enum": ["pending", "accepted", "rejected"],
            "description": "pending until the market's matcher answered",
        },
        "reject_reason": {**NSTR, "description": "the matcher's code when rejected"},
        "booked": {**BOOL, "description": "the ledger's journal holds it"},
        "created_at": INT,
    }
)
TRANSFER_REQUEST = obj(
    {
        "symbol": STR,
        "asset": {**STR, "description": "the market's base or quote asset"},
        "amount": {
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]+)?$",
            "description": "decimal string, a positive whole number of the asset's minor units",
        },
        "direction": DIRECTION,
    },
    extra=False,
)
ERROR = obj({"code": STR, "message": STR}, extra=True)

SIGNED: list[dict[str, list[str]]] = [
    {"ApiKey": [], "ApiTimestamp": [], "ApiSignature": []},
    {"Session": []},
]
IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    "description": "Required on POST and DELETE; same key + same request = same response.",
}
SYMBOL = {"name": "symbol", "in": "path", "required": True, "schema": {"type": "string"}}
LIMIT_500 = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
}
QUERY_SYMBOL = {"name": "symbol", "in": "query", "schema": STR}
ORDER_ID = {
    "name": "orderId",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "`<symbol>:<seq>`, e.g. BTC-USDT:42",
}


def errors(*statuses: int) -> dict[str, Any]:
    out = {}
    for status in statuses:
        out[str(status)] = {
            "description": "error",
            "content": {"application/json": {"schema": ref("Error")}},
        }
    return out


def ok(schema: dict[str, Any], status: int = 200, description: str = "ok") -> dict[str, Any]:
    return {
        str(status): {
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


WS_DESCRIPTION = """\
Commands are JSON text messages: {"op":"subscribe"|"unsubscribe","channel","symbol","id"},
{"op":"auth",...}, {"op":"ping"}. The server sends one text frame per channel and market per
flush (at most one every EDGE_WS_FLUSH_MS; a lone update goes out at once).

trades: {"channel":"trades","symbol","prev_seq","seq","ts","sent","data":[Trade,...]}: every
trade of the market since the previous message, oldest first. seq is the event seq of the last
trade in data, prev_seq that of the market's trade before the first one, so messages chain:
holding trades up to seq S (from earlier messages or GET /v1/markets/{symbol}/trades), apply a
message when prev_seq <= S (skip trade_ids you hold; one command's trades share a seq), and
refetch when prev_seq > S (a gap). ts: epoch ms at which the gateway read the oldest trade of
the message from the events topic; sent: epoch ms at which the frame was built.

A connection whose unsent bytes exceed EDGE_WS_SEND_BUFFER_BYTES is slow: book diffs are
replaced by a fresh snapshot once it drains, candles and ticker keep only the newest value, and
trades, orders and fills are never dropped: the connection is closed with 4008 "slow consumer".
"""


def op(
    summary: str,
    responses: dict[str, Any],
    *,
    secure: bool = False,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    idempotent: bool = False,
    tag: str = "",
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "summary": summary,
        "responses": responses,
        "tags": [tag] if tag else [],
    }
    parameters = list(params or [])
    if idempotent:
        parameters.append(IDEMPOTENCY)
    if parameters:
        result["parameters"] = parameters
    if secure:
        result["security"] = SIGNED
    if body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return result


AUTH_ERRORS = (400, 401, 409, 429)
CREDENTIALS = obj(
    {
        "email": {"type": "string", "format": "email"},
        "password": {"type": "string", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
    }
)
_PLACE_FIELDS = {
    "symbol": STR,
    "side": {"enum": list(SIDES)},
    "type": {"enum": list(ORDER_TYPES)},
    "time_in_force": {"enum": list(TIME_IN_FORCE)},
    "price": DEC,
    "quantity": DEC,
    "post_only": BOOL,
    "quote_budget": DEC,
    "client_order_id": {"type": "string", "minLength": 1, "maxLength": CLIENT_ORDER_ID_MAX},
}
PLACE = obj(_PLACE_FIELDS, required=list(ORDER_REQUIRED), extra=False)

SMOKE = obj({"symbol": STR, "price": DEC, "quantity": DEC}, required=["symbol"], extra=False)
SMOKE_TRADE = obj(
    {
        "symbol": STR,
        "price": DEC,
        "quantity": DEC,
        "maker_order_id": STR,
        "taker_order_id": STR,
        "trades": arr(ref("Trade")),
        "seq": INT,
        "epoch": INT,
    }
)


def document() -> dict[str, Any]:
    codes = documented_codes()
    code_table = "\n".join(f"- `{c}`: HTTP {s}" for c, s in sorted(codes.items()))
    paths: dict[str, Any] = {
        "/healthz": {"get": op("liveness", ok(obj({"status": STR})), tag="ops")},
        "/readyz": {
            "get": op(
                "readiness", {**ok(obj({"ready": BOOL, "detail": STR})), **errors(503)}, tag="ops"
            )
        },
        "/metrics": {
            "get": op(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "text exposition",
                        "content": {"text/plain": {"schema": STR}},
                    }
                },
                tag="ops",
            )
        },
        "/v1/auth/signup": {
            "post": op(
                "create a user",
                {
                    **ok(obj({"user_id": INT, "email": STR, "account": STR}), 201),
                    **errors(*AUTH_ERRORS),
                },
                body=CREDENTIALS,
                idempotent=True,
                tag="auth",
            )
        },
        "/v1/auth/login": {
            "post": op(
                "open a session",
                {
                    **ok(
                        obj(
                            {
                                "token": STR,
                                "token_type": STR,
                                "expires_at": INT,
                                "user_id": INT,
                                "account": STR,
                            }
                        )
                    ),
                    **errors(*AUTH_ERRORS),
                },
                body=CREDENTIALS,
                idempotent=True,
                tag="auth",
            )
        },
        "/v1/auth/me": {
            "get": op(
                "the caller",
                {
                    **ok(
                        obj(
                            {
                                "user_id": NINT,
                                "email": NSTR,
                                "account": STR,
                                "auth": {"enum": ["api_key", "session"]},
                                "api_key": NSTR,
                            }
                        )
                    ),
                    **errors(401, 429),
                },
                secure=True,
                tag="auth",
            )
        },
        "/v1/auth/logout": {
            "post": op(
                "end the session",
                {**ok(obj({"logged_out": BOOL})), **errors(*AUTH_ERRORS)},
                secure=True,
                idempotent=True,
                tag="auth",
            )
        },
        "/v1/api-keys": {
            "post": op(
                "create an API key; the secret is shown only here",
                {
                    **ok(
                        obj({"api_key": STR, "secret": STR, "label": STR, "created_at": INT}), 201
                    ),
                    **errors(400, 401, 403, 409, 429),
                },
                secure=True,
                idempotent=True,
                body=obj({"label": {"type": "string", "maxLength": KEY_LABEL_MAX}}, required=[]),
                tag="keys",
            ),
            "get": op(
                "list API keys (no secrets)",
                {
                    **ok(
                        obj(
                            {
                                "keys": arr(
                                    obj(
                                        {
                                            "api_key": STR,
                                            "label": STR,
                                            "created_at": INT,
                                            "revoked_at": NINT,
                                        }
                                    )
                                )
                            }
                        )
                    ),
                    **errors(401, 403, 429),
                },
                secure=True,
                tag="keys",
            ),
        },
        "/v1/api-keys/{apiKey}": {
            "delete": op(
                "revoke an API key",
                {
                    **ok(obj({"api_key": STR, "revoked": BOOL})),
                    **errors(400, 401, 403, 404, 409, 429),
                },
                secure=True,
                idempotent=True,
                params=[{"name": "apiKey", "in": "path", "required": True, "schema": STR}],
                tag="keys",
            )
        },
        "/v1/account/balances": {
            "get": op(
                "balances per asset: the wallet (the ledger's) and what is available and held in "
                "the markets (the matcher's view, with the per-market split)",
                {
                    **ok(
                        obj(
                            {
                                "account": STR,
                                "balances": arr(ref("Balance")),
                                "as_of_seq": {"type": "object", "additionalProperties": INT},
                            }
                        )
                    ),
                    **errors(401, 429),
                },
                secure=True,
                tag="account",
            )
        },
        "/v1/account/portfolio": {
            "get": op(
                "balances (the markets' and the wallet's) valued at last prices",
                {
                    **ok(
                        obj(
                            {
                                "account": STR,
                                "assets": arr(
                                    obj(
                                        {
                                            "asset": STR,
                                            "total": DEC,
                                            "price": NDEC,
                                            "values": {
                                                "type": "object",
                                                "additionalProperties": DEC,
                                            },
                                        }
                                    )
                                ),
                                "totals": {"type": "object", "additionalProperties": DEC},
                                "wallet_included": {
                                    **BOOL,
                                    "description": "false: the ledger could not be read, the "
                                    "wallet is left out",
                                },
                                "as_of_seq": {"type": "object", "additionalProperties": INT},
                            }
                        )
                    ),
                    **errors(401, 429),
                },
                secure=True,
                tag="account",
            )
        },
        "/v1/account/trades": {
            "get": op(
                "the caller's fills, newest first, as the ledger settled them (`from`/`to` "
                "epoch ms; `cursor`: a page's `next_cursor`)",
                {
                    **ok(obj({"trades": arr(ref("AccountFill")), "next_cursor": NSTR})),
                    **errors(400, 401, 404, 429, 503),
                },
                secure=True,
                params=[
                    QUERY_SYMBOL,
                    LIMIT_500,
                    {"name": "from", "in": "query", "schema": MILLIS},
                    {"name": "to", "in": "query", "schema": MILLIS},
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                    },
                ],
                tag="account",
            )
        },
        "/v1/account/transfers": {
            "post": op(
                "move funds between the wallet and a market (through the ledger and the "
                "market's matcher, exactly once); waits up to 5 s for the matcher, so the answer "
                "is usually accepted or rejected, and booked. The transfer id derives from the "
                "account and the Idempotency-Key: a retry is the same transfer",
                {
                    **ok(ref("Transfer"), 202, "the transfer as it stands"),
                    **errors(400, 401, 404, 409, 429, 503),
                },
                secure=True,
                idempotent=True,
                body=TRANSFER_REQUEST,
                tag="account",
            ),
            "get": op(
                "the caller's transfers, newest first (`cursor`: a page's `next_cursor`)",
                {
                    **ok(obj({"transfers": arr(ref("Transfer")), "next_cursor": NSTR})),
                    **errors(400, 401, 429, 503),
                },
                secure=True,
                params=[
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {"name": "cursor", "in": "query", "schema": STR},
                ],
                tag="account",
            ),
        },
        "/v1/account/transfers/{transferId}": {
            "get": op(
                "one of the caller's transfers",
                {**ok(ref("Transfer")), **errors(401, 404, 429, 503)},
                secure=True,
                params=[{"name": "transferId", "in": "path", "required": True, "schema": STR}],
                tag="account",
            )
        },
        "/v1/markets": {
            "get": op(
                "the markets: assets, steps and limits to round an order to, the price band "
                "around the last trade, the current mode",
                {**ok(obj({"markets": arr(ref("Market"))})), **errors(429)},
                tag="market",
            )
        },
        "/v1/time": {
            "get": op(
                "the server's clock (epoch ms), for a signature's X-TS",
                {**ok(obj({"server_time": INT})), **errors(429)},
                tag="market",
            )
        },
        "/v1/orders": {
            "get": op(
                "the caller's orders, newest first (`status`: open, closed or all; `cursor`: a "
                "page's `next_cursor`), from the gateway's cache of the venue's newest orders",
                {
                    **ok(obj({"orders": arr(ref("OrderSummary")), "next_cursor": NSTR})),
                    **errors(400, 401, 404, 429),
                },
                secure=True,
                params=[
                    QUERY_SYMBOL,
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"enum": ["open", "closed", "all"]},
                    },
                    LIMIT_500,
                    {"name": "cursor", "in": "query", "schema": STR},
                ],
                tag="orders",
            ),
            "delete": op(
                "cancel all the caller's open orders in a market (one matcher command)",
                {
                    **ok(
                        obj(
                            {
                                "symbol": STR,
                                "canceled": INT,
                                "order_ids": arr(STR),
                                "seq": INT,
                                "epoch": INT,
                            }
                        )
                    ),
                    **errors(400, 401, 404, 409, 429, 503),
                },
                secure=True,
                idempotent=True,
                params=[{**QUERY_SYMBOL, "required": True}],
                tag="orders",
            ),
            "post": op(
                "place an order (the matcher's result, with seq and epoch)",
                {
                    **ok(ref("Order"), 201, "accepted"),
                    **ok(ref("Order"), 200, "sequenced but rejected, or a duplicate"),
                    **errors(400, 401, 404, 409, 429, 503),
                },
                secure=True,
                idempotent=True,
                body=PLACE,
                tag="orders",
            ),
        },
        "/v1/orders/{orderId}": {
            "delete": op(
                "cancel an order",
                {**ok(ref("Order")), **errors(400, 401, 404, 409, 429, 503)},
                secure=True,
                idempotent=True,
                params=[ORDER_ID],
                tag="orders",
            ),
            "get": op(
                "an order's status",
                {**ok(ref("Order")), **errors(401, 404, 429)},
                secure=True,
                params=[ORDER_ID],
                tag="orders",
            ),
        },
        "/v1/markets/{symbol}/trades": {
            "get": op(
                "trades, newest first: recent ones from memory, older ones from the market "
                "history (`from`/`to` in epoch ms; `cursor`: a page's `next_cursor`)",
                {
                    **ok(
                        obj(
                            {
                                "symbol": STR,
                                "sample": BOOL,
                                "trades": arr(ref("Trade")),
                                "next_cursor": NSTR,
                            },
                            required=["symbol", "sample", "trades"],
                        )
                    ),
                    **errors(400, 404, 429, 503),
                },
                params=[
                    SYMBOL,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {"name": "from", "in": "query", "schema": MILLIS},
                    {"name": "to", "in": "query", "schema": MILLIS},
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string", "pattern": r"^[0-9]{1,20}\.[0-9]{1,10}$"},
                    },
                ],
                tag="market",
            )
        },
        "/v1/markets/{symbol}/orderbook": {
            "get": op(
                "the book (price levels) as of seq",
                {**ok(ref("Book")), **errors(400, 404, 429, 503)},
                params=[
                    SYMBOL,
                    {
                        "name": "depth",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                tag="market",
            )
        },
        "/v1/markets/{symbol}/candles": {
            "get": op(
                "candles at an interval, oldest first: the newest `limit` whose open time is in "
                "[from, to); the recent ones (and the open one) from memory, older ones from the "
                "market history",
                {
                    **ok(
                        obj(
                            {
                                "symbol": STR,
                                "interval": STR,
                                "sample": BOOL,
                                "candles": arr(ref("Candle")),
                            }
                        )
                    ),
                    **errors(400, 404, 429, 503),
                },
                params=[
                    SYMBOL,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1500},
                    },
                    {"name": "interval", "in": "query", "schema": {"enum": INTERVAL_NAMES}},
                    {"name": "from", "in": "query", "schema": MILLIS},
                    {"name": "to", "in": "query", "schema": MILLIS},
                    {"name": "before", "in": "query", "schema": MILLIS},
                ],
                tag="market",
            )
        },
        "/v1/markets/{symbol}/ticker": {
            "get": op(
                "rolling 24h statistics",
                {**ok(ref("Ticker")), **errors(404, 429)},
                params=[SYMBOL],
                tag="market",
            )
        },
        "/v1/smoke/trades": {
            "post": op(
                "test only (EDGE_ENABLE_SMOKE_ROUTES=true, else 404): one real trade through "
                "the matcher between the accounts smoke-maker and smoke-taker, which are "
                "credited what the trade needs; price defaults to the last trade's, quantity "
                "to one lot",
                {**ok(SMOKE_TRADE, 201, "traded"), **errors(400, 401, 404, 409, 429, 503)},
                secure=True,
                idempotent=True,
                body=SMOKE,
                tag="smoke",
            )
        },
        "/ws": {
            "get": {
                **op(
                    "WebSocket: channels trades, book, candles, ticker, orders, fills (see README)",
                    {"101": {"description": "switching protocols"}, **errors(400, 401, 403, 429)},
                    tag="ws",
                ),
                "description": WS_DESCRIPTION,
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Exchange gateway",
            "version": "1.0.0",
            "description": "Prices and amounts are decimal strings. Signed requests: "
            "X-SIGNATURE = hex HMAC-SHA256(secret, METHOD\\nPATH\\nX-TS\\nBODY), PATH with "
            "query string, X-TS epoch ms. Errors are {code, message}:\n" + code_table,
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Order": ORDER,
                "OrderSummary": ORDER_SUMMARY,
                "Market": MARKET,
                "AccountFill": ACCOUNT_FILL,
                "Fill": FILL,
                "Trade": TRADE,
                "Candle": CANDLE,
                "Ticker": TICKER,
                "Book": BOOK,
                "Balance": BALANCE,
                "Transfer": TRANSFER,
                "Error": ERROR,
            },
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-KEY"},
                "ApiTimestamp": {"type": "apiKey", "in": "header", "name": "X-TS"},
                "ApiSignature": {"type": "apiKey", "in": "header", "name": "X-SIGNATURE"},
                "Session": {"type": "http", "scheme": "bearer"},
            },
        },
    }
