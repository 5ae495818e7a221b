"""PostgreSQL, Kafka, an S3 store and ClickHouse on the host for the cluster's pods, published
as a ConfigMap (a Market's archive uses the ConfigMap's S3 endpoint unless its spec names one;
a venue whose ConfigMap names a ClickHouse gets a history writer), and a Prometheus on
127.0.0.1 that scrapes the exchange's pods with the venue's alert rules (its targets come
from `podtargets`, which lists the pods every few seconds).

They listen on the cluster's bridge address, which pods reach directly (it is their
gateway) and host processes too (it is a local address). Pods learn where they are from
the ConfigMap `exchange-host-services` (`envFrom` it), never from an address in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from e2e.env import clickhouse, kafka, podtargets, postgres, prometheus, s3
from e2e.env.cluster import Cluster
from e2e.env.process import free_port
from workloads.common.objectstore import ObjectStoreSettings

CONFIG_MAP = "exchange-host-services"
"""The ConfigMap's name, the same in every namespace it is published to."""


@dataclass
class HostServices:
    """A PostgreSQL and a Kafka broker for `cluster`, data and logs in `run_dir`."""

    cluster: Cluster
    run_dir: Path
    pg_port: int = field(default_factory=free_port)
    kafka_port: int = field(default_factory=free_port)
    kafka_controller_port: int = field(default_factory=free_port)
    s3_port: int = field(default_factory=free_port)
    clickhouse_tcp_port: int = field(default_factory=free_port)
    clickhouse_http_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        address = self.cluster.address
        daemon = self.cluster.settings.daemon
        self.postgres = postgres.PostgresServer(
            self.run_dir,
            self.pg_port,
            host=address,
            trusted_networks=(f"{address}/32", self.cluster.settings.network.subnet),
            die_with_parent=not daemon,
        )
        self.kafka = kafka.KafkaBroker(
            self.run_dir,
            self.kafka_port,
            self.kafka_controller_port,
            host=address,
            die_with_parent=not daemon,
        )
        self.s3 = s3.S3Server(self.run_dir, self.s3_port, host=address, die_with_parent=not daemon)
        self.clickhouse = clickhouse.ClickHouseServer(
            self.run_dir,
            self.clickhouse_tcp_port,
            self.clickhouse_http_port,
            host=address,
            die_with_parent=not daemon,
        )
        self.pods_file = self.run_dir / "prometheus-pods.json"
        self.prometheus = prometheus.PrometheusServer(
            self.run_dir,
            self.prometheus_port,
            jobs=(),
            extra_scrape_configs=[prometheus.file_sd_job("exchange-pods", self.pods_file)],
            die_with_parent=not daemon,
        )
        self.pod_targets = podtargets.process(
            self.run_dir, self.cluster.kubeconfig, self.pods_file, die_with_parent=not daemon
        )

    def start(self) -> dict[str, float]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)
        return {
            "postgres": self.postgres.start(),
            "kafka": self.kafka.start(),
            "s3": self.s3.start(),
            "clickhouse": self.clickhouse.start(),
            "prometheus": self._start_prometheus(),
        }

    def _start_prometheus(self) -> float:
        prometheus.write_target_groups(self.pods_file, [])
        self.pod_targets.start()
        return self.prometheus.start()

    @property
    def prometheus_url(self) -> str:
        """A Prometheus scraping the venues' pods, with the alert rules of the chart."""
        return self.prometheus.url

    def stop(self) -> None:
        self.kafka.stop()
        self.postgres.stop()  # before the store: its WAL archiver would hang on a store gone
        self.s3.stop()
        self.clickhouse.stop()
        self.prometheus.stop()
        self.pod_targets.stop()

    def endpoints(self) -> dict[str, str]:
        """The ConfigMap's data: environment variable names for the workloads."""
        return {
            "EXCHANGE_PG_HOST": self.postgres.host,
            "EXCHANGE_PG_PORT": str(self.postgres.port),
            "EXCHANGE_PG_DSN": self.postgres.dsn,
            "EXCHANGE_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "EXCHANGE_S3_ENDPOINT": self.s3.endpoint,
            "EXCHANGE_CLICKHOUSE_URL": self.clickhouse.server_url,
        }

    def archive(self, prefix: str) -> ObjectStoreSettings:
        return self.s3.settings(prefix=prefix)

    def publish(self, namespace: str) -> None:
        """Write (server-side apply) the ConfigMap into `namespace`."""
        self.cluster.apply(config_map(namespace, self.endpoints()))


def config_map(namespace: str, data: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "namespace": namespace},
        "data": data,
    }
