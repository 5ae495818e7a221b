"""What `make up` runs: PostgreSQL, Kafka, an S3 store (the matcher's archive), ClickHouse (the
market history), the exchange's processes, optionally a Kubernetes API.

Ports come from environment variables (defaults follow the seed's local ports), data lives
in one run directory that is kept between runs (`EXCHANGE_RUN_DIR`, default `.run/up`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from e2e.env import (
    clickhouse,
    gobuild,
    jaeger,
    kafka,
    kube,
    paths,
    postgres,
    prometheus,
    s3,
)
from e2e.env.gateway import GatewayProcess
from e2e.env.history import HistoryProcess
from e2e.env.ledger import LedgerProcess
from e2e.env.matcher import MatcherProcess
from e2e.env.pgbackup import BackupSchedule, PgArchive
from e2e.env.process import Part, free_port
from e2e.env.prometheus import PrometheusServer, ScrapeJob
from workloads.gateway import webui
from workloads.gateway.markets import Market, catalogue_json

EVENTS_TOPIC = "core.events.v1"
UP_PG_PREFIX = "up-postgres"
"""Where `make up`'s PostgreSQL archives its WAL and base backups, in the S3 store."""
DEMO_KEY, DEMO_SECRET = "demo", "demo-secret"  # EDGE_API_SECRETS default of `make up`


def gateway_market(symbol: str, matcher: str) -> Market:
    """The catalogue entry `make up` gives the gateway (and, through it, the matcher)."""
    base, _, quote = symbol.partition("-")
    return Market(symbol, base, quote or "USDT", matcher=matcher)


@dataclass(frozen=True)
class StackSettings:
    """Where `make up` puts things; each field is read from the variable in its comment."""

    run_dir: Path  # EXCHANGE_RUN_DIR, default <repo>/.run/up
    pg_port: int  # EXCHANGE_PG_PORT, default 25432 (the seed's PostgreSQL port)
    kafka_port: int  # EXCHANGE_KAFKA_PORT, default 29092 (the seed's Kafka port)
    kafka_controller_port: int  # EXCHANGE_KAFKA_CONTROLLER_PORT, default 29093
    s3_port: int  # EXCHANGE_S3_PORT, default 29002 (the seed's object store port)
    clickhouse_tcp_port: int  # EXCHANGE_CLICKHOUSE_TCP_PORT, default 29000 (the seed's)
    clickhouse_http_port: int  # EXCHANGE_CLICKHOUSE_HTTP_PORT, default 28123 (the seed's)
    history_http_port: int  # HISTORY_HTTP_PORT, default 8093
    kube_api_port: int  # EXCHANGE_KUBE_API_PORT, default 26443
    kube: bool  # EXCHANGE_UP_KUBE, default 0: also start a Kubernetes API (for operator work)
    symbol: str  # EXCHANGE_UP_SYMBOL, default BTC-USDT: the sample market
    matcher_grpc_port: int  # MATCHER_GRPC_PORT, default 50051
    matcher_http_port: int  # MATCHER_HTTP_PORT, default 8090
    ledger_http_port: int  # LEDGER_HTTP_PORT, default 8082 (the seed's ledger port)
    gateway_http_port: int  # EDGE_HTTP_PORT, default 8081 (the seed's edge port)
    prometheus_port: int = 29090  # EXCHANGE_PROMETHEUS_PORT, default 29090 (the seed's)
    observe: bool = True  # EXCHANGE_UP_OBSERVE, default 1: Prometheus with the alert rules
    prometheus_interval: float = 5.0  # seconds between scrapes and evaluations (tests: 1)
    # With `observe`, Jaeger (the trace store) too: OTLP in, the query API out.
    otlp_grpc_port: int = 24317  # EXCHANGE_OTLP_GRPC_PORT, default 24317 (the seed's)
    otlp_http_port: int = 24318  # EXCHANGE_OTLP_HTTP_PORT, default 24318 (the seed's)
    traces_port: int = 16686  # EXCHANGE_TRACES_PORT, default 16686 (Jaeger's query API)

    @classmethod
    def from_env(cls) -> StackSettings:
        env = os.environ
        return cls(
            run_dir=Path(env.get("EXCHANGE_RUN_DIR", paths.REPO_ROOT / ".run" / "up")),
            pg_port=_port(env, "EXCHANGE_PG_PORT", 25432),
            kafka_port=_port(env, "EXCHANGE_KAFKA_PORT", 29092),
            kafka_controller_port=_port(env, "EXCHANGE_KAFKA_CONTROLLER_PORT", 29093),
            s3_port=_port(env, "EXCHANGE_S3_PORT", 29002),
            clickhouse_tcp_port=_port(env, "EXCHANGE_CLICKHOUSE_TCP_PORT", 29000),
            clickhouse_http_port=_port(env, "EXCHANGE_CLICKHOUSE_HTTP_PORT", 28123),
            history_http_port=_port(env, "HISTORY_HTTP_PORT", 8093),
            kube_api_port=_port(env, "EXCHANGE_KUBE_API_PORT", 26443),
            kube=env.get("EXCHANGE_UP_KUBE", "0") not in ("0", "false", "no"),
            symbol=env.get("EXCHANGE_UP_SYMBOL", "BTC-USDT"),
            matcher_grpc_port=_port(env, "MATCHER_GRPC_PORT", 50051),
            matcher_http_port=_port(env, "MATCHER_HTTP_PORT", 8090),
            ledger_http_port=_port(env, "LEDGER_HTTP_PORT", 8082),
            gateway_http_port=_port(env, "EDGE_HTTP_PORT", 8081),
            prometheus_port=_port(env, "EXCHANGE_PROMETHEUS_PORT", 29090),
            observe=env.get("EXCHANGE_UP_OBSERVE", "1") not in ("0", "false", "no"),
            otlp_grpc_port=_port(env, "EXCHANGE_OTLP_GRPC_PORT", 24317),
            otlp_http_port=_port(env, "EXCHANGE_OTLP_HTTP_PORT", 24318),
            traces_port=_port(env, "EXCHANGE_TRACES_PORT", 16686),
        )

    @classmethod
    def on_free_ports(
        cls, run_dir: Path, symbol: str = "BTC-USDT", *, observe: bool = False
    ) -> StackSettings:
        """`make up`'s venue for a test or a benchmark: every port free now, data in
        `run_dir`, no Kubernetes API; Prometheus only with `observe` (benchmarks measure the
        venue without a scraper)."""
        return cls(
            run_dir, free_port(), free_port(), free_port(), free_port(), free_port(),
            free_port(), free_port(), free_port(), False, symbol, free_port(), free_port(),
            free_port(), free_port(), prometheus_port=free_port(), observe=observe,
            otlp_grpc_port=free_port(), otlp_http_port=free_port(), traces_port=free_port(),
        )  # fmt: skip


def _port(env: os._Environ[str], name: str, default: int) -> int:
    raw = env.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SystemExit(f"{name}={raw!r} is not a TCP port (1-65535)")
    return int(raw)


@dataclass
class Stack:
    settings: StackSettings
    parts: list[Part] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    backups: BackupSchedule | None = None
    matcher: MatcherProcess | None = None
    ledger: LedgerProcess | None = None
    gateway: GatewayProcess | None = None
    """The exchange's own processes once started (tests and benchmarks drive them)."""
    prometheus: PrometheusServer | None = None

    def start(self) -> None:
        s = self.settings
        s.run_dir.mkdir(parents=True, exist_ok=True)
        s.run_dir.chmod(0o755)
        store = s3.S3Server(s.run_dir, s.s3_port)
        self._start("s3", store, lambda: "SeaweedFS S3")
        archive = store.settings(prefix="up")
        self.endpoints["S3 archive"] = f"{store.endpoint}/{archive.bucket}/{archive.prefix}"
        pg_archive = PgArchive(store.settings(prefix=UP_PG_PREFIX))
        pg = postgres.PostgresServer(s.run_dir, s.pg_port, durable=True, archive=pg_archive)
        self._start("postgres", pg, postgres.version)
        self.endpoints["PostgreSQL"] = pg.dsn
        self.endpoints["PostgreSQL backups"] = f"{pg_archive.url}/{pg_archive.server}"
        broker = kafka.KafkaBroker(s.run_dir, s.kafka_port, s.kafka_controller_port)
        self._start("kafka", broker, kafka.version)
        self.endpoints["Kafka bootstrap"] = broker.bootstrap
        asyncio.run(kafka.ensure_topic(broker.bootstrap, EVENTS_TOPIC, partitions=3))
        self.endpoints["Events topic"] = EVENTS_TOPIC
        history_db = clickhouse.ClickHouseServer(
            s.run_dir, s.clickhouse_tcp_port, s.clickhouse_http_port
        )
        self._start("clickhouse", history_db, clickhouse.version)
        self.endpoints["ClickHouse"] = history_db.url
        writer = HistoryProcess(s.run_dir, history_db.url, broker.bootstrap, EVENTS_TOPIC,
                                http_port=s.history_http_port)  # fmt: skip
        self._start("history writer", writer, lambda: "exchange history")
        self.endpoints["History writer ops"] = f"{writer.ops_url}/metrics"
        traced = self._start_jaeger() if s.observe else {}
        matcher = MatcherProcess(
            s.run_dir,
            symbol=s.symbol,
            kafka_bootstrap=broker.bootstrap,
            events_topic=EVENTS_TOPIC,
            grpc_port=s.matcher_grpc_port,
            http_port=s.matcher_http_port,
        )
        # One catalogue entry drives both: the matcher's lot and tick are the gateway's.
        market = gateway_market(s.symbol, matcher.target)
        matcher.extra_env.update(market.matcher_env())
        matcher.extra_env.update(archive.env("MATCHER_ARCHIVE"))
        matcher.extra_env.update(traced.get("MATCHER", {}))
        self._start(f"matcher {s.symbol}", matcher, lambda: "exchange matcher")
        self.matcher = matcher
        self.endpoints[f"Matcher {s.symbol}"] = f"grpc://{matcher.target}"
        self.endpoints["Matcher ops"] = f"http://127.0.0.1:{s.matcher_http_port}/metrics"
        # The ledger: migrates its schema (advisory lock), settles the events topic, and
        # reconciles the sample market against its matcher (local mode: auto safety switch).
        ledger = LedgerProcess(
            s.run_dir,
            pg.dsn,
            broker.bootstrap,
            EVENTS_TOPIC,
            markets=f"{s.symbol}={matcher.target}",
            http_port=s.ledger_http_port,
            admin_tokens=os.environ.get("LEDGER_ADMIN_TOKENS", ""),
            extra_env=traced.get("LEDGER", {}),
        )
        self._start("ledger", ledger, lambda: "exchange ledger")
        self.ledger = ledger
        self.endpoints["Ledger API"] = ledger.url
        gateway = GatewayProcess(
            s.run_dir,
            pg.dsn,
            catalogue_json((market,)),
            kafka_bootstrap=broker.bootstrap,
            events_topic=EVENTS_TOPIC,
            http_port=s.gateway_http_port,
            api_secrets=os.environ.get("EDGE_API_SECRETS", f"{DEMO_KEY}:{DEMO_SECRET}"),
            extra_env={
                "EDGE_HISTORY_CLICKHOUSE_URL": history_db.url,
                "EDGE_LEDGER_URL": ledger.url,  # a trader's fills, from the book of record
                "EDGE_LEDGER_ADMIN_TOKEN": os.environ.get("EDGE_LEDGER_ADMIN_TOKEN", ""),
                **traced.get("EDGE", {}),
            },
        )
        self._start("gateway", gateway, lambda: "exchange gateway")
        self.gateway = gateway
        # Base backups once the ledger has migrated its schema: now, then every
        # EXCHANGE_PG_BACKUP_HOURS (the WAL archive covers the time between).
        hours = float(os.environ.get("EXCHANGE_PG_BACKUP_HOURS", "24"))
        self.backups = BackupSchedule(
            pg_archive, pg.host, pg.port, postgres.SUPERUSER, hours * 3600
        )
        self.backups.start()
        self.endpoints["Gateway REST/WS"] = gateway.url
        if webui.web_dir("") is not None:
            self.endpoints["Web UI"] = f"{gateway.url}/"
            self.endpoints["Fund a UI account"] = (
                f"{sys.executable} -m workloads.gateway.example_client --ledger {ledger.url}"
                " --deposit-to <the account on the UI's Account page>"
            )
        self.endpoints["First signed order"] = (
            f"{sys.executable} -m workloads.gateway.example_client --url {gateway.url}"
            f" --ledger {ledger.url}"
        )
        if s.observe:
            self._start_prometheus()
        if s.kube:
            missing = [
                n for n in ("etcd", *gobuild.CONTROL_PLANE) if not gobuild.binary(n).exists()
            ]
            if missing:
                raise SystemExit(f"Kubernetes binaries missing {missing}: run `make setup`")
            plane = kube.ControlPlane(s.run_dir, s.kube_api_port)
            self._start("kubernetes", plane, kube.version)
            self.endpoints["Kubernetes API"] = plane.server
            self.endpoints["kubeconfig"] = str(plane.kubeconfig)

    def _start_jaeger(self) -> dict[str, dict[str, str]]:
        """Jaeger, started before the processes that export to it; their OTLP settings by
        variable prefix. `make up` traces every order (EDGE_OTEL_SAMPLE_RATIO=1): one person's
        orders cost nothing, and each one's trace is there to open."""
        s = self.settings
        if not gobuild.binary("jaeger").exists():
            raise SystemExit("Jaeger missing: run `make setup` (or EXCHANGE_UP_OBSERVE=0)")
        server = jaeger.JaegerServer(
            s.run_dir,
            otlp_grpc_port=s.otlp_grpc_port,
            otlp_http_port=s.otlp_http_port,
            query_port=s.traces_port,
        )
        self._start("jaeger", server, jaeger.version)
        self.endpoints["Traces"] = f"{server.query_url}/#<X-Trace-Id of a response>"
        self.endpoints["Show a trace"] = (
            f"{sys.executable} -m e2e.env.jaeger --url {server.query_url} show <X-Trace-Id>"
        )
        return {
            "MATCHER": {"MATCHER_OTEL_ENDPOINT": server.otlp_grpc_endpoint},
            "LEDGER": {"LEDGER_OTEL_ENDPOINT": server.otlp_http_endpoint},
            "EDGE": {
                "EDGE_OTEL_ENDPOINT": server.otlp_http_endpoint,
                "EDGE_OTEL_SAMPLE_RATIO": os.environ.get("EDGE_OTEL_SAMPLE_RATIO", "1"),
            },
        }

    def _start_prometheus(self) -> None:
        """Prometheus scraping the matcher, ledger, gateway and history writer (job labels
        as the chart's PodMonitor sets them), with the venue's alert rules loaded."""
        if not prometheus.SERVER.exists():
            raise SystemExit("Prometheus missing: run `make setup` (or EXCHANGE_UP_OBSERVE=0)")
        s = self.settings
        local = "127.0.0.1:{}".format
        jobs = (
            ScrapeJob("matcher", (local(s.matcher_http_port),), {"market": s.symbol}),
            ScrapeJob("ledger", (local(s.ledger_http_port),)),
            ScrapeJob("gateway", (local(s.gateway_http_port),)),
            ScrapeJob("history", (local(s.history_http_port),)),
        )
        server = PrometheusServer(
            s.run_dir, s.prometheus_port, jobs, interval=s.prometheus_interval
        )
        self._start("prometheus", server, prometheus.version)
        self.prometheus = server
        self.endpoints["Prometheus"] = server.url
        self.endpoints["Alerts"] = f"{server.url}/alerts"

    def _start(self, name: str, part: Part, version: Callable[[], str]) -> None:
        self.parts.append(part)
        result = part.start()
        took = sum(result.values()) if isinstance(result, dict) else result
        print(f"{name}: {version()} ready in {took:.1f}s", file=sys.stderr)

    def stop(self) -> None:
        if self.backups is not None:
            self.backups.stop()
        for part in reversed(self.parts):
            part.stop()
        self.parts.clear()
