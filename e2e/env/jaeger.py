"""A real trace store: Jaeger v2 (v1.75.0 of its module, built on the OpenTelemetry
Collector), built from the Go module proxy (`e2e/env/go/jaeger`), run as a plain process.

It keeps traces in memory, takes spans over OTLP (gRPC and HTTP) and answers its query API
(`/api/traces/{id}`, `/api/v3/traces/{id}`, `/api/services`, `/api/traces?service=...`),
each on a free port of 127.0.0.1. Nothing else is opened or dialled: the collector's own
metrics are off, and so is the query service's tracing of itself (it would export to
`localhost:4317`, whoever listens there). Built from the module its web page is a
placeholder (the UI's assets are not in the module), so it serves a one-page viewer of our
own instead (`jaeger_ui/index.html`: the latest traces, one trace's waterfall), and
`python -m e2e.env.jaeger` prints a trace as an indented waterfall, or lists the recent ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.env import gobuild, versions
from e2e.env.process import ManagedProcess, free_port

CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: warn

extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: {host}:{health_port}
  jaeger_query:
    enable_tracing: false
    ui:
      assets_path: {ui}
    storage:
      traces: memstore
    http:
      endpoint: {host}:{query_port}
    grpc:
      endpoint: {host}:{query_grpc_port}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: {max_traces}

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {host}:{otlp_grpc_port}
      http:
        endpoint: {host}:{otlp_http_port}

processors:
  batch:
    timeout: 100ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


UI_DIR = Path(__file__).parent / "jaeger_ui"
"""A one-page trace viewer Jaeger serves at `/` (same origin as its API): the latest traces,
and one trace's waterfall at `/#<trace id>`."""


def version() -> str:
    """What `make up` prints beside the part."""
    return f"Jaeger {versions.JAEGER} (in-memory)"


@dataclass(frozen=True)
class TraceSpan:
    """One span of a trace as the store returns it."""

    span_id: str
    parent_id: str  # "" for a root
    service: str
    name: str
    start_us: int
    duration_us: int
    kind: str
    attributes: dict[str, Any]


@dataclass
class JaegerServer:
    """Jaeger with an in-memory store: OTLP in at `otlp_grpc_endpoint` (`host:port`) and
    `otlp_http_endpoint` (a URL with a path), queries at `query_url`; its configuration
    and log in `run_dir/jaeger`, its pid file in `run_dir`."""

    run_dir: Path
    otlp_grpc_port: int = field(default_factory=free_port)
    otlp_http_port: int = field(default_factory=free_port)
    query_port: int = field(default_factory=free_port)
    query_grpc_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    max_traces: int = 100_000
    die_with_parent: bool = True

    def __post_init__(self) -> None:
        self.home = self.run_dir / "jaeger"
        self.process: ManagedProcess | None = None

    @property
    def otlp_grpc_endpoint(self) -> str:
        """For `*_OTEL_ENDPOINT`: OTLP/gRPC."""
        return f"{self.host}:{self.otlp_grpc_port}"

    @property
    def otlp_http_endpoint(self) -> str:
        """For `*_OTEL_ENDPOINT`: OTLP/HTTP (a URL with a path)."""
        return f"http://{self.host}:{self.otlp_http_port}/v1/traces"

    @property
    def query_url(self) -> str:
        return f"http://{self.host}:{self.query_port}"

    def start(self, timeout: float = 30.0) -> float:
        """Start, and wait until both the health check and the query API answer."""
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "config.yaml"
        config.write_text(
            CONFIG.format(
                host=self.host,
                health_port=self.health_port,
                query_port=self.query_port,
                query_grpc_port=self.query_grpc_port,
                otlp_grpc_port=self.otlp_grpc_port,
                otlp_http_port=self.otlp_http_port,
                max_traces=self.max_traces,
                ui=UI_DIR,
            )
        )
        self.process = ManagedProcess(
            "jaeger",
            [str(gobuild.binary("jaeger")), f"--config=file:{config}"],
            self.run_dir,
            die_with_parent=self.die_with_parent,
        )
        self.process.start()
        return self.process.wait_ready(self._ready, timeout)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.health_port}/status", timeout=1):
                pass
            self._get("/api/services")
        except (OSError, ValueError):
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.query_url + path, timeout=5) as response:
            return json.load(response)

    def trace(self, trace_id: str) -> list[TraceSpan]:
        """The spans of a trace (32 hex digits) that the store holds now; [] if none."""
        return trace(self.query_url, trace_id)

    def services(self) -> list[str]:
        return sorted(self._get("/api/services").get("data") or [])


def trace(query_url: str, trace_id: str) -> list[TraceSpan]:
    """The spans of `trace_id` from a Jaeger query API at `query_url` ([] if unknown).

    From `/api/traces/{id}`: its CHILD_OF reference is a span's parent (OTLP links become
    FOLLOWS_FROM references, which are not parents)."""
    try:
        with urllib.request.urlopen(f"{query_url}/api/traces/{trace_id}", timeout=5) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise
    spans: list[TraceSpan] = []
    for found in body.get("data") or []:
        processes = found.get("processes", {})
        for span in found.get("spans", []):
            parents = [
                ref["spanID"]
                for ref in span.get("references", [])
                if ref.get("refType") == "CHILD_OF" and ref.get("traceID") == found["traceID"]
            ]
            tags = {tag["key"]: tag.get("value") for tag in span.get("tags", [])}
            spans.append(
                TraceSpan(
                    span_id=span["spanID"],
                    parent_id=parents[0] if parents else "",
                    service=processes.get(span.get("processID"), {}).get("serviceName", "?"),
                    name=span["operationName"],
                    start_us=int(span["startTime"]),
                    duration_us=int(span["duration"]),
                    kind=str(tags.get("span.kind", "internal")),
                    attributes=tags,
                )
            )
    return sorted(spans, key=lambda s: s.start_us)


def waterfall(spans: list[TraceSpan]) -> str:
    """A trace as text: one line per span, indented under its parent, with its offset from
    the trace's start and its duration in milliseconds."""
    if not spans:
        return "(no such trace)"
    start = min(s.start_us for s in spans)
    ids = {s.span_id for s in spans}
    children: dict[str, list[TraceSpan]] = {}
    for span in spans:
        children.setdefault(span.parent_id if span.parent_id in ids else "", []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            offset = (span.start_us - start) / 1000
            lines.append(
                f"{offset:9.1f} ms {span.duration_us / 1000:9.2f} ms  {'  ' * depth}"
                f"{span.service}: {span.name}"
            )
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def recent(query_url: str, service: str, limit: int = 20) -> list[tuple[str, str, int, int]]:
    """(trace id, root span, spans, duration in µs) of a service's latest traces."""
    url = f"{query_url}/api/traces?service={service}&limit={limit}&lookback=1h"
    with urllib.request.urlopen(url, timeout=5) as response:
        found = json.load(response).get("data") or []
    rows = []
    for one in found:
        spans = one.get("spans", [])
        first = min(spans, key=lambda s: s["startTime"]) if spans else None
        end = max((s["startTime"] + s["duration"] for s in spans), default=0)
        rows.append(
            (
                one["traceID"],
                first["operationName"] if first else "?",
                len(spans),
                end - first["startTime"] if first else 0,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """`python -m e2e.env.jaeger [--url URL] show TRACE_ID | recent [SERVICE]`."""
    parser = argparse.ArgumentParser(prog="python -m e2e.env.jaeger", description=main.__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:16686", help="Jaeger's query API")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="one trace as a waterfall (the X-Trace-Id)")
    show.add_argument("trace_id")
    latest = commands.add_parser("recent", help="a service's latest traces")
    latest.add_argument("service", nargs="?", default="edge-gateway")
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            print(waterfall(trace(args.url, args.trace_id)))
        else:
            for trace_id, root, count, duration in recent(args.url, args.service):
                print(f"{trace_id}  {duration / 1000:9.2f} ms  {count:3d} spans  {root}")
    except OSError as exc:
        sys.exit(f"jaeger at {args.url}: {exc}")


if __name__ == "__main__":
    main()
