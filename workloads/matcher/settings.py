"""The matcher process's settings, from environment variables, validated at startup.

| variable | default | meaning |
|---|---|---|
| MATCHER_MARKET_SYMBOL | BTC-USDT | the market; base and quote default to its two halves |
| MATCHER_MARKET_<FIELD> | see `MarketSpec` | any spec field, e.g. MATCHER_MARKET_LOT_SIZE |
| MATCHER_DATA_DIR | .run/matcher/<symbol> | WAL, snapshots and the epoch file |
| MATCHER_HOST | 127.0.0.1 | address the gRPC and HTTP servers bind |
| MATCHER_GRPC_PORT | 50051 | the Matcher gRPC service and gRPC health |
| MATCHER_HTTP_PORT | 8090 | /healthz, /readyz, /metrics |
| MATCHER_KAFKA_BOOTSTRAP | 127.0.0.1:29092 | Kafka for the outbox; empty disables publishing |
| MATCHER_EVENTS_TOPIC | core.events.v1 | the core events topic |
| MATCHER_OUTBOX_MAX_COMMANDS | 5000 | most commands (with their events) per outbox transaction |
| MATCHER_OUTBOX_LINGER_MS | 100 | least time between two outbox transactions (fewer, larger ones) |
| MATCHER_WAL_MAX_BATCH | 2000 | most commands per WAL record (one fsync may cover several) |
| MATCHER_WAL_MAX_DELAY_MS | 0 | extra wait for a batch to grow when idle |
| MATCHER_WAL_SEGMENT_BYTES | 67108864 | WAL segment rotation size |
| MATCHER_SNAPSHOT_EVERY | 200000 | commands between periodic snapshots (0: only at shutdown) |
| MATCHER_INSTANCE | the host name | this instance's identity (pod name in a cluster) |
| MATCHER_EPOCH_PROVIDER | file | `file` (local: a counter in the data dir) or `lease` (cluster) |
| MATCHER_LEASE_NAME | matcher-<symbol, lower case> | the market's Lease (cluster mode) |
| MATCHER_LEASE_NAMESPACE | the pod's namespace | where the Lease is |
| MATCHER_POD_UID | (empty) | the pod's UID (downward API): part of the lease identity |
| MATCHER_LEASE_DURATION_S | 10 | nobody else takes the lease until this long after a renewal |
| MATCHER_LEASE_RENEW_DEADLINE_S | 7 | the leader stops serving this long after its last renewal |
| MATCHER_LEASE_RETRY_PERIOD_S | 2 | how often the leader renews |
| MATCHER_PEER_DOMAIN | (empty) | the peers' DNS domain: `<pod>.<domain>:<grpc port>` |
| MATCHER_PEERS | (empty) | `pod=host:port,...`: peers no DNS names (tests) |
| MATCHER_REPLICATION_SYNC_TIMEOUT_MS | 1000 | a standby this late to acknowledge is out of sync |
| MATCHER_LABEL_POD | false | label its own pod `exchange.io/role` (the Service picks the leader) |
| KUBECONFIG | (in-cluster) | the API server outside a pod (tests) |
| MATCHER_ARCHIVE_ENDPOINT | (empty: no archive) | the archive's S3 store (`archive.py`) |
| MATCHER_ARCHIVE_BUCKET, _PREFIX, _REGION | -, "", us-east-1 | see `common/objectstore.py` |
| AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY | - | the store's credentials |
| MATCHER_ARCHIVE_SEAL_SECONDS | 60 | seal a segment holding unarchived commands this long |
| MATCHER_ARCHIVE_KEEP_SNAPSHOTS | 3 | archived snapshots kept (+ segments after the oldest) |
| MATCHER_OTEL_ENDPOINT | (empty: no spans) | OTLP: `host:port` (gRPC) or a URL with a path (HTTP) |
| MATCHER_OTEL_INSECURE | true | OTLP/gRPC without TLS |
| MATCHER_OTEL_SERVICE_NAME | matcher | the spans' `service.name` (+ `exchange.market`) |

The matcher starts no trace: it adds spans (batch, WAL commit, outbox publish) only to the
traces of orders the gateway sampled (EDGE_OTEL_SAMPLE_RATIO), see `tracing.py`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from workloads.common import envvars
from workloads.common.envvars import SettingsError as SettingsError  # re-exported
from workloads.common.objectstore import ObjectStoreConfigError, ObjectStoreSettings
from workloads.matcher.lease import LeaseTiming
from workloads.matcher.sequencer import SequencerSettings
from workloads.matcher.spec import MarketSpec, SpecError


@dataclass(frozen=True)
class OtelSettings:
    endpoint: str = ""
    """MATCHER_OTEL_ENDPOINT: OTLP collector; empty: no span is built (one test per batch)."""
    insecure: bool = True
    """MATCHER_OTEL_INSECURE: plaintext gRPC (the local trace store has no TLS)."""
    service_name: str = "matcher"
    """MATCHER_OTEL_SERVICE_NAME."""
    sample_ratio: float = 0.0
    """Not a variable: the matcher only continues traces the gateway sampled, never starts
    one (a sampled parent is always followed, whatever this ratio)."""


@dataclass(frozen=True)
class MatcherSettings:
    spec: MarketSpec
    data_dir: Path
    host: str
    grpc_port: int
    http_port: int
    kafka_bootstrap: str
    events_topic: str
    outbox_max_commands: int
    outbox_linger: float
    sequencer: SequencerSettings
    instance: str
    epoch_provider: str = "file"
    lease_name: str = ""
    lease_namespace: str = ""
    pod_uid: str = ""
    lease_timing: LeaseTiming = field(default_factory=LeaseTiming)
    peer_domain: str = ""
    label_pod: bool = False
    peers: dict[str, str] = field(default_factory=dict)
    replication_sync_timeout: float = 1.0
    """Seconds an in-sync standby may be late with an acknowledgement before the leader
    commits without it: the longest a reply waits for a standby that is gone."""
    archive: ObjectStoreSettings | None = None
    archive_seal_after: float = 60.0
    archive_keep_snapshots: int = 3
    otel: OtelSettings = field(default_factory=OtelSettings)

    def peer_address(self, pod: str) -> str:
        """Where the instance `pod` serves gRPC (its replication stream)."""
        if pod in self.peers:
            return self.peers[pod]
        return f"{pod}.{self.peer_domain}:{self.grpc_port}" if self.peer_domain else pod

    @classmethod
    def from_env(cls) -> MatcherSettings:
        env = os.environ
        try:
            spec = MarketSpec.from_env()
        except SpecError as exc:
            raise SettingsError(str(exc)) from None

        def integer(name: str, default: int, low: int = 0) -> int:
            return envvars.integer(env, name, default, low)

        try:
            archive = ObjectStoreSettings.from_env("MATCHER_ARCHIVE", env)
        except ObjectStoreConfigError as exc:
            raise SettingsError(str(exc)) from None
        return cls(
            spec=spec,
            data_dir=Path(env.get("MATCHER_DATA_DIR", f".run/matcher/{spec.symbol}")),
            host=env.get("MATCHER_HOST", "127.0.0.1"),
            grpc_port=integer("MATCHER_GRPC_PORT", 50051, 1),
            http_port=integer("MATCHER_HTTP_PORT", 8090, 1),
            kafka_bootstrap=env.get("MATCHER_KAFKA_BOOTSTRAP", "127.0.0.1:29092"),
            events_topic=env.get("MATCHER_EVENTS_TOPIC", "core.events.v1"),
            outbox_max_commands=integer("MATCHER_OUTBOX_MAX_COMMANDS", 5000, 1),
            outbox_linger=integer("MATCHER_OUTBOX_LINGER_MS", 100) / 1000,
            sequencer=SequencerSettings(
                max_batch=integer("MATCHER_WAL_MAX_BATCH", 2000, 1),
                max_delay=integer("MATCHER_WAL_MAX_DELAY_MS", 0) / 1000,
                segment_bytes=integer("MATCHER_WAL_SEGMENT_BYTES", 64 << 20, 4096),
                snapshot_every=integer("MATCHER_SNAPSHOT_EVERY", 200_000),
            ),
            instance=env.get("MATCHER_INSTANCE", socket.gethostname()),
            epoch_provider=_choice(env, "MATCHER_EPOCH_PROVIDER", "file", ("file", "lease")),
            lease_name=env.get("MATCHER_LEASE_NAME", f"matcher-{spec.symbol.lower()}"),
            lease_namespace=env.get("MATCHER_LEASE_NAMESPACE", "") or _pod_namespace(),
            pod_uid=env.get("MATCHER_POD_UID", ""),
            lease_timing=_lease_timing(env),
            peer_domain=env.get("MATCHER_PEER_DOMAIN", "").strip(),
            label_pod=env.get("MATCHER_LABEL_POD", "false").strip().lower() in ("1", "true", "yes"),
            peers=_peers(env.get("MATCHER_PEERS", "")),
            replication_sync_timeout=integer("MATCHER_REPLICATION_SYNC_TIMEOUT_MS", 1000, 10)
            / 1000,
            archive=archive,
            archive_seal_after=float(integer("MATCHER_ARCHIVE_SEAL_SECONDS", 60, 1)),
            archive_keep_snapshots=integer("MATCHER_ARCHIVE_KEEP_SNAPSHOTS", 3, 1),
            otel=OtelSettings(
                endpoint=env.get("MATCHER_OTEL_ENDPOINT", "").strip(),
                insecure=_flag(env, "MATCHER_OTEL_INSECURE", True),
                service_name=env.get("MATCHER_OTEL_SERVICE_NAME", "").strip() or "matcher",
            ),
        )


def _peers(raw: str) -> dict[str, str]:
    peers = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        pod, _, address = item.partition("=")
        if not pod or ":" not in address:
            raise SettingsError(f"MATCHER_PEERS: {item!r} is not pod=host:port")
        peers[pod] = address
    return peers


def _flag(env: os._Environ[str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("1", "true", "yes", "0", "false", "no"):
        raise SettingsError(f"{name}={raw!r} must be true or false")
    return raw in ("1", "true", "yes")


def _choice(env: os._Environ[str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default)
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _lease_timing(env: os._Environ[str]) -> LeaseTiming:
    values = []
    for name, default in (
        ("MATCHER_LEASE_DURATION_S", LeaseTiming.duration),
        ("MATCHER_LEASE_RENEW_DEADLINE_S", LeaseTiming.renew_deadline),
        ("MATCHER_LEASE_RETRY_PERIOD_S", LeaseTiming.retry_period),
    ):
        raw = env.get(name, str(default))
        try:
            values.append(float(raw))
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number of seconds") from None
    try:
        return LeaseTiming(*values)
    except ValueError as exc:
        raise SettingsError(f"MATCHER_LEASE_*: {exc}") from None


def _pod_namespace() -> str:
    """The namespace of the pod's service account, when running in one."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.exists() else ""
