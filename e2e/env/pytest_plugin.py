"""pytest fixtures that run the real PostgreSQL, Kafka and Kubernetes API once per session.

Loaded for every run (`-p e2e.env.pytest_plugin` in pyproject). Services start lazily, the
first time a test asks for them, and stop when the session ends, also after a failure or
Ctrl-C (pytest tears fixtures down on KeyboardInterrupt; a SIGKILLed pytest takes its
children with it through PR_SET_PDEATHSIG). Each test gets fresh names: a schema, a topic,
a namespace, so no test depends on another's leftovers.

Every test must carry one tier marker: `unit`, `integration` or `e2e`. Tests on the local
cluster (fixtures `local_cluster`, `cluster_namespace`, `cluster_services`, `kube_target`)
also carry the marker `cluster`, so `pytest -m cluster` selects exactly them.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import hypothesis  # noqa: F401  (see below)
import pytest

from e2e.env import (
    clickhouse,
    cluster,
    clustersettings,
    gobuild,
    hostservices,
    images,
    kafka,
    kind,
    kube,
    paths,
    postgres,
    s3,
    target,
)
from e2e.env.process import free_port, leftovers, wait_until

TIERS = ("unit", "integration", "e2e")
CLUSTER_FIXTURES = ("local_cluster", "cluster_namespace", "cluster_services", "kube_target")

# hypothesis is imported above, at collection, on purpose: its pytest plugin otherwise
# imports it in the terminal summary, and CPython 3.11.7 can raise "AST constructor
# recursion depth mismatch" when assertion rewriting parses modules while finalizers of
# the session's asyncio objects run (fixed in 3.11.8, gh-106905).


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(t) for t in TIERS)]
    if unmarked:
        raise pytest.UsageError(f"tests without a tier marker {TIERS}: {unmarked}")
    on_cluster = [
        item.nodeid
        for item in items
        if set(CLUSTER_FIXTURES) & set(getattr(item, "fixturenames", ()))
        and not item.get_closest_marker("cluster")
    ]
    if on_cluster:
        raise pytest.UsageError(
            f"tests on the local cluster without the `cluster` marker: {on_cluster}"
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the processes tests started and never stopped (they die with this one)."""
    left = leftovers()
    if left:
        terminalreporter.write_line(f"processes started by tests and never stopped: {left}")


def unique_name(prefix: str) -> str:
    """A name no other test uses: lowercase, DNS-label and SQL-identifier safe."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def run_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """One directory for this session's data and logs; kept when a test failed."""
    path = paths.new_run_dir("exchange-test-")
    yield path
    failed = request.session.testsfailed > 0
    if failed or os.environ.get("EXCHANGE_KEEP_RUN_DIR"):
        print(f"\nrun directory kept for inspection: {path}", file=sys.stderr)
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server(run_dir: Path) -> Iterator[postgres.PostgresServer]:
    server = postgres.PostgresServer(run_dir, free_port())
    try:
        seconds = server.start()
        print(f"\n{postgres.version()} ready in {seconds:.1f}s at {server.dsn}", file=sys.stderr)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_dsn(postgres_server: postgres.PostgresServer) -> str:
    return postgres_server.dsn


@dataclass(frozen=True)
class Schema:
    """A fresh schema in the session's database; `dsn` sets it as the search path."""

    name: str
    server_dsn: str

    @property
    def dsn(self) -> str:
        return f"{self.server_dsn}?options=-csearch_path%3D{self.name}"


@pytest.fixture
async def pg_schema(pg_dsn: str) -> AsyncIterator[Schema]:
    import asyncpg

    name = unique_name("t").replace("-", "_")
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        yield Schema(name, pg_dsn)
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def kafka_broker(run_dir: Path) -> Iterator[kafka.KafkaBroker]:
    if not kafka.lib_dir().joinpath(".complete").exists():
        pytest.fail("Kafka jars are not installed: run `make setup`", pytrace=False)
    broker = kafka.KafkaBroker(run_dir, free_port(), free_port())
    try:
        seconds = broker.start()
        print(f"\n{kafka.version()} ready in {seconds:.1f}s at {broker.bootstrap}", file=sys.stderr)
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def clickhouse_server(run_dir: Path) -> Iterator[clickhouse.ClickHouseServer]:
    """A real ClickHouse (Debian's 18.16) on 127.0.0.1; each test takes its own database."""
    if not clickhouse.SERVER.exists():
        pytest.fail("ClickHouse is not installed: run `make setup`", pytrace=False)
    server = clickhouse.ClickHouseServer(run_dir)
    try:
        seconds = server.start()
        print(f"\nClickHouse ready in {seconds:.1f}s at {server.url}", file=sys.stderr)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(run_dir: Path) -> Iterator[s3.S3Server]:
    """A real S3 server (SeaweedFS) on 127.0.0.1, with the bucket `exchange-archive`; each
    test takes its own prefix (`S3Server.settings(prefix=...)`)."""
    if not gobuild.binary("weed").exists():
        pytest.fail("SeaweedFS is not built: run `make setup`", pytrace=False)
    server = s3.S3Server(run_dir)
    try:
        seconds = server.start()
        print(f"\nSeaweedFS S3 ready in {seconds:.1f}s at {server.endpoint}", file=sys.stderr)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: kafka.KafkaBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
async def kafka_topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    """A fresh single-partition topic, deleted afterwards."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    name = unique_name("topic")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def kube_control_plane(run_dir: Path) -> Iterator[kube.ControlPlane]:
    missing = [n for n in ("etcd", *gobuild.CONTROL_PLANE) if not gobuild.binary(n).exists()]
    if missing:
        pytest.fail(f"Kubernetes binaries not built ({missing}): run `make setup`", pytrace=False)
    plane = kube.ControlPlane(run_dir, free_port())
    try:
        timings = plane.start()
        ready = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        print(f"\n{kube.version()} ready ({ready}) at {plane.server}", file=sys.stderr)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubeconfig(kube_control_plane: kube.ControlPlane) -> Path:
    return kube_control_plane.kubeconfig


@pytest.fixture
def k8s_namespace(kube_control_plane: kube.ControlPlane) -> Iterator[str]:
    """A fresh namespace, deleted afterwards (without waiting for finalization)."""
    name = unique_name("ns")
    kube_control_plane.kubectl("create", "namespace", name)
    yield name
    kube_control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def local_cluster(run_dir: Path) -> Iterator[cluster.Cluster]:
    """A real single-node cluster (bridge cni0, 10.244.0.1), started once per session and
    torn down at its end; the teardown fails the session if anything is left behind."""
    missing = [n for n in cluster.BINARIES if not gobuild.binary(n).exists()]
    if images.pause_archive() is None or images.project_archive() is None:
        missing.append("images")
    if missing:
        pytest.fail(f"local cluster not built ({missing}): run `make setup`", pytrace=False)
    settings = clustersettings.ClusterSettings(
        name="pytest", state_dir=run_dir / "cluster", api_port=free_port()
    )
    local = cluster.Cluster(settings)
    try:
        timings = local.start()
        print(f"\nlocal cluster up in {timings.get('total', 0):.1f}s", file=sys.stderr)
        yield local
    finally:
        local.teardown()


@pytest.fixture
def cluster_namespace(local_cluster: cluster.Cluster) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists (pods need it); deleted after."""
    name = unique_name("ns")
    local_cluster.kubectl("create", "namespace", name)
    wait_until(
        lambda: bool(
            local_cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False)
        ),
        timeout=30,
        what=f"ServiceAccount {name}/default",
    )
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def cluster_services(
    local_cluster: cluster.Cluster, run_dir: Path
) -> Iterator[hostservices.HostServices]:
    """PostgreSQL and Kafka on the cluster's bridge address, for pods; `publish(namespace)`
    writes the ConfigMap that tells pods where they are."""
    services = hostservices.HostServices(local_cluster, run_dir / "cluster-services")
    try:
        services.start()
        yield services
    finally:
        services.stop()


@pytest.fixture(scope="session")
def kube_target(request: pytest.FixtureRequest) -> tuple[target.Node, target.Services]:
    """The cluster a venue's scenarios run on: kind's when `make e2e-kind` names it
    (`target.TARGET_ENV`), else the local cluster with its host services."""
    described = os.environ.get(target.TARGET_ENV)
    if described:
        return kind.load_target(Path(described))
    node: cluster.Cluster = request.getfixturevalue("local_cluster")
    services: hostservices.HostServices = request.getfixturevalue("cluster_services")
    return node, services


@pytest.fixture(scope="session")
def show(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Print past pytest's output capture: what a test shows (`kubectl get markets` tables,
    measured figures) belongs in the run's output."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def shown(text: str) -> None:
        with capture.global_and_fixture_disabled():
            print(text, file=sys.stderr, flush=True)

    return shown
