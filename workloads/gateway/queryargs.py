"""Query-string arguments shared by the REST views: bounded integers and time ranges, refused
with `validation_failed` when malformed."""

from __future__ import annotations

from aiohttp import web

from workloads.gateway.errors import ApiError, Code
from workloads.gateway.history import FOREVER


def bounded(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name, str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise ApiError(Code.VALIDATION_FAILED, f"{name} must be an integer in 1..{high}")
    return int(raw)


def millis(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 15:
        raise ApiError(Code.VALIDATION_FAILED, f"{name} must be epoch milliseconds")
    return int(raw)


def time_range(request: web.Request) -> tuple[int, int]:
    """`from` (inclusive) and `to` (exclusive; alias `before`) in epoch milliseconds."""
    start = millis(request, "from") or 0
    end = millis(request, "to")
    end = millis(request, "before") if end is None else end
    end = FOREVER * 1000 if end is None else end
    if start >= end:
        raise ApiError(Code.VALIDATION_FAILED, "from must be before to")
    return start, end
