"""Structured logs: one JSON object per line on stderr, with any `extra=` fields, and the
trace id of the request or span being served (`trace_id`), so that a log line and the
trace in the trace store can be found from each other (and from a response's X-Trace-Id).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

TRACE_ID: ContextVar[str] = ContextVar("trace_id", default="")
"""The trace id of the request being served when no span is built (EDGE_OTEL_ENDPOINT
empty: ids only); set and reset by the HTTP middlewares. A current span wins over it."""


def current_trace_id() -> str:
    """The current span's trace id (32 hex digits), else the bound one, else ""."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x")
    return TRACE_ID.get()


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(service: str) -> None:
    """JSON logs at `LOG_LEVEL` (default INFO) for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
