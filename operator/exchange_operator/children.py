"""What a Market owns, as manifests (pure): its matcher's StatefulSet (WAL and snapshots on a
PVC), headless Service, PodDisruptionBudget, Lease, ServiceAccount, Role, RoleBinding and
NetworkPolicy. The operator applies them server-side under one field manager."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from exchange_operator.model import (
    IMAGE_USER,
    MATCHER_GRPC_PORT,
    MATCHER_HTTP_PORT,
    ROLE_LABEL,
    MarketRef,
    events_topic,
    labels,
    matcher_name,
    selector,
)
from exchange_operator.settings import OperatorSettings
from workloads.gateway.markets import Market

Manifest = dict[str, Any]


def catalogue_entry(ref: MarketRef, namespace: str) -> Market:
    """The market as the gateway's catalogue and the matcher's spec both see it (one source,
    so lot and tick agree); raises `MarketError` for an inconsistent spec."""
    s = ref.spec
    return Market(
        s.symbol,
        s.base_asset,
        s.quote_asset,
        base_decimals=s.base_decimals,
        quote_decimals=s.quote_decimals,
        lot_size=s.lot_size,
        tick_size=s.tick_size,
        max_price=s.max_price,
        max_lots=s.max_lots,
        price_band_bps=s.price_band_bps,
        matcher=matcher_target(ref.name, namespace),
    )


def matcher_target(market: str, namespace: str) -> str:
    """The matcher's gRPC address for pods: its headless Service's DNS name."""
    return f"{matcher_name(market)}.{namespace}.svc.cluster.local:{MATCHER_GRPC_PORT}"


def _meta(ref: MarketRef, name: str, namespace: str, component: str) -> Manifest:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels("matcher", ref.name, component, ref.name),
        "ownerReferences": [ref.owner_reference(controller=True)],
    }


def market_children(
    ref: MarketRef,
    namespace: str,
    settings: OperatorSettings,
    egress: list[Manifest],
    s3_endpoint: str = "",
) -> list[Manifest]:
    """Everything the Market owns except its Lease (created once, see `lease`), in the order
    they are applied. `egress`: the rules to the venue's Kafka, DNS and the API server;
    `s3_endpoint`: the venue ConfigMap's S3 store."""
    return [
        service_account(ref, namespace),
        role(ref, namespace),
        role_binding(ref, namespace),
        service(ref, namespace),
        peers_service(ref, namespace),
        statefulset(ref, namespace, settings),
        disruption_budget(ref, namespace),
        network_policy(ref, namespace, settings, [*egress, *archive_egress(ref, s3_endpoint)]),
    ]


def endpoint_egress(*addresses: str) -> list[Manifest]:
    """Egress rules to `host:port` addresses (an IP host becomes an ipBlock)."""
    rules = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            continue
        rule: Manifest = {"ports": [{"protocol": "TCP", "port": int(port)}]}
        if host.replace(".", "").isdigit():
            rule["to"] = [{"ipBlock": {"cidr": f"{host}/32"}}]
        rules.append(rule)
    return rules


def archive_env(ref: MarketRef, namespace: str) -> list[Manifest]:
    """The matcher's `MATCHER_ARCHIVE_*` variables and its credentials from the Secret that
    spec.archive.credentialsSecretRef names (none without an archive)."""
    archive = ref.spec.archive
    if archive is None:
        return []
    values = {
        "MATCHER_ARCHIVE_BUCKET": archive.bucket,
        "MATCHER_ARCHIVE_PREFIX": archive.prefix or namespace,
        "MATCHER_ARCHIVE_REGION": archive.region,
        "MATCHER_ARCHIVE_SEAL_SECONDS": str(archive.seal_seconds),
        "MATCHER_ARCHIVE_KEEP_SNAPSHOTS": str(archive.keep_snapshots),
    }
    secret = [
        {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": archive.credentials_secret, "key": key}},
        }
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    endpoint = (
        [{"name": "MATCHER_ARCHIVE_ENDPOINT", "value": archive.endpoint}]
        if archive.endpoint
        else connection_env(ref, ("MATCHER_ARCHIVE_ENDPOINT", "EXCHANGE_S3_ENDPOINT"))
    )
    return endpoint + [{"name": k, "value": v} for k, v in values.items()] + secret


def archive_egress(ref: MarketRef, venue_endpoint: str = "") -> list[Manifest]:
    """The archive's store, for the matcher's egress policy (`venue_endpoint`: the venue
    ConfigMap's, for an archive whose spec names none)."""
    archive = ref.spec.archive
    if archive is None or not (archive.endpoint or venue_endpoint):
        return []
    found = urlsplit(archive.endpoint or venue_endpoint)
    port = found.port or (443 if found.scheme == "https" else 80)
    return endpoint_egress(f"{found.hostname}:{port}")


def lease(ref: MarketRef, namespace: str) -> Manifest:
    """Created by the operator, held by the matcher (which may not create one)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": _meta(ref, matcher_name(ref.name), namespace, "fencing"),
        "spec": {"leaseDurationSeconds": ref.spec.failover.lease_duration_seconds},
    }


def service_account(ref: MarketRef, namespace: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(ref, matcher_name(ref.name), namespace, "matching-engine"),
        "automountServiceAccountToken": True,  # the matcher holds its Lease with it
    }


def pod_names(ref: MarketRef) -> list[str]:
    return [f"{matcher_name(ref.name)}-{n}" for n in range(ref.spec.matcher_replicas)]


def role(ref: MarketRef, namespace: str) -> Manifest:
    """The matcher may read and renew its own Lease, and label its own pods with their role
    (the client Service selects the leader by it), and nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(ref, matcher_name(ref.name), namespace, "matching-engine"),
        "rules": [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": [matcher_name(ref.name)],
                "verbs": ["get", "update", "patch"],
            },
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "resourceNames": pod_names(ref),
                "verbs": ["get", "patch"],
            },
        ],
    }


def role_binding(ref: MarketRef, namespace: str) -> Manifest:
    name = matcher_name(ref.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(ref, name, namespace, "matching-engine"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }


def service(ref: MarketRef, namespace: str) -> Manifest:
    """The market's address for its clients (gateway, ledger): the instance that labelled
    itself the leader (`exchange.io/role`), and only while it is ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ref, matcher_name(ref.name), namespace, "matching-engine"),
        "spec": {
            "selector": {**selector("matcher", ref.name), ROLE_LABEL: "leader"},
            "ports": [
                {"name": "grpc", "port": MATCHER_GRPC_PORT, "targetPort": "grpc"},
                {"name": "http", "port": MATCHER_HTTP_PORT, "targetPort": "http"},
            ],
        },
    }


def peers_service(ref: MarketRef, namespace: str) -> Manifest:
    """Headless, publishing instances that are not ready: each instance's own DNS name
    (`<pod>.matcher-<market>-peers`), by which a standby finds the leader's stream."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(ref, peers_name(ref.name), namespace, "matching-engine"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector("matcher", ref.name),
            "ports": [{"name": "grpc", "port": MATCHER_GRPC_PORT, "targetPort": "grpc"}],
        },
    }


def peers_name(market: str) -> str:
    return f"{matcher_name(market)}-peers"


def disruption_budget(ref: MarketRef, namespace: str) -> Manifest:
    """One instance may go at a time (a standby in sync is ready, so a drain may take the
    leader then: the standby takes over). A market's only instance is not evicted: a drain
    waits for the platform team to move the market deliberately (a rollout is not an
    eviction and is not blocked)."""
    budget = {"maxUnavailable": 1} if ref.spec.matcher_replicas > 1 else {"minAvailable": 1}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(ref, matcher_name(ref.name), namespace, "matching-engine"),
        "spec": {**budget, "selector": {"matchLabels": selector("matcher", ref.name)}},
    }


def restricted(*, read_only: bool = True) -> Manifest:
    """The restricted Pod Security profile for a container of the project's image."""
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_USER,
        "runAsGroup": IMAGE_USER,
        "readOnlyRootFilesystem": read_only,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def connection_env(ref: MarketRef, *names: tuple[str, str]) -> list[Manifest]:
    """Variables read from the venue's ConfigMap: (our variable, the ConfigMap's key)."""
    return [
        {
            "name": variable,
            "valueFrom": {"configMapKeyRef": {"name": ref.spec.connections.config_map, "key": key}},
        }
        for variable, key in names
    ]


def statefulset(ref: MarketRef, namespace: str, settings: OperatorSettings) -> Manifest:
    spec = ref.spec
    name = matcher_name(ref.name)
    catalogue = catalogue_entry(ref, namespace)
    env: dict[str, str] = {
        **catalogue.matcher_env(),
        "MATCHER_MARKET_REFERENCE_PRICE": str(spec.reference_price),
        "MATCHER_MARKET_MAX_OPEN_ORDERS": str(spec.max_open_orders),
        "MATCHER_MARKET_RATE_LIMIT": str(spec.rate_limit),
        "MATCHER_MARKET_MAKER_FEE_BPS": str(spec.maker_fee_bps),
        "MATCHER_MARKET_TAKER_FEE_BPS": str(spec.taker_fee_bps),
        "MATCHER_DATA_DIR": "/data",
        "MATCHER_HOST": "0.0.0.0",
        "MATCHER_GRPC_PORT": str(MATCHER_GRPC_PORT),
        "MATCHER_HTTP_PORT": str(MATCHER_HTTP_PORT),
        "MATCHER_EVENTS_TOPIC": events_topic(namespace, spec),
        "MATCHER_EPOCH_PROVIDER": "lease",
        "MATCHER_LEASE_NAME": name,
        "MATCHER_LEASE_DURATION_S": str(spec.failover.lease_duration_seconds),
        "MATCHER_LEASE_RENEW_DEADLINE_S": str(spec.failover.renew_deadline_seconds),
        "MATCHER_LEASE_RETRY_PERIOD_S": str(spec.failover.retry_period_seconds),
        "MATCHER_PEER_DOMAIN": f"{peers_name(ref.name)}.{namespace}.svc.cluster.local",
        "MATCHER_LABEL_POD": "true",
    }
    pod_env = [
        {"name": "MATCHER_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MATCHER_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
        {
            "name": "MATCHER_LEASE_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        *connection_env(ref, ("MATCHER_KAFKA_BOOTSTRAP", "EXCHANGE_KAFKA_BOOTSTRAP")),
        *archive_env(ref, namespace),
    ]
    image = spec.image or settings.image
    container = {
        "name": "matcher",
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python3", "-m", "workloads.matcher.instance"],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())] + pod_env,
        "ports": [
            {"name": "grpc", "containerPort": MATCHER_GRPC_PORT},
            {"name": "http", "containerPort": MATCHER_HTTP_PORT},
        ],
        # Ready: leading and serving. Live: the event loop answers; a frozen matcher is
        # restarted by the kubelet after 30 s (the lease fences it long before).
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 6,
        },
        "resources": spec.matcher_resources,
        "securityContext": restricted(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    # Host-path volumes (the local cluster's, and others) ignore fsGroup: hand /data to the
    # image's user first. The only step that runs as root, with CHOWN as its one capability.
    fix_owner = {
        "name": "data-owner",
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [
            "python3",
            "-c",
            f"import os; s = os.stat('/data'); (s.st_uid, s.st_gid) == ({IMAGE_USER}, "
            f"{IMAGE_USER}) or os.chown('/data', {IMAGE_USER}, {IMAGE_USER})",
        ],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    claim: Manifest = {
        "metadata": {"name": "data", "labels": labels("matcher", ref.name, "wal", ref.name)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage_size}},
        },
    }
    if spec.storage_class:
        claim["spec"]["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(ref, name, namespace, "matching-engine"),
        "spec": {
            "replicas": spec.matcher_replicas,
            "serviceName": peers_name(ref.name),
            "selector": {"matchLabels": selector("matcher", ref.name)},
            "podManagementPolicy": "Parallel",
            # The operator rolls the instances itself: the standby first, then one switch
            # of the leader to the already upgraded standby (`rollout.py`).
            "updateStrategy": {"type": "OnDelete"},
            # The WAL outlives the Market: a Market created again under the same name
            # recovers its book (delete the PVC to start from nothing).
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {"labels": labels("matcher", ref.name, "matching-engine", ref.name)},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": True,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "fsGroup": IMAGE_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [fix_owner],
                    "containers": [container],
                    # Apart when the cluster has room: the standby is for losing a node.
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {
                                            "matchLabels": selector("matcher", ref.name)
                                        },
                                    },
                                }
                            ]
                        }
                    },
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }


def network_policy(
    ref: MarketRef, namespace: str, settings: OperatorSettings, egress: list[Manifest]
) -> Manifest:
    """Who may reach the matcher: the venue's gateway and ledger, the operator and its own
    market's other instance (gRPC: the standby follows the leader); anyone for the ops port
    (metrics, probes). What it may reach: DNS, Kafka, the API server (its Lease), its peer.
    The venue's default-deny policy (see `venue`) closes everything else."""
    peers = {"podSelector": {"matchLabels": selector("matcher", ref.name)}}
    grpc_port = [{"protocol": "TCP", "port": MATCHER_GRPC_PORT}]
    venue_clients = {
        "matchExpressions": [
            {"key": "app.kubernetes.io/name", "operator": "In", "values": ["gateway", "ledger"]},
            {"key": "app.kubernetes.io/part-of", "operator": "In", "values": ["exchange-platform"]},
        ]
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(ref, matcher_name(ref.name), namespace, "matching-engine"),
        "spec": {
            "podSelector": {"matchLabels": selector("matcher", ref.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"podSelector": venue_clients}, settings.operator_peer(), peers],
                    "ports": grpc_port,
                },
                {"ports": [{"protocol": "TCP", "port": MATCHER_HTTP_PORT}]},
            ],
            "egress": [*egress, {"to": [peers], "ports": grpc_port}],
        },
    }
