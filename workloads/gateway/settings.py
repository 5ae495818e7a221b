"""The gateway's settings: one root object of grouped dataclasses, read from `EDGE_*`.

Every variable is validated at startup; an invalid value stops the process with a message
naming it. The table of variables lives in the package README.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from workloads.common import envvars
from workloads.common.envvars import SettingsError as SettingsError  # re-exported
from workloads.gateway.markets import Market, MarketError, parse_markets


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    """EDGE_HTTP_HOST: the address REST, WebSocket and the ops endpoints bind."""
    port: int = 8081
    """EDGE_HTTP_PORT: the seed's edge port."""
    instance: str = "gateway"
    """EDGE_INSTANCE: this replica's name in logs and traces."""


@dataclass(frozen=True)
class AuthSettings:
    api_secrets: dict[str, str] = field(default_factory=dict)
    """EDGE_API_SECRETS `key1:secret1,key2:secret2`: static keys; account = the key."""
    skew_sec: int = 30
    """EDGE_AUTH_SKEW_SEC: largest |now - X-TS| accepted (Coinbase uses 30 s)."""
    replay_ttl_sec: int = 120
    """EDGE_REPLAY_TTL_SEC: a signature is remembered (and refused again) this long."""
    rate_limit_per_minute: int = 1000
    """EDGE_RATE_LIMIT_PER_MINUTE: requests per principal per minute window; 0 disables."""
    session_ttl_hours: int = 24
    """EDGE_SESSION_TTL_HOURS: a login session's lifetime."""
    idempotency_ttl_hours: int = 24
    """EDGE_IDEMPOTENCY_TTL_HOURS: how long an Idempotency-Key's response is kept."""


@dataclass(frozen=True)
class CoreSettings:
    disabled: bool = False
    """EDGE_DISABLE_CORE: no matcher calls; order routes answer `core_unavailable`."""
    markets: tuple[Market, ...] = ()
    """EDGE_MARKETS (JSON) or EDGE_MARKETS_FILE: the market catalogue, see markets.py."""
    batch_window_ms: float = 1.0
    """EDGE_BATCH_WINDOW_MS: how long an order waits for others to share a SubmitBatch."""
    batch_max: int = 500
    """EDGE_BATCH_MAX: most commands per SubmitBatch (the matcher takes up to 5000)."""
    grpc_timeout_sec: float = 5.0
    """EDGE_GRPC_TIMEOUT_SEC: deadline of one matcher call."""
    order_read_wait_ms: int = 2000
    """EDGE_ORDER_READ_WAIT_MS: a GET for an order this replica has not seen yet waits this
    long for the events topic to reach the order's seq (another replica placed it)."""
    order_cache_size: int = 200_000
    """EDGE_ORDER_CACHE_SIZE: orders kept for GET /v1/orders/{id}; oldest forgotten first."""


@dataclass(frozen=True)
class KafkaSettings:
    brokers: str = ""
    """EDGE_KAFKA_BROKERS: bootstrap servers; empty: no events (no market data)."""
    topic: str = "core.events.v1"
    """EDGE_KAFKA_TOPIC (alias EDGE_KAFKA_TRADE_TOPIC): the core events topic."""
    group_id: str = "edge-trades-v1"
    """EDGE_KAFKA_GROUP_ID: client id prefix. Every replica reads every partition itself
    (no consumer group), because each serves all markets' data and private updates."""
    start: str = "earliest"
    """EDGE_KAFKA_START `earliest|latest`: earliest rebuilds balances and order history."""


@dataclass(frozen=True)
class WsSettings:
    max_subscriptions: int = 64
    """EDGE_WS_MAX_SUBSCRIPTIONS: per connection."""
    command_rate_limit: int = 240
    """EDGE_WS_COMMAND_RATE_LIMIT: client commands per window."""
    command_window_sec: int = 60
    """EDGE_WS_COMMAND_WINDOW_SEC."""
    ping_interval_sec: float = 20
    """EDGE_WS_PING_INTERVAL_SEC: server pings this often."""
    pong_timeout_sec: float = 60
    """EDGE_WS_PONG_TIMEOUT_SEC: a connection silent this long (no pong, no message) closes."""
    read_limit_bytes: int = 1 << 20
    """EDGE_WS_READ_LIMIT_BYTES: largest client message; larger closes with 1009."""
    allowed_origins: frozenset[str] = frozenset()
    """EDGE_WS_ALLOWED_ORIGINS: comma list; empty allows any. A request without Origin
    (not a browser) is allowed."""
    send_buffer_bytes: int = 1 << 20
    """EDGE_WS_SEND_BUFFER_BYTES: a connection whose unsent bytes exceed this is slow: its
    conflatable channels conflate and its trades channel overflows (see ws policy)."""
    socket_sndbuf_bytes: int = 256 << 10
    """EDGE_WS_SOCKET_SNDBUF_BYTES: kernel send buffer per WebSocket (SO_SNDBUF). Bounds kernel
    memory per connection; loopback autotuning would otherwise grow it to megabytes."""
    flush_ms: float = 20
    """EDGE_WS_FLUSH_MS: least time between two flushes; what changed in between shares one
    frame per channel and market."""


@dataclass(frozen=True)
class OtelSettings:
    endpoint: str = ""
    """EDGE_OTEL_ENDPOINT: OTLP collector, `host:port` (gRPC) or a URL with a path (OTLP/HTTP);
    empty: trace ids, no export."""
    insecure: bool = True
    """EDGE_OTEL_INSECURE."""
    service_name: str = "edge-gateway"
    """EDGE_OTEL_SERVICE_NAME."""
    sample_ratio: float = 0.01
    """EDGE_OTEL_SAMPLE_RATIO: share of orders (requests) traced, decided once per order here
    and followed by the matcher, the ledger and the feed; a caller's sampled `traceparent`
    is always followed. A traced order costs about 0.35 ms of CPU over the four processes
    (six spans built and encoded), so 1.0 takes about 40% of the order rate, 0.1 about 4%
    and 0.01 is within noise (`observe.overhead`); 1% of a busy venue's orders is still tens
    of traces a second. Set 1.0 where each order matters more than the rate (a local venue,
    the trace tests)."""


@dataclass(frozen=True)
class DbSettings:
    dsn: str = ""
    """EDGE_DB_DSN: PostgreSQL holding users, keys, sessions and edge state (required)."""
    schema: str = "gateway"
    """EDGE_DB_SCHEMA: the gateway's own schema, created if missing."""
    pool_size: int = 8
    """EDGE_DB_POOL_SIZE."""
    batch_window_ms: float = 1.0
    """EDGE_DB_BATCH_WINDOW_MS: admission and idempotency writes share one statement."""


@dataclass(frozen=True)
class GatewaySettings:
    http: HttpSettings = field(default_factory=HttpSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    core: CoreSettings = field(default_factory=CoreSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    ws: WsSettings = field(default_factory=WsSettings)
    otel: OtelSettings = field(default_factory=OtelSettings)
    db: DbSettings = field(default_factory=DbSettings)
    seed_market_data: bool = True
    """EDGE_SEED_MARKET_DATA: sample trades/book for catalogue markets without a matcher
    (never for a live market)."""
    smoke_routes: bool = False
    """EDGE_ENABLE_SMOKE_ROUTES: serve the test-only `POST /v1/smoke/trades` (404 when off)."""
    history_url: str = ""
    """EDGE_HISTORY_CLICKHOUSE_URL: the market history (`clickhouse://...`) for candles and
    trades older than memory holds; empty: memory only."""
    ledger_url: str = ""
    """EDGE_LEDGER_URL: the ledger's HTTP API, for a trader's own fills from the book of record
    (`GET /v1/account/trades`); empty: that route answers `ledger_unavailable`."""
    ledger_token: str = ""
    """EDGE_LEDGER_ADMIN_TOKEN: the gateway's token among the ledger's LEDGER_ADMIN_TOKENS."""
    web_dir: str = ""
    """EDGE_WEB_DIR: the built web UI served at `/` (default: `workloads/web/dist` beside the
    package, when it exists); `none`: no UI."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        return _Reader(os.environ if env is None else env).settings()


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        return self.env.get(name, default).strip()

    def integer(self, name: str, default: int, low: int = 0) -> int:
        return envvars.integer(self.env, name, default, low)

    def number(self, name: str, default: float, low: float = 0.0, high: float = 1e12) -> float:
        raw = self.text(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
        if not low <= value <= high:
            raise SettingsError(f"{name}={value} must lie in [{low}, {high}]")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name, "true" if default else "false").lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")

    def secrets(self) -> dict[str, str]:
        out: dict[str, str] = {}
        raw = self.text("EDGE_API_SECRETS", "")
        for item in filter(None, (p.strip() for p in raw.split(","))):
            key, sep, secret = item.partition(":")
            if not sep or not key or not secret or len(key) > 64 or not key.isprintable():
                raise SettingsError(
                    "EDGE_API_SECRETS must be `key:secret,...` (keys: <= 64 printable chars)"
                )
            out[key] = secret
        return out

    def markets(self) -> tuple[Market, ...]:
        raw = self.env.get("EDGE_MARKETS", "")
        path = self.env.get("EDGE_MARKETS_FILE", "")
        try:
            if path:
                with open(path, encoding="utf-8") as handle:
                    raw = handle.read()
            return parse_markets(raw)
        except (OSError, MarketError) as exc:
            raise SettingsError(f"EDGE_MARKETS: {exc}") from None

    def settings(self) -> GatewaySettings:
        start = self.text("EDGE_KAFKA_START", "earliest")
        if start not in ("earliest", "latest"):
            raise SettingsError(f"EDGE_KAFKA_START={start!r} must be earliest or latest")
        schema = self.text("EDGE_DB_SCHEMA", "gateway")
        if not schema.replace("_", "").isalnum() or not schema[:1].isalpha():
            raise SettingsError(f"EDGE_DB_SCHEMA={schema!r} must be a plain SQL identifier")
        origins = self.text("EDGE_WS_ALLOWED_ORIGINS", "")
        return GatewaySettings(
            http=HttpSettings(
                host=self.text("EDGE_HTTP_HOST", "127.0.0.1"),
                port=self.integer("EDGE_HTTP_PORT", 8081, 1),
                instance=self.text("EDGE_INSTANCE", "gateway"),
            ),
            auth=AuthSettings(
                api_secrets=self.secrets(),
                skew_sec=self.integer("EDGE_AUTH_SKEW_SEC", 30, 1),
                replay_ttl_sec=self.integer("EDGE_REPLAY_TTL_SEC", 120, 1),
                rate_limit_per_minute=self.integer("EDGE_RATE_LIMIT_PER_MINUTE", 1000),
                session_ttl_hours=self.integer("EDGE_SESSION_TTL_HOURS", 24, 1),
                idempotency_ttl_hours=self.integer("EDGE_IDEMPOTENCY_TTL_HOURS", 24, 1),
            ),
            core=CoreSettings(
                disabled=self.flag("EDGE_DISABLE_CORE", False),
                markets=self.markets(),
                batch_window_ms=self.number("EDGE_BATCH_WINDOW_MS", 1.0, 0.0, 100.0),
                batch_max=self.integer("EDGE_BATCH_MAX", 500, 1),
                grpc_timeout_sec=self.number("EDGE_GRPC_TIMEOUT_SEC", 5.0, 0.1, 300.0),
                order_read_wait_ms=self.integer("EDGE_ORDER_READ_WAIT_MS", 2000),
                order_cache_size=self.integer("EDGE_ORDER_CACHE_SIZE", 200_000, 100),
            ),
            kafka=KafkaSettings(
                brokers=self.text("EDGE_KAFKA_BROKERS", ""),
                topic=self.text(
                    "EDGE_KAFKA_TOPIC", self.text("EDGE_KAFKA_TRADE_TOPIC", "core.events.v1")
                ),
                group_id=self.text("EDGE_KAFKA_GROUP_ID", "edge-trades-v1"),
                start=start,
            ),
            ws=WsSettings(
                max_subscriptions=self.integer("EDGE_WS_MAX_SUBSCRIPTIONS", 64, 1),
                command_rate_limit=self.integer("EDGE_WS_COMMAND_RATE_LIMIT", 240, 1),
                command_window_sec=self.integer("EDGE_WS_COMMAND_WINDOW_SEC", 60, 1),
                ping_interval_sec=self.number("EDGE_WS_PING_INTERVAL_SEC", 20, 0.05, 3600),
                pong_timeout_sec=self.number("EDGE_WS_PONG_TIMEOUT_SEC", 60, 0.1, 3600),
                read_limit_bytes=self.integer("EDGE_WS_READ_LIMIT_BYTES", 1 << 20, 128),
                allowed_origins=frozenset(
                    o.strip().rstrip("/") for o in origins.split(",") if o.strip()
                ),
                send_buffer_bytes=self.integer("EDGE_WS_SEND_BUFFER_BYTES", 1 << 20, 1024),
                socket_sndbuf_bytes=self.integer("EDGE_WS_SOCKET_SNDBUF_BYTES", 256 << 10, 4096),
                flush_ms=self.number("EDGE_WS_FLUSH_MS", 20, 1, 10_000),
            ),
            otel=OtelSettings(
                endpoint=self.text("EDGE_OTEL_ENDPOINT", ""),
                insecure=self.flag("EDGE_OTEL_INSECURE", True),
                service_name=self.text("EDGE_OTEL_SERVICE_NAME", "edge-gateway"),
                sample_ratio=self.number("EDGE_OTEL_SAMPLE_RATIO", 0.01, 0.0, 1.0),
            ),
            db=DbSettings(
                dsn=self.text("EDGE_DB_DSN", ""),
                schema=schema,
                pool_size=self.integer("EDGE_DB_POOL_SIZE", 8, 1),
                batch_window_ms=self.number("EDGE_DB_BATCH_WINDOW_MS", 1.0, 0.0, 100.0),
            ),
            seed_market_data=self.flag("EDGE_SEED_MARKET_DATA", True),
            smoke_routes=self.flag("EDGE_ENABLE_SMOKE_ROUTES", False),
            history_url=self.text("EDGE_HISTORY_CLICKHOUSE_URL", ""),
            ledger_url=self.text("EDGE_LEDGER_URL", "").rstrip("/"),
            ledger_token=self.text("EDGE_LEDGER_ADMIN_TOKEN", ""),
            web_dir=self.text("EDGE_WEB_DIR", ""),
        )
