"""The local cluster's commands: `cluster-up`, `cluster-down`, `cluster-status`, `image`,
`argocd-up`.

`cluster-up` leaves the cluster running as daemons (no PR_SET_PDEATHSIG) and returns; the
state directory is `.run/cluster` unless EXCHANGE_CLUSTER_DIR says otherwise. With it come
PostgreSQL and Kafka on the bridge address (EXCHANGE_CLUSTER_SERVICES=0 leaves them out),
published to pods as the ConfigMap `exchange-host-services` in the `default` namespace.
`cluster-down` keeps the state directory, so the next `cluster-up` finds its objects and
images again; `cluster-down --purge` deletes it too.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from e2e.env import gobuild, hostservices, images, kube
from e2e.env.argocd import ArgoCD
from e2e.env.cluster import Cluster, owned_pids
from e2e.env.clustersettings import ClusterSettings
from e2e.env.gitserver import GitServer
from e2e.env.process import port_open


def add_commands(commands: Any) -> None:
    up = commands.add_parser("cluster-up", help="start the local cluster as daemons")
    up.add_argument("--no-services", action="store_true", help="without PostgreSQL and Kafka")
    for name, text in (
        ("cluster-down", "remove the local cluster and everything it put on the host"),
        ("cluster-status", "show the local cluster's processes and node"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--state-dir", type=Path, help="another cluster's state directory")
        if name == "cluster-down":
            command.add_argument(
                "--purge", action="store_true", help="also delete the state directory"
            )
    commands.add_parser("image", help="build the project's image and load it into the cluster")
    commands.add_parser(
        "argocd-up", help="run Argo CD on the local cluster, syncing gitops/ dev from local git"
    )


def _cluster(state_dir: Path | None) -> Cluster:
    settings = ClusterSettings.from_env()
    directory = (state_dir or settings.state_dir).resolve()
    if (directory / "cluster.json").exists():
        return Cluster.load(directory)
    return Cluster(settings)


def _services(cluster: Cluster) -> hostservices.HostServices:
    env = os.environ
    return hostservices.HostServices(
        cluster,
        cluster.settings.state_dir / "services",
        pg_port=int(env.get("EXCHANGE_CLUSTER_PG_PORT", "25432")),
        kafka_port=int(env.get("EXCHANGE_CLUSTER_KAFKA_PORT", "29092")),
        kafka_controller_port=int(env.get("EXCHANGE_CLUSTER_KAFKA_CONTROLLER_PORT", "29093")),
        s3_port=int(env.get("EXCHANGE_CLUSTER_S3_PORT", "29002")),
        clickhouse_tcp_port=int(env.get("EXCHANGE_CLUSTER_CLICKHOUSE_TCP_PORT", "29000")),
        clickhouse_http_port=int(env.get("EXCHANGE_CLUSTER_CLICKHOUSE_HTTP_PORT", "28123")),
        prometheus_port=int(env.get("EXCHANGE_CLUSTER_PROMETHEUS_PORT", "29091")),
    )


def up(with_services: bool) -> None:
    cluster = Cluster(ClusterSettings.from_env())
    cluster.start()
    if with_services:
        services = _services(cluster)
        running = {name for name, _pid in owned_pids(cluster.settings.state_dir).values()}
        if not {"postgres", "kafka", "seaweedfs", "clickhouse", "prometheus"} <= running:
            for part, took in services.start().items():
                print(f"cluster: {part} on {cluster.address} ready in {took:.1f}s", file=sys.stderr)
        services.publish("default")
    kubectl_dir = gobuild.binary("kubectl").parent
    print(f"\nThe local cluster is up: {kube.version()}, node {cluster.settings.node_name}.")
    if with_services:
        for key, value in _services(cluster).endpoints().items():
            print(f"  {key}={value}")
        print(f"  (ConfigMap {hostservices.CONFIG_MAP} in namespace default)")
        print(f"  Prometheus (the pods, the alert rules) {_services(cluster).prometheus_url}")
    print("Use it with:")
    print(f"  export PATH={kubectl_dir}:$PATH")
    print(f"  export KUBECONFIG={cluster.kubeconfig}; kubectl get nodes")
    print("Stop it with: make cluster-down")


def down(state_dir: Path | None, purge: bool) -> None:
    """Remove the cluster from the host; its state directory (etcd data, certificates,
    imported images, logs) stays for the next `cluster-up` unless `purge`."""
    cluster = _cluster(state_dir)
    if (cluster.settings.state_dir / "cluster.json").exists():
        cluster.teardown()
    else:
        print(f"no cluster in {cluster.settings.state_dir}")
    if purge and cluster.settings.state_dir.exists():
        shutil.rmtree(cluster.settings.state_dir)
        print(f"removed {cluster.settings.state_dir}")


def status(state_dir: Path | None) -> int:
    cluster = _cluster(state_dir)
    report = cluster.status()
    print(f"cluster {cluster.settings.name} in {cluster.settings.state_dir}:")
    for name, state in report.items():
        print(f"  {name:<24} {state}")
    print(f"  {'kubeconfig':<24} {cluster.kubeconfig}")
    return 0 if report.get("node") == "Ready" else 1


def image() -> None:
    images.timed_build()
    cluster = _cluster(None)
    archive = images.project_archive()
    if archive is not None and cluster.containerd.ready():
        loaded = cluster.containerd.load(archive)
        state = "loaded into" if loaded else "already in"
        print(f"image {archive.name} {state} cluster {cluster.settings.name}", file=sys.stderr)


def argocd_up() -> None:
    """Argo CD (controller, repo server, Redis) and a git server with the working tree, as
    daemons beside the running cluster (`cluster-down` stops them too), and the dev
    environment bootstrapped from it: its namespace's connections and admin tokens, then
    the AppProject and the root Application."""
    cluster = _cluster(None)
    if not cluster.containerd.ready():
        sys.exit("no local cluster is running: run `make cluster-up` first")
    state = cluster.settings.state_dir / "argocd"
    argo_cd = ArgoCD(cluster, state, redis_port=26379, repo_port=28081,
                     repo_metrics_port=28084, controller_metrics_port=28082)  # fmt: skip
    git = GitServer(state / "git", port=29418, die_with_parent=False)
    if port_open("127.0.0.1", argo_cd.repo_port):
        print("Argo CD is already running", file=sys.stderr)
    else:
        for part, took in argo_cd.start().items():
            print(f"argocd: {part} ready in {took:.1f}s", file=sys.stderr)
        git.start()
    namespace = "exchange-dev"
    cluster.kubectl("create", "namespace", namespace, check=False)
    _services(cluster).publish(namespace)
    token = secrets.token_urlsafe(16)
    cluster.apply(
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "exchange-admin-tokens", "namespace": namespace},
         "stringData": {"tokens": f"operator:{token}"}},
    )  # fmt: skip
    argo_cd.bootstrap(git.url, "dev")
    print(f"\nArgo CD syncs the dev environment from {git.url}")
    print(f"  (a clone of the working tree; commit and push in {git.work})")
    print(f"  admin token of {namespace}: {token}")
    print("Watch it with:")
    print(f"  export KUBECONFIG={cluster.kubeconfig}")
    print("  kubectl get applications -n argocd; kubectl get markets -n exchange-dev")
    print("After a push: kubectl annotate application exchange-markets-dev -n argocd "
          "argocd.argoproj.io/refresh=normal --overwrite")  # fmt: skip
    print("Stop it with: make cluster-down")


def run(args: argparse.Namespace) -> None:
    if args.command == "cluster-up":
        up(
            with_services=not args.no_services
            and os.environ.get("EXCHANGE_CLUSTER_SERVICES") != "0"
        )
    elif args.command == "cluster-down":
        down(args.state_dir, args.purge)
    elif args.command == "cluster-status":
        sys.exit(status(args.state_dir))
    elif args.command == "argocd-up":
        argocd_up()
    else:
        image()
