"""JSON in and out with msgspec: several times faster than the standard library's json,
which matters when every order response is encoded on the one event-loop thread."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encode(data), status=status, content_type="application/json", headers=headers
    )


def decode(raw: bytes) -> Any:
    """Raises ValueError for anything that is not JSON."""
    try:
        return _decode(raw)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None
