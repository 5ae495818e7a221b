"""What the operator builds for a Market and its venue: owner references, labels, the
matcher's least privilege, the restricted pod profile, one catalogue for gateway, ledger
and matcher, and the oldest Market's venue settings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exchange_operator import children
from exchange_operator.children import endpoint_egress
from exchange_operator.model import MarketRef, MarketSpec, most_restrictive, selector
from exchange_operator.settings import OperatorSettings
from exchange_operator.venue import Venue, host_services
from workloads.gateway.markets import parse_markets

pytestmark = pytest.mark.unit

SETTINGS = OperatorSettings(image="localhost/exchange-platform:dev", namespace="exchange-system")
CONFIG = {
    "EXCHANGE_KAFKA_BOOTSTRAP": "10.244.0.1:29092",
    "EXCHANGE_PG_DSN": "postgresql://exchange@10.244.0.1:25432/postgres",
}


def market(name: str, symbol: str, created: str = "2026-12-07T10:00:00Z", **spec: Any) -> MarketRef:
    return MarketRef.of(
        {
            "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": created},
            "spec": {"symbol": symbol, **spec},
        }
    )


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(m for m in manifests if m["kind"] == kind)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_child_is_owned_by_its_market_and_labelled() -> None:
    ref = market("btc-usdt", "BTC-USDT")
    manifests = children.market_children(ref, "venue-a", SETTINGS, [])
    assert {m["kind"] for m in manifests} == {
        "ServiceAccount", "Role", "RoleBinding", "Service", "StatefulSet",
        "PodDisruptionBudget", "NetworkPolicy",
    }  # fmt: skip
    for manifest in [*manifests, children.lease(ref, "venue-a")]:
        meta = manifest["metadata"]
        assert meta["namespace"] == "venue-a"
        assert meta["name"] in ("matcher-btc-usdt", "matcher-btc-usdt-peers")
        assert meta["ownerReferences"] == [
            {"apiVersion": "exchange.io/v1alpha1", "kind": "Market", "name": "btc-usdt",
             "uid": "uid-btc-usdt", "controller": True, "blockOwnerDeletion": True}
        ]  # fmt: skip
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "exchange-operator"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "exchange-platform"
        assert meta["labels"]["exchange.io/market"] == "btc-usdt"


def test_the_matcher_may_only_renew_its_own_lease_and_label_its_own_pods() -> None:
    role = children.role(market("btc-usdt", "BTC-USDT"), "venue-a")
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["matcher-btc-usdt"], "verbs": ["get", "update", "patch"]},
        {"apiGroups": [""], "resources": ["pods"],
         "resourceNames": ["matcher-btc-usdt-0", "matcher-btc-usdt-1"], "verbs": ["get", "patch"]},
    ]  # fmt: skip


def test_the_matcher_runs_non_root_read_only_fenced_by_its_lease() -> None:
    ref = market("btc-usdt", "BTC-USDT", fees={"makerBps": 2, "takerBps": 5}, priceBandBps=100)
    sts = children.statefulset(ref, "venue-a", SETTINGS)
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python3", "-m", "workloads.matcher.instance"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert (
        security["capabilities"] == {"drop": ["ALL"]} and not security["allowPrivilegeEscalation"]
    )
    (init,) = pod["initContainers"]  # the one step as root: hand the volume to the image user
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    env = env_of(container)
    assert (
        env["MATCHER_EPOCH_PROVIDER"] == "lease" and env["MATCHER_LEASE_NAME"] == "matcher-btc-usdt"
    )
    assert (env["MATCHER_LEASE_DURATION_S"], env["MATCHER_LEASE_RENEW_DEADLINE_S"]) == ("10", "7")
    assert env["MATCHER_POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert env["MATCHER_KAFKA_BOOTSTRAP"] == {
        "configMapKeyRef": {"name": "exchange-host-services", "key": "EXCHANGE_KAFKA_BOOTSTRAP"}
    }
    assert env["MATCHER_EVENTS_TOPIC"] == "venue-a.core.events.v1"
    assert (env["MATCHER_MARKET_MAKER_FEE_BPS"], env["MATCHER_MARKET_PRICE_BAND_BPS"]) == (
        "2",
        "100",
    )
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "1Gi"
    }


def test_a_leader_and_its_standby_apart_rolled_by_the_operator_clients_routed_to_the_leader(
) -> None:  # fmt: skip
    ref = market("btc-usdt", "BTC-USDT")
    sts = children.statefulset(ref, "venue-a", SETTINGS)["spec"]
    assert sts["replicas"] == 2 and sts["updateStrategy"] == {"type": "OnDelete"}
    assert sts["serviceName"] == "matcher-btc-usdt-peers"
    spread = sts["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert (
        spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"][
            "topologyKey"
        ]
        == "kubernetes.io/hostname"
    )
    env = env_of(sts["template"]["spec"]["containers"][0])
    assert env["MATCHER_PEER_DOMAIN"] == "matcher-btc-usdt-peers.venue-a.svc.cluster.local"
    assert env["MATCHER_LABEL_POD"] == "true"
    clients = children.service(ref, "venue-a")["spec"]
    assert clients["selector"]["exchange.io/role"] == "leader" and "clusterIP" not in clients
    peers = children.peers_service(ref, "venue-a")["spec"]
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"]
    assert children.disruption_budget(ref, "venue-a")["spec"]["maxUnavailable"] == 1
    single = market("btc-usdt", "BTC-USDT", matcher={"replicas": 1})
    assert children.disruption_budget(single, "venue-a")["spec"]["minAvailable"] == 1
    policy = children.network_policy(ref, "venue-a", SETTINGS, [])["spec"]
    own = {"podSelector": {"matchLabels": selector("matcher", "btc-usdt")}}
    assert own in policy["ingress"][0]["from"] and policy["egress"][-1]["to"] == [own]


def test_one_catalogue_entry_drives_the_matcher_the_gateway_and_the_ledger() -> None:
    refs = [
        market("btc-usdt", "BTC-USDT", lotSize=10_000, tickSize=1),
        market(
            "eth-usdt", "ETH-USDT", created="2026-12-07T11:00:00Z", lotSize=100_000, tickSize=10
        ),
    ]
    venue = Venue("venue-a", refs, SETTINGS, CONFIG)
    gateway = env_of(venue.gateway()["spec"]["template"]["spec"]["containers"][0])
    catalogue = {m.symbol: m for m in parse_markets(gateway["EDGE_MARKETS"])}
    eth = catalogue["ETH-USDT"]
    assert (eth.lot_size, eth.tick_size) == (100_000, 10)
    assert eth.matcher == "matcher-eth-usdt.venue-a.svc.cluster.local:50051"
    matcher = env_of(
        children.statefulset(refs[1], "venue-a", SETTINGS)["spec"]["template"]["spec"][
            "containers"
        ][0]
    )
    assert (matcher["MATCHER_MARKET_LOT_SIZE"], matcher["MATCHER_MARKET_TICK_SIZE"]) == (
        "100000",
        "10",
    )
    ledger = env_of(venue.ledger()["spec"]["template"]["spec"]["containers"][0])
    assert ledger["LEDGER_MARKETS"] == (
        "BTC-USDT=matcher-btc-usdt.venue-a.svc.cluster.local:50051,"
        "ETH-USDT=matcher-eth-usdt.venue-a.svc.cluster.local:50051"
    )
    assert ledger["LEDGER_RECONCILIATION_AUTO_SWITCH"] == "false"  # the operator switches
    assert ledger["LEDGER_KAFKA_GROUP_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert ledger["LEDGER_DB_SCHEMA"] == "ledger_venue_a"
    # Venues sharing a Kafka: their own topic, and their own settlement group on it.
    assert ledger["LEDGER_KAFKA_TOPIC"] == "venue-a.core.events.v1"
    assert ledger["LEDGER_KAFKA_GROUP_ID"] == "ledger-settlement-v1.venue-a.core.events.v1"


def test_the_venue_is_owned_by_every_market_and_the_oldest_settings_win() -> None:
    settings = {"replicas": 3, "env": {"EDGE_RATE_LIMIT_PER_MINUTE": "6000"}}
    older = market("eth-usdt", "ETH-USDT", created="2026-12-07T09:00:00Z", gateway=settings)
    newer = market("btc-usdt", "BTC-USDT", gateway={"replicas": 1})
    venue = Venue("venue-a", [newer, older], SETTINGS, CONFIG)
    for manifest in venue.manifests():
        owners = manifest["metadata"]["ownerReferences"]
        assert [o["name"] for o in owners] == ["eth-usdt", "btc-usdt"]
        assert not any(o["controller"] for o in owners)
    gateway = venue.gateway()
    assert gateway["spec"]["replicas"] == 3
    assert (
        env_of(gateway["spec"]["template"]["spec"]["containers"][0])["EDGE_RATE_LIMIT_PER_MINUTE"]
        == "6000"
    )
    assert gateway["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert venue.ledger()["kind"] == "StatefulSet"  # a stable pod name: a static group member


def test_network_policies_deny_by_default_and_allow_what_each_part_needs() -> None:
    venue = Venue("venue-a", [market("btc-usdt", "BTC-USDT")], SETTINGS, CONFIG)
    deny = venue.default_deny()["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    egress = venue.gateway_policy()["spec"]["egress"]
    assert {"to": [{"ipBlock": {"cidr": "10.244.0.1/32"}}],
            "ports": [{"protocol": "TCP", "port": 25432}]} in egress  # fmt: skip
    matcher = children.network_policy(
        market("btc-usdt", "BTC-USDT"), "venue-a", SETTINGS, venue.matcher_egress()
    )["spec"]
    grpc_from = matcher["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "exchange-operator"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "exchange-system"}}
            } in grpc_from  # fmt: skip


def test_host_services_and_their_egress_come_from_the_venue_config_map() -> None:
    assert host_services(CONFIG) == ("10.244.0.1:29092", "10.244.0.1:25432", "")
    with_history = {**CONFIG, "EXCHANGE_CLICKHOUSE_URL": "clickhouse://default:@10.244.0.1:29000"}
    assert host_services(with_history)[2] == "10.244.0.1:29000"
    assert endpoint_egress("kafka.infra:9092") == [{"ports": [{"protocol": "TCP", "port": 9092}]}]


def test_a_venue_with_a_clickhouse_gets_a_history_writer_and_its_gateway_reads_it() -> None:
    ref = market("btc-usdt", "BTC-USDT")
    assert not [m for m in Venue("venue-a", [ref], SETTINGS, CONFIG).manifests()
                if m["metadata"]["name"] == "history"]  # fmt: skip
    config = {**CONFIG, "EXCHANGE_CLICKHOUSE_URL": "clickhouse://default:@10.244.0.1:29000"}
    venue = Venue("venue-a", [ref], SETTINGS, config)
    names = [(m["kind"], m["metadata"]["name"]) for m in venue.manifests()]
    assert {("Deployment", "history"), ("NetworkPolicy", "history"),
            ("ServiceAccount", "history")} <= set(names)  # fmt: skip
    container = venue.history()["spec"]["template"]["spec"]["containers"][0]
    env = container["env"]
    names_in_order = [e["name"] for e in env]
    # Kubernetes expands $(VAR) only from variables listed before it.
    assert names_in_order.index("EXCHANGE_CLICKHOUSE_URL") < names_in_order.index(
        "HISTORY_CLICKHOUSE_URL"
    )
    plain = env_of(container)
    assert plain["HISTORY_CLICKHOUSE_URL"] == "$(EXCHANGE_CLICKHOUSE_URL)/history_venue_a"
    assert plain["HISTORY_KAFKA_TOPIC"] == "venue-a.core.events.v1"
    gateway = env_of(venue.gateway()["spec"]["template"]["spec"]["containers"][0])
    assert gateway["EDGE_HISTORY_CLICKHOUSE_URL"] == plain["HISTORY_CLICKHOUSE_URL"]
    to_clickhouse = {"ports": [{"protocol": "TCP", "port": 29000}],
                     "to": [{"ipBlock": {"cidr": "10.244.0.1/32"}}]}  # fmt: skip
    assert to_clickhouse in venue.history_policy()["spec"]["egress"]
    assert to_clickhouse in venue.gateway_policy()["spec"]["egress"]
    assert to_clickhouse not in venue.ledger_policy()["spec"]["egress"]


def test_a_spec_is_read_with_the_crds_defaults() -> None:
    spec = MarketSpec.parse({"symbol": "SOL-EUR"})
    assert (spec.base_asset, spec.quote_asset, spec.lot_size) == ("SOL", "EUR", 10_000)
    assert spec.failover.lease_duration_seconds == 10 and not spec.paused


def test_the_most_restrictive_mode_wins() -> None:
    assert most_restrictive([]) == "NORMAL"
    assert most_restrictive(["CANCEL_ONLY", "HARD_HALT", "SOFT_HALT"]) == "HARD_HALT"


def test_manifests_are_plain_json() -> None:
    venue = Venue("venue-a", [market("btc-usdt", "BTC-USDT")], SETTINGS, CONFIG)
    json.dumps(
        [
            *venue.manifests(),
            *children.market_children(market("btc-usdt", "BTC-USDT"), "venue-a", SETTINGS, []),
        ]
    )


def test_a_market_with_an_archive_gives_its_matcher_the_store_and_an_egress_to_it() -> None:
    archive = {"endpoint": "http://10.244.0.1:29002", "bucket": "exchange-archive",
               "credentialsSecretRef": {"name": "archive-creds"}, "sealSeconds": 5}  # fmt: skip
    ref = market("btc-usdt", "BTC-USDT", archive=archive)
    manifests = children.market_children(ref, "venue-a", SETTINGS, [])
    env = env_of(by_kind(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"][0])
    assert env["MATCHER_ARCHIVE_ENDPOINT"] == "http://10.244.0.1:29002"
    assert env["MATCHER_ARCHIVE_PREFIX"] == "venue-a"  # the namespace by default
    assert env["MATCHER_ARCHIVE_SEAL_SECONDS"] == "5"
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "archive-creds", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    egress = by_kind(manifests, "NetworkPolicy")["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 29002}],
            "to": [{"ipBlock": {"cidr": "10.244.0.1/32"}}]} in egress  # fmt: skip
    # Without an endpoint in the spec: the venue ConfigMap's, and an egress rule to it.
    venue_store = market("btc-usdt", "BTC-USDT", archive={**archive, "endpoint": ""})
    manifests = children.market_children(venue_store, "venue-a", SETTINGS, [],
                                         "http://10.244.0.1:29012")  # fmt: skip
    env = env_of(by_kind(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"][0])
    assert env["MATCHER_ARCHIVE_ENDPOINT"] == {
        "configMapKeyRef": {"name": "exchange-host-services", "key": "EXCHANGE_S3_ENDPOINT"}
    }
    egress = by_kind(manifests, "NetworkPolicy")["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 29012}],
            "to": [{"ipBlock": {"cidr": "10.244.0.1/32"}}]} in egress  # fmt: skip
    plain = children.market_children(market("btc-usdt", "BTC-USDT"), "venue-a", SETTINGS, [])
    plain_env = env_of(by_kind(plain, "StatefulSet")["spec"]["template"]["spec"]["containers"][0])
    assert not [k for k in plain_env if k.startswith(("MATCHER_ARCHIVE", "AWS_"))]
