"""What a request may say: field names, enumerations and bounds, written once.

The validators (`views_orders.place_request`, `views_auth`) enforce these, and the OpenAPI
document (`openapi.py`) publishes its request schemas from them, so the two cannot drift:
an enum value or a length limit changes in one place.
"""

from __future__ import annotations

from contracts.v1 import common_pb2

SIDES = {"BUY": common_pb2.SIDE_BUY, "SELL": common_pb2.SIDE_SELL}
ORDER_TYPES = {"LIMIT": common_pb2.ORDER_TYPE_LIMIT, "MARKET": common_pb2.ORDER_TYPE_MARKET}
TIME_IN_FORCE = {
    "GTC": common_pb2.TIME_IN_FORCE_GTC,
    "IOC": common_pb2.TIME_IN_FORCE_IOC,
    "FOK": common_pb2.TIME_IN_FORCE_FOK,
}
ORDER_REQUIRED = ("symbol", "side", "quantity")
ORDER_OPTIONAL = (
    "type",
    "time_in_force",
    "price",
    "post_only",
    "quote_budget",
    "client_order_id",
)
ORDER_FIELDS = frozenset(ORDER_REQUIRED + ORDER_OPTIONAL)
CLIENT_ORDER_ID_MAX = 64
PASSWORD_MIN, PASSWORD_MAX = 8, 128
KEY_LABEL_MAX = 100
