"""The ledger process's settings, from environment variables, validated at startup.

One root dataclass made of grouped dataclasses; `from_env` raises `SettingsError` naming the
variable when a value is invalid, so a bad deployment stops at once with a clear message.
The seed's `LEDGER_*` names are kept where the seed has them.

| variable | default | meaning |
|---|---|---|
| LEDGER_DB_DSN | postgresql://exchange@127.0.0.1:25432/postgres | PostgreSQL (`make up`'s) |
| LEDGER_DB_SCHEMA | (the DSN's) | the ledger's schema, created if missing (one per venue) |
| LEDGER_DB_POOL_SIZE | 8 | connections for the API, reconciliation and invariants |
| LEDGER_MIGRATE_ON_START | true | run the migrations (under an advisory lock) at start |
| LEDGER_HTTP_HOST | 127.0.0.1 | address of the admin/internal/ops HTTP API |
| LEDGER_HTTP_PORT | 8082 | the seed's ledger port |
| LEDGER_MAX_BODY_BYTES | 65536 | larger request bodies get 413 payload_too_large |
| LEDGER_ADMIN_TOKENS | (empty) | `name:token,...`; admin identities (corrections need them) |
| LEDGER_ADMIN_TOKEN | (empty) | the seed's single token, admin name `admin` |
| LEDGER_MARKETS | BTC-USDT=127.0.0.1:50051 | `SYMBOL[=host:port],...` (assets: symbol halves) |
| LEDGER_FEE_ACCOUNT | fees | the matchers' fee account (a system account) |
| LEDGER_KAFKA_ENABLED | true | run the settlement consumer |
| LEDGER_KAFKA_BROKERS | 127.0.0.1:29092 | Kafka bootstrap |
| LEDGER_KAFKA_TOPIC | core.events.v1 | the core events topic |
| LEDGER_KAFKA_GROUP_ID | ledger-settlement-v1 | consumer group (offsets committed after the DB) |
| LEDGER_KAFKA_GROUP_INSTANCE_ID | ledger-<host name> | static membership (empty: dynamic) |
| LEDGER_KAFKA_SESSION_TIMEOUT_MS | 30000 | how long the broker keeps a silent member's partitions |
| LEDGER_BATCH_MAX_EVENTS | 10000 | most events per database transaction |
| LEDGER_RECONCILIATION_ENABLED | true | run the periodic reconciliation |
| LEDGER_RECONCILIATION_INTERVAL_MS | 5000 | evaluation period |
| LEDGER_RECONCILIATION_LAG_THRESHOLD | 10 | lag (commands) the ledger may trail the matcher by |
| LEDGER_RECONCILIATION_LAG_GRACE_MS | 60000 | how long it may trail by more before a breach |
| LEDGER_RECONCILIATION_STATE_STALE_MS | 30000 | matcher seq older than this is a breach |
| LEDGER_RECONCILIATION_SAFETY_MODE | CANCEL_ONLY | mode recommended on breach (or SOFT/HARD_HALT) |
| LEDGER_RECONCILIATION_AUTO_SWITCH | true | local mode: call the matcher's SetSymbolMode |
| LEDGER_RECONCILIATION_SAFETY_LATCH_ENABLED | true | a breach stays latched until released |
| LEDGER_RECONCILIATION_LATCH_ALLOW_NEGATIVE | false | negative balances do not block a release |
| LEDGER_INVARIANT_INTERVAL_MS | 60000 | periodic invariant check; 0 disables it |
| LEDGER_GUARD_AUTO_SWITCH | true | an invariant failure switches the markets' mode |
| LEDGER_GUARD_SAFETY_MODE | CANCEL_ONLY | the mode the guard switches to |
| LEDGER_FUNDING_RETRY_MS | 2000 | resend period of funding commands the matcher has not answered |
| LEDGER_OTEL_ENDPOINT | (empty) | OTLP/HTTP URL (`http://host:4318/v1/traces`) or gRPC host:port |
| LEDGER_OTEL_SAMPLE_PROB | 1.0 | share of traces recorded (parent-based) |
| LEDGER_OTEL_SERVICE_NAME | ledger | the spans' `service.name` |
| LEDGER_OTEL_INSECURE | true | OTLP/gRPC without TLS |
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from workloads.ledger.reconciliation import Limits

SAFETY_MODES = ("CANCEL_ONLY", "SOFT_HALT", "HARD_HALT")
_SYMBOL = re.compile(r"^[A-Z0-9]{1,16}-[A-Z0-9]{1,16}$")
_TARGET = re.compile(r"^[A-Za-z0-9.\-]+:\d{1,5}$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class SettingsError(ValueError):
    """A setting is invalid; the message names the variable."""


@dataclass(frozen=True)
class Market:
    """A market the ledger reconciles: its assets and, in local mode, its matcher."""

    symbol: str
    base_asset: str
    quote_asset: str
    matcher_target: str = ""
    """host:port of the matcher's gRPC service; empty: the engine seq is pushed instead
    (`POST /v1/internal/reconciliation/engine-seq`) and no mode switch is possible."""

    @property
    def assets(self) -> tuple[str, str]:
        return (self.base_asset, self.quote_asset)


@dataclass(frozen=True)
class DatabaseSettings:
    dsn: str = "postgresql://exchange@127.0.0.1:25432/postgres"
    pool_size: int = 8
    """Connections besides the settlement writer's own; the API and checks share them."""
    migrate_on_start: bool = True
    """Replicas race safely: the migration holds a PostgreSQL advisory lock."""


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8082
    max_body_bytes: int = 64 * 1024
    """Bytes; no legitimate admin or injection request is near this, a flood is."""
    admin_tokens: Mapping[str, str] = field(default_factory=dict)
    """token -> admin name. Empty: admin routes are open and corrections are refused
    (a two-person rule needs identities)."""


@dataclass(frozen=True)
class KafkaSettings:
    enabled: bool = True
    brokers: str = "127.0.0.1:29092"
    topic: str = "core.events.v1"
    group_id: str = "ledger-settlement-v1"
    group_instance_id: str = ""
    """Static group membership (KIP-345): a restarted ledger with the same instance id gets
    its partitions back at once, instead of waiting out its dead predecessor's session and
    a rebalance (8.6 s measured after a kill -9). Empty: dynamic membership. Give each
    replica its own, stable across its restarts (the pod name, the host name)."""
    session_timeout_ms: int = 30_000
    """How long the broker keeps a silent member's partitions. A restarted static member
    takes them back at once whatever this is; longer rides out a broker pause (a frozen
    broker resumes with every session as old as the pause) without a rebalance."""
    batch_max_events: int = 10_000
    """Events per database transaction: one per trade is ~18x slower (PERFORMANCE.md). A
    batch's balance, hold and cursor updates and its commit cost the same whatever its size
    (a batch touches most active accounts), so a backlog settles in big batches: 10,000
    used ~10% less CPU than 5,000 in ledger.settle. Without a backlog a batch is whatever
    has arrived, so latency does not grow with it."""


@dataclass(frozen=True)
class ReconciliationSettings:
    enabled: bool = True
    interval_ms: int = 5000
    lag_threshold: int = 10
    """Commands the ledger may trail the matcher by without counting as behind."""
    lag_grace_ms: int = 60_000
    """How long it may stay behind by more than the threshold before the market is in
    breach. A settlement pause that is not an error lasts seconds: a ledger restart (under
    a second with static group membership), a database freeze, a broker freeze of 15 s
    (behind for 14 s in the fault tests); a minute covers those with room, and a ledger
    that is wrong rather than late breaches at once (a seq or epoch regression, a stalled
    settlement, a failed invariant)."""
    stale_ms: int = 30_000
    """Milliseconds since the matcher's seq was last observed before that is a breach."""
    safety_mode: str = "CANCEL_ONLY"
    auto_switch: bool = True
    latch_enabled: bool = True
    latch_allow_negative: bool = False
    """Only for stub smoke runs: releasing despite negative non-system balances."""

    @property
    def limits(self) -> Limits:
        return Limits(self.lag_threshold, self.lag_grace_ms, self.stale_ms)


@dataclass(frozen=True)
class GuardSettings:
    invariant_interval_ms: int = 60_000
    """Full checks scan the postings; once a minute keeps that cost negligible."""
    auto_switch: bool = True
    safety_mode: str = "CANCEL_ONLY"


@dataclass(frozen=True)
class OtelSettings:
    endpoint: str = ""
    """LEDGER_OTEL_ENDPOINT: the seed's `http://localhost:24318/v1/traces` (OTLP/HTTP), or a
    `host:port` (OTLP/gRPC); empty: trace ids in responses, no span built or exported."""
    sample_ratio: float = 1.0
    """LEDGER_OTEL_SAMPLE_PROB: share of traces recorded; a request's sampled parent wins."""
    service_name: str = "ledger"
    """LEDGER_OTEL_SERVICE_NAME."""
    insecure: bool = True
    """LEDGER_OTEL_INSECURE: plaintext gRPC (the local collector has no TLS)."""


@dataclass(frozen=True)
class LedgerSettings:
    markets: tuple[Market, ...] = ()
    fee_account: str = "fees"
    funding_retry_ms: int = 2000
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    reconciliation: ReconciliationSettings = field(default_factory=ReconciliationSettings)
    guard: GuardSettings = field(default_factory=GuardSettings)
    otel: OtelSettings = field(default_factory=OtelSettings)

    def market(self, symbol: str) -> Market | None:
        for market in self.markets:
            if market.symbol == symbol:
                return market
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LedgerSettings:
        env = os.environ if env is None else env
        read = _Reader(env)
        safety = read.choice("LEDGER_RECONCILIATION_SAFETY_MODE", "CANCEL_ONLY", SAFETY_MODES)
        return cls(
            markets=parse_markets(env.get("LEDGER_MARKETS", "BTC-USDT=127.0.0.1:50051")),
            fee_account=read.name("LEDGER_FEE_ACCOUNT", "fees"),
            funding_retry_ms=read.integer("LEDGER_FUNDING_RETRY_MS", 2000, 50),
            database=DatabaseSettings(
                dsn=with_schema(
                    env.get("LEDGER_DB_DSN", DatabaseSettings.dsn), read.schema("LEDGER_DB_SCHEMA")
                ),
                pool_size=read.integer("LEDGER_DB_POOL_SIZE", 8, 2),
                migrate_on_start=read.flag("LEDGER_MIGRATE_ON_START", True),
            ),
            http=HttpSettings(
                host=env.get("LEDGER_HTTP_HOST", "127.0.0.1"),
                port=read.integer("LEDGER_HTTP_PORT", 8082, 0, 65535),
                max_body_bytes=read.integer("LEDGER_MAX_BODY_BYTES", 64 * 1024, 1024),
                admin_tokens=parse_tokens(
                    env.get("LEDGER_ADMIN_TOKENS", ""), env.get("LEDGER_ADMIN_TOKEN", "")
                ),
            ),
            kafka=KafkaSettings(
                enabled=read.flag("LEDGER_KAFKA_ENABLED", True),
                brokers=env.get("LEDGER_KAFKA_BROKERS", "127.0.0.1:29092"),
                topic=env.get("LEDGER_KAFKA_TOPIC", "core.events.v1"),
                group_id=env.get("LEDGER_KAFKA_GROUP_ID", "ledger-settlement-v1"),
                group_instance_id=env.get(
                    "LEDGER_KAFKA_GROUP_INSTANCE_ID", f"ledger-{socket.gethostname()}"
                ).strip(),
                session_timeout_ms=read.integer(
                    "LEDGER_KAFKA_SESSION_TIMEOUT_MS", 30_000, 6_000, 300_000
                ),
                batch_max_events=read.integer("LEDGER_BATCH_MAX_EVENTS", 10_000, 1, 100_000),
            ),
            reconciliation=ReconciliationSettings(
                enabled=read.flag("LEDGER_RECONCILIATION_ENABLED", True),
                interval_ms=read.integer("LEDGER_RECONCILIATION_INTERVAL_MS", 5000, 10),
                lag_threshold=read.integer("LEDGER_RECONCILIATION_LAG_THRESHOLD", 10, 0),
                lag_grace_ms=read.integer("LEDGER_RECONCILIATION_LAG_GRACE_MS", 60_000, 0),
                stale_ms=read.integer("LEDGER_RECONCILIATION_STATE_STALE_MS", 30_000, 10),
                safety_mode=safety,
                auto_switch=read.flag("LEDGER_RECONCILIATION_AUTO_SWITCH", True),
                latch_enabled=read.flag("LEDGER_RECONCILIATION_SAFETY_LATCH_ENABLED", True),
                latch_allow_negative=read.flag("LEDGER_RECONCILIATION_LATCH_ALLOW_NEGATIVE", False),
            ),
            guard=GuardSettings(
                invariant_interval_ms=read.integer("LEDGER_INVARIANT_INTERVAL_MS", 60_000, 0),
                auto_switch=read.flag("LEDGER_GUARD_AUTO_SWITCH", True),
                safety_mode=read.choice("LEDGER_GUARD_SAFETY_MODE", "CANCEL_ONLY", SAFETY_MODES),
            ),
            otel=OtelSettings(
                endpoint=env.get("LEDGER_OTEL_ENDPOINT", "").strip(),
                sample_ratio=read.number("LEDGER_OTEL_SAMPLE_PROB", 1.0, 0.0, 1.0),
                service_name=env.get("LEDGER_OTEL_SERVICE_NAME", "").strip() or "ledger",
                insecure=read.flag("LEDGER_OTEL_INSECURE", True),
            ),
        )


def with_schema(dsn: str, schema: str) -> str:
    """`dsn` with `schema` as its search path (asyncpg takes unknown query parameters as
    server settings), so that every connection of the ledger lands in it."""
    if not schema:
        return dsn
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("search_path", schema)])))


def parse_markets(raw: str) -> tuple[Market, ...]:
    """`BTC-USDT=127.0.0.1:50051,ETH-USDT` -> markets (assets are the symbol's halves)."""
    markets: list[Market] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        symbol, _, target = item.partition("=")
        if not _SYMBOL.match(symbol):
            raise SettingsError(f"LEDGER_MARKETS: {symbol!r} is not a symbol like BTC-USDT")
        if target and not _TARGET.match(target):
            raise SettingsError(f"LEDGER_MARKETS: {target!r} is not a host:port")
        if any(m.symbol == symbol for m in markets):
            raise SettingsError(f"LEDGER_MARKETS: {symbol} is listed twice")
        base, _, quote = symbol.partition("-")
        markets.append(Market(symbol, base, quote, target))
    return tuple(markets)


def parse_tokens(tokens: str, single: str) -> dict[str, str]:
    """`alice:tok1,bob:tok2` (and the seed's single token as `admin`) -> {token: name}."""
    by_token: dict[str, str] = {}
    pairs = [p.strip() for p in tokens.split(",") if p.strip()]
    if single:
        pairs.append(f"admin:{single}")
    for pair in pairs:
        name, sep, token = pair.partition(":")
        if not sep or not _NAME.match(name) or len(token) < 4:
            raise SettingsError(
                "LEDGER_ADMIN_TOKENS: each entry must be name:token (token of 4+ characters)"
            )
        if token in by_token:
            raise SettingsError(f"LEDGER_ADMIN_TOKENS: a token is given twice ({name})")
        if name in by_token.values():
            raise SettingsError(f"LEDGER_ADMIN_TOKENS: admin {name} is given twice")
        by_token[token] = name
    return by_token


@dataclass(frozen=True)
class _Reader:
    env: Mapping[str, str]

    def integer(self, name: str, default: int, low: int = 0, high: int | None = None) -> int:
        raw = self.env.get(name, str(default)).strip()
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise SettingsError(f"{name}={value} must be {bound}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.env.get(name, str(default)).strip()
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
        if not low <= value <= high:
            raise SettingsError(f"{name}={value} must be between {low} and {high}")
        return value

    def schema(self, name: str) -> str:
        value = self.env.get(name, "").strip()
        if value and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise SettingsError(f"{name}={value!r} must be a plain lower-case SQL identifier")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name, "true" if default else "false").strip().lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = self.env.get(name, default).strip().upper()
        if raw not in allowed:
            raise SettingsError(f"{name}={raw!r} must be one of {', '.join(allowed)}")
        return raw

    def name(self, name: str, default: str) -> str:
        raw = self.env.get(name, default).strip()
        if not _NAME.match(raw):
            raise SettingsError(f"{name}={raw!r} is not a valid account name")
        return raw
