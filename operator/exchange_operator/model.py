"""The custom resources as the operator reads them: names, labels and a Market's spec as
frozen data (the CRD's defaults applied again here, so a spec read from anywhere is whole)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GROUP = "exchange.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MARKETS = "markets"
SAFETYMODES = "safetymodes"
FIELD_MANAGER = "exchange-operator"
PART_OF = "exchange-platform"

ROLE_LABEL = f"{GROUP}/role"
"""The label each matcher sets on its own pod: leader, standby, refusing, waiting."""
MATCHER_GRPC_PORT = 50051
MATCHER_HTTP_PORT = 8090
GATEWAY_PORT = 8081
LEDGER_PORT = 8082
HISTORY_PORT = 8093
IMAGE_USER = 10001

MODES = ("NORMAL", "CANCEL_ONLY", "SOFT_HALT", "HARD_HALT")
"""Symbol modes from the least to the most restrictive: the most restrictive wins."""


def matcher_name(market: str) -> str:
    """The name of a Market's matcher StatefulSet, Service, Lease, PDB and RBAC objects."""
    return f"matcher-{market}"


def labels(name: str, instance: str, component: str, market: str | None = None) -> dict[str, str]:
    """The recommended `app.kubernetes.io/*` labels, plus the market's own."""
    result = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
    }
    if market is not None:
        result[f"{GROUP}/market"] = market
    return result


def selector(name: str, instance: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": instance}


@dataclass(frozen=True)
class Failover:
    timeout_seconds: int = 5
    lease_duration_seconds: int = 10
    renew_deadline_seconds: int = 7
    retry_period_seconds: int = 2


@dataclass(frozen=True)
class Connections:
    config_map: str = "exchange-host-services"
    admin_tokens_secret: str = "exchange-admin-tokens"
    events_topic: str = ""


@dataclass(frozen=True)
class Archive:
    """spec.archive: where the matcher archives its WAL and snapshots (and restores from)."""

    endpoint: str
    """Empty: the venue ConfigMap's `EXCHANGE_S3_ENDPOINT`."""
    bucket: str
    credentials_secret: str
    prefix: str = ""
    region: str = "us-east-1"
    seal_seconds: int = 60
    lag_alert_seconds: int = 300
    keep_snapshots: int = 3

    @classmethod
    def parse(cls, spec: dict[str, Any] | None) -> Archive | None:
        if not spec:
            return None
        retention = spec.get("retention") or {}
        return cls(
            endpoint=str(spec.get("endpoint") or "").rstrip("/"),
            bucket=str(spec["bucket"]),
            credentials_secret=str((spec.get("credentialsSecretRef") or {})["name"]),
            prefix=str(spec.get("prefix") or ""),
            region=str(spec.get("region") or cls.region),
            seal_seconds=int(spec.get("sealSeconds", cls.seal_seconds)),
            lag_alert_seconds=int(spec.get("lagAlertSeconds", cls.lag_alert_seconds)),
            keep_snapshots=int(retention.get("keepSnapshots", cls.keep_snapshots)),
        )


@dataclass(frozen=True)
class MarketSpec:
    """A Market's spec (field names as in the CRD, snake_case)."""

    symbol: str
    base_asset: str
    quote_asset: str
    base_decimals: int = 8
    quote_decimals: int = 6
    lot_size: int = 10_000
    tick_size: int = 1
    max_price: int = 10**12
    max_lots: int = 10**6
    price_band_bps: int = 0
    reference_price: int = 0
    max_open_orders: int = 1000
    rate_limit: int = 0
    maker_fee_bps: int = 0
    taker_fee_bps: int = 0
    image: str = ""
    matcher_replicas: int = 2
    matcher_resources: dict[str, Any] = field(default_factory=dict)
    storage_size: str = "1Gi"
    storage_class: str = ""
    gateway_replicas: int = 1
    gateway_resources: dict[str, Any] = field(default_factory=dict)
    gateway_env: dict[str, str] = field(default_factory=dict)
    ledger_resources: dict[str, Any] = field(default_factory=dict)
    ledger_env: dict[str, str] = field(default_factory=dict)
    connections: Connections = field(default_factory=Connections)
    failover: Failover = field(default_factory=Failover)
    archive: Archive | None = None
    paused: bool = False

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> MarketSpec:
        symbol = str(spec["symbol"])
        base, _, quote = symbol.partition("-")
        limits = spec.get("limits") or {}
        fees = spec.get("fees") or {}
        matcher = spec.get("matcher") or {}
        storage = matcher.get("storage") or {}
        gateway = spec.get("gateway") or {}
        ledger = spec.get("ledger") or {}
        conn = spec.get("connections") or {}
        fail = spec.get("failover") or {}
        d = cls  # the defaults
        return cls(
            symbol=symbol,
            base_asset=spec.get("baseAsset") or base,
            quote_asset=spec.get("quoteAsset") or quote,
            base_decimals=int(spec.get("baseDecimals", d.base_decimals)),
            quote_decimals=int(spec.get("quoteDecimals", d.quote_decimals)),
            lot_size=int(spec.get("lotSize", d.lot_size)),
            tick_size=int(spec.get("tickSize", d.tick_size)),
            max_price=int(spec.get("maxPrice", d.max_price)),
            max_lots=int(spec.get("maxLots", d.max_lots)),
            price_band_bps=int(spec.get("priceBandBps", d.price_band_bps)),
            reference_price=int(spec.get("referencePrice", d.reference_price)),
            max_open_orders=int(limits.get("maxOpenOrders", d.max_open_orders)),
            rate_limit=int(limits.get("rateLimit", d.rate_limit)),
            maker_fee_bps=int(fees.get("makerBps", d.maker_fee_bps)),
            taker_fee_bps=int(fees.get("takerBps", d.taker_fee_bps)),
            image=str(spec.get("image") or ""),
            matcher_replicas=int(matcher.get("replicas", d.matcher_replicas)),
            matcher_resources=dict(matcher.get("resources") or {}),
            storage_size=str(storage.get("size") or d.storage_size),
            storage_class=str(storage.get("storageClassName") or ""),
            gateway_replicas=int(gateway.get("replicas", d.gateway_replicas)),
            gateway_resources=dict(gateway.get("resources") or {}),
            gateway_env={str(k): str(v) for k, v in (gateway.get("env") or {}).items()},
            ledger_resources=dict(ledger.get("resources") or {}),
            ledger_env={str(k): str(v) for k, v in (ledger.get("env") or {}).items()},
            connections=Connections(
                str(conn.get("configMapName") or Connections.config_map),
                str(conn.get("adminTokensSecret") or Connections.admin_tokens_secret),
                str(conn.get("eventsTopic") or ""),
            ),
            failover=Failover(
                int(fail.get("timeoutSeconds", Failover.timeout_seconds)),
                int(fail.get("leaseDurationSeconds", Failover.lease_duration_seconds)),
                int(fail.get("renewDeadlineSeconds", Failover.renew_deadline_seconds)),
                int(fail.get("retryPeriodSeconds", Failover.retry_period_seconds)),
            ),
            archive=Archive.parse(spec.get("archive")),
            paused=bool(spec.get("paused", False)),
        )


@dataclass(frozen=True)
class MarketRef:
    """A Market as an owner and a catalogue entry of its venue."""

    name: str
    uid: str
    created: str  # creationTimestamp: the oldest Market's venue settings win
    spec: MarketSpec

    @classmethod
    def of(cls, body: dict[str, Any]) -> MarketRef:
        meta = body["metadata"]
        return cls(
            meta["name"],
            meta["uid"],
            meta.get("creationTimestamp") or "",
            MarketSpec.parse(body.get("spec") or {}),
        )

    def owner_reference(self, controller: bool) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": "Market",
            "name": self.name,
            "uid": self.uid,
            "controller": controller,
            "blockOwnerDeletion": True,
        }


def events_topic(namespace: str, spec: MarketSpec) -> str:
    """A venue's own core events topic: venues sharing a Kafka never share a topic."""
    return spec.connections.events_topic or f"{namespace}.core.events.v1"


def most_restrictive(modes: list[str]) -> str:
    """The effective mode of several (NORMAL when there is none)."""
    return max(modes, key=MODES.index, default="NORMAL")
