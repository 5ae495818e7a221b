"""A namespace's venue, as manifests (pure): the gateway (one URL for all the namespace's
markets), the ledger (one book of record) and, where the venue's ConfigMap names a ClickHouse,
the history writer (the markets' trades and candles), shared by its Markets, with their
Services, ServiceAccounts and NetworkPolicies.

Ownership: every Market of the namespace is an owner of these objects (none the controller),
so the garbage collector removes them with the last Market; until then each reconcile
applies them again with the current set of Markets as owners and in the catalogues. Where
the Markets' venue settings differ (gateway replicas, extra env), the oldest Market's win.

The ledger runs as a StatefulSet of one, not a Deployment: its Kafka consumer is a static
group member whose id is its pod name, and a StatefulSet keeps that name across restarts and
rollouts (a Deployment's new pod would join as a new member while the old one's partitions
waited out its session).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from exchange_operator.children import (
    Manifest,
    catalogue_entry,
    connection_env,
    endpoint_egress,
    restricted,
)
from exchange_operator.model import (
    GATEWAY_PORT,
    HISTORY_PORT,
    LEDGER_PORT,
    MATCHER_GRPC_PORT,
    MarketRef,
    events_topic,
    labels,
    selector,
)
from exchange_operator.settings import OperatorSettings
from workloads.gateway.markets import catalogue_json

DNS_EGRESS: Manifest = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
API_EGRESS: Manifest = {
    "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]
}


def ordered(refs: list[MarketRef]) -> list[MarketRef]:
    """Oldest first (creation time, then name): the first one's venue settings win."""
    return sorted(refs, key=lambda r: (r.created, r.name))


def host_services(config: dict[str, str]) -> tuple[str, str, str]:
    """(Kafka bootstrap, PostgreSQL host:port, ClickHouse host:port or "") from the venue's
    ConfigMap data."""
    kafka = config.get("EXCHANGE_KAFKA_BOOTSTRAP", "").split(",")[0]
    pg = urlsplit(config.get("EXCHANGE_PG_DSN", ""))
    clickhouse = urlsplit(config.get("EXCHANGE_CLICKHOUSE_URL", ""))
    return (
        kafka,
        f"{pg.hostname}:{pg.port or 5432}" if pg.hostname else "",
        f"{clickhouse.hostname}:{clickhouse.port or 9000}" if clickhouse.hostname else "",
    )


class Venue:
    """The shared parts of one namespace, from its Markets and its ConfigMap."""

    def __init__(
        self,
        namespace: str,
        refs: list[MarketRef],
        settings: OperatorSettings,
        config: dict[str, str],
    ) -> None:
        self.namespace = namespace
        self.refs = ordered(refs)
        self.settings = settings
        self.first = self.refs[0]
        self.kafka, self.pg, self.clickhouse = host_services(config)
        self.schema = namespace.replace("-", "_")

    @property
    def ledger_url(self) -> str:
        """The ledger's API for the gateway (a trader's fills): its headless Service."""
        return f"http://ledger.{self.namespace}.svc.cluster.local:{LEDGER_PORT}"

    @property
    def history_url(self) -> str:
        """The venue's own ClickHouse database under the ConfigMap's server (created by the
        writer); Kubernetes expands `$(EXCHANGE_CLICKHOUSE_URL)` from the variable before it."""
        return f"$(EXCHANGE_CLICKHOUSE_URL)/history_{self.schema}"

    @property
    def topic(self) -> str:
        return events_topic(self.namespace, self.first.spec)

    @property
    def image(self) -> str:
        return self.first.spec.image or self.settings.image

    def matcher_egress(self) -> list[Manifest]:
        return [DNS_EGRESS, API_EGRESS, *endpoint_egress(self.kafka)]

    def _meta(self, name: str, component: str) -> Manifest:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": labels(name, self.namespace, component),
            "ownerReferences": [r.owner_reference(controller=False) for r in self.refs],
        }

    def manifests(self) -> list[Manifest]:
        history = (
            [self.service_account("history"), self.history(), self.history_policy()]
            if self.clickhouse
            else []
        )
        return [
            self.default_deny(),
            self.service_account("gateway"),
            self.service_account("ledger"),
            self.ledger_service(),
            self.ledger(),
            self.ledger_policy(),
            self.gateway_service(),
            self.gateway(),
            self.gateway_policy(),
            *history,
        ]

    # ------------------------------------------------------------------ shared pieces

    def service_account(self, name: str) -> Manifest:
        return {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": self._meta(name, "identity"),
            "automountServiceAccountToken": False,  # neither talks to the API server
        }

    def default_deny(self) -> Manifest:
        """Deny by default, for the exchange's pods; each has explicit allows beside it."""
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self._meta("exchange-default-deny", "network"),
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "exchange-platform"}},
                "policyTypes": ["Ingress", "Egress"],
            },
        }

    def _container(self, name: str, module: str, port: int, env: list[Manifest]) -> Manifest:
        return {
            "name": name,
            "image": self.image,
            "imagePullPolicy": self.settings.image_pull_policy,
            "command": ["python3", "-m", module],
            "env": env,
            "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": {
                "httpGet": {"path": "/readyz", "port": "http"},
                "periodSeconds": 2,
                "failureThreshold": 2,
            },
            "livenessProbe": {
                "httpGet": {"path": "/healthz", "port": "http"},
                "periodSeconds": 10,
                "timeoutSeconds": 3,
                "failureThreshold": 3,
            },
            "securityContext": restricted(),
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }

    def _pod(self, name: str, container: Manifest, grace: int) -> Manifest:
        return {
            "metadata": {"labels": labels(name, self.namespace, container["name"])},
            "spec": {
                "serviceAccountName": name,
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": grace,
                "securityContext": {
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        }

    def _policy(
        self, name: str, port: int, sources: list[Manifest] | None, egress: list[Manifest]
    ) -> Manifest:
        """Ingress to `port` from `sources` (None: anywhere); egress to DNS and `egress`."""
        ingress: Manifest = {"ports": [{"protocol": "TCP", "port": port}]}
        if sources is not None:
            ingress["from"] = sources
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self._meta(name, "network"),
            "spec": {
                "podSelector": {"matchLabels": selector(name, self.namespace)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [ingress],
                "egress": [DNS_EGRESS, *egress],
            },
        }

    def _service_egress(self, *addresses: str) -> list[Manifest]:
        """The gateway's and the ledger's: the matchers, Kafka, PostgreSQL and `addresses`."""
        to_matchers = {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "matcher"}}}],
            "ports": [{"protocol": "TCP", "port": MATCHER_GRPC_PORT}],
        }
        return [to_matchers, *endpoint_egress(self.kafka, self.pg, *addresses)]

    def _to_ledger(self) -> Manifest:
        return {
            "to": [{"podSelector": {"matchLabels": selector("ledger", self.namespace)}}],
            "ports": [{"protocol": "TCP", "port": LEDGER_PORT}],
        }

    # ------------------------------------------------------------------ the ledger

    def ledger_env(self) -> list[Manifest]:
        markets = ",".join(
            f"{r.spec.symbol}={catalogue_entry(r, self.namespace).matcher}" for r in self.refs
        )
        plain = {
            "LEDGER_HTTP_HOST": "0.0.0.0",
            "LEDGER_HTTP_PORT": str(LEDGER_PORT),
            "LEDGER_DB_SCHEMA": f"ledger_{self.schema}",
            "LEDGER_MARKETS": markets,
            "LEDGER_KAFKA_TOPIC": self.topic,
            # Per venue: two ledgers of one group on different topics would take each
            # other's assignments (seen: a dev and a second venue on one Kafka).
            "LEDGER_KAFKA_GROUP_ID": f"ledger-settlement-v1.{self.topic}",
            # Cluster mode: the operator turns a breach into a SafetyMode and applies it.
            "LEDGER_RECONCILIATION_AUTO_SWITCH": "false",
            "LEDGER_GUARD_AUTO_SWITCH": "false",
            **self.first.spec.ledger_env,
        }
        return [
            *connection_env(
                self.first,
                ("LEDGER_DB_DSN", "EXCHANGE_PG_DSN"),
                ("LEDGER_KAFKA_BROKERS", "EXCHANGE_KAFKA_BOOTSTRAP"),
            ),
            {
                "name": "LEDGER_KAFKA_GROUP_INSTANCE_ID",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
            {
                "name": "LEDGER_ADMIN_TOKENS",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": self.first.spec.connections.admin_tokens_secret,
                        "key": "tokens",
                        "optional": True,
                    }
                },
            },
            *({"name": k, "value": v} for k, v in sorted(plain.items())),
        ]

    def ledger(self) -> Manifest:
        container = self._container("ledger", "workloads.ledger", LEDGER_PORT, self.ledger_env())
        container["resources"] = self.first.spec.ledger_resources
        return {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": self._meta("ledger", "ledger"),
            "spec": {
                "replicas": 1,
                "serviceName": "ledger",
                "selector": {"matchLabels": selector("ledger", self.namespace)},
                "template": self._pod("ledger", container, grace=30),
            },
        }

    def ledger_service(self) -> Manifest:
        """Headless: the StatefulSet's governing Service (ledger-0.ledger.<namespace>)."""
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._meta("ledger", "ledger"),
            "spec": {
                "clusterIP": "None",
                "selector": selector("ledger", self.namespace),
                "ports": [{"name": "http", "port": LEDGER_PORT, "targetPort": "http"}],
            },
        }

    def ledger_policy(self) -> Manifest:
        """The admin API: the operator, and the venue's own pods (an admin's job)."""
        own = {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "exchange-platform"}}}
        return self._policy(
            "ledger", LEDGER_PORT, [own, self.settings.operator_peer()], self._service_egress()
        )

    # ------------------------------------------------------------------ the gateway

    def gateway_env(self) -> list[Manifest]:
        catalogue = tuple(catalogue_entry(r, self.namespace) for r in self.refs)
        links = [
            ("EDGE_DB_DSN", "EXCHANGE_PG_DSN"),
            ("EDGE_KAFKA_BROKERS", "EXCHANGE_KAFKA_BOOTSTRAP"),
        ]
        history = {}
        if self.clickhouse:
            links.append(("EXCHANGE_CLICKHOUSE_URL", "EXCHANGE_CLICKHOUSE_URL"))
            history = {"EDGE_HISTORY_CLICKHOUSE_URL": self.history_url}
        plain = {
            "EDGE_HTTP_HOST": "0.0.0.0",
            "EDGE_HTTP_PORT": str(GATEWAY_PORT),
            "EDGE_MARKETS": catalogue_json(catalogue),
            "EDGE_DB_SCHEMA": f"gateway_{self.schema}",
            "EDGE_KAFKA_TOPIC": self.topic,
            **history,
            **self.first.spec.gateway_env,
        }
        plain = {"EDGE_LEDGER_URL": self.ledger_url, **plain}
        return [
            *connection_env(self.first, *links),
            {"name": "EDGE_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                # The admin tokens' Secret's key `gateway`: the gateway's own among `tokens`.
                "name": "EDGE_LEDGER_ADMIN_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": self.first.spec.connections.admin_tokens_secret,
                        "key": "gateway",
                        "optional": True,
                    }
                },
            },
            *({"name": k, "value": v} for k, v in sorted(plain.items())),
        ]

    def gateway(self) -> Manifest:
        container = self._container(
            "gateway", "workloads.gateway", GATEWAY_PORT, self.gateway_env()
        )
        container["resources"] = self.first.spec.gateway_resources
        # Out of the Service's endpoints before SIGTERM: no request lands on a stopping pod.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": 3}}}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self._meta("gateway", "api-gateway"),
            "spec": {
                "replicas": self.first.spec.gateway_replicas,
                "selector": {"matchLabels": selector("gateway", self.namespace)},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": self._pod("gateway", container, grace=20),
            },
        }

    def gateway_service(self) -> Manifest:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._meta("gateway", "api-gateway"),
            "spec": {
                "selector": selector("gateway", self.namespace),
                "ports": [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http"}],
            },
        }

    def gateway_policy(self) -> Manifest:
        return self._policy(  # traders come from anywhere
            "gateway",
            GATEWAY_PORT,
            None,
            [*self._service_egress(self.clickhouse), self._to_ledger()],
        )

    # ------------------------------------------------------------------ the history writer

    def history_env(self) -> list[Manifest]:
        plain = {
            "HISTORY_HTTP_HOST": "0.0.0.0",
            "HISTORY_HTTP_PORT": str(HISTORY_PORT),
            "HISTORY_KAFKA_TOPIC": self.topic,
            "HISTORY_CLICKHOUSE_URL": self.history_url,
        }
        return [
            *connection_env(
                self.first,
                ("EXCHANGE_CLICKHOUSE_URL", "EXCHANGE_CLICKHOUSE_URL"),
                ("HISTORY_KAFKA_BROKERS", "EXCHANGE_KAFKA_BOOTSTRAP"),
            ),
            *({"name": k, "value": v} for k, v in sorted(plain.items())),
        ]

    def history(self) -> Manifest:
        """One writer: a second would only share the topic's partitions (its writes are
        idempotent, so a rollout's overlap is harmless)."""
        container = self._container(
            "history", "workloads.history", HISTORY_PORT, self.history_env()
        )
        container["resources"] = {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "768Mi"},  # a 50,000-event batch, decoded, and its insert
        }
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self._meta("history", "history"),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector("history", self.namespace)},
                "template": self._pod("history", container, grace=30),
            },
        }

    def history_policy(self) -> Manifest:
        """Its ops port to the operator; out to Kafka and ClickHouse only."""
        return self._policy(
            "history",
            HISTORY_PORT,
            [self.settings.operator_peer()],
            endpoint_egress(self.kafka, self.clickhouse),
        )
