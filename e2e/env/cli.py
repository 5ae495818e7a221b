"""`python -m e2e.env <command>`: the make targets' entry point.

setup           installs what the real parts need, once: Debian packages, Kafka's jars, the
                Kubernetes, etcd, CoreDNS and crictl builds, the images (cached under
                ~/.cache/exchange-platform), with timings.
up              runs the local infrastructure in the foreground; Ctrl-C or SIGTERM stops it.
down            stops whatever an earlier `up` left running (from its pid files).
cluster-up      starts the local single-node cluster as daemons and returns.
cluster-down    removes it: pods, processes, mounts, bridge, iptables rules.
cluster-status  shows its processes and whether the node is Ready.
image           builds the project's image and loads it into the running cluster.
argocd-up       runs Argo CD beside the running cluster, syncing gitops/'s dev environment.
pg-restore      restores `up`'s PostgreSQL from its S3 backups into a fresh directory, to a
                point in time (--to) or to the end of the archive (with `up` stopped: it
                starts `up`'s S3 store for the time of the restore).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from e2e.env import (
    apt,
    browser,
    clickhouse,
    clustercli,
    gobuild,
    images,
    kafka,
    pgbackup,
    postgres,
    prometheus,
    s3,
    versions,
    web,
)
from e2e.env.pgbackup import PgArchive
from e2e.env.process import stop_from_pid_files
from e2e.env.stack import UP_PG_PREFIX, Stack, StackSettings


def _timed(step: str, action: Callable[[], object]) -> None:
    start = time.monotonic()
    action()
    print(f"setup: {step} {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)


def setup(parts: list[str]) -> None:
    packages: tuple[str, ...] = versions.DEBIAN_PACKAGES
    if "cluster" in parts:
        packages += versions.CLUSTER_DEBIAN_PACKAGES
    _timed("debian packages", lambda: apt.ensure(packages))
    if "kafka" in parts:
        _timed(f"kafka {versions.KAFKA} jars", kafka.install)
    if "clickhouse" in parts:
        _timed("clickhouse (the market history)", clickhouse.ensure_installed)
    if "observe" in parts:
        _timed("prometheus (make up's scraper and alert rules)", prometheus.ensure_installed)
        _timed(
            f"prometheus operator {versions.PROMETHEUS_OPERATOR} CRDs (the chart's tests)",
            prometheus.operator_crds,
        )
        _timed(f"jaeger {versions.JAEGER} (the trace store)", lambda: gobuild.ensure(("jaeger",)))
    if "web" in parts:
        _timed("web UI (npm ci, vite build)", web.ensure_built)
        _timed("chromium (the web UI's browser tests)", browser.ensure_installed)
    if "s3" in parts:
        _timed("seaweedfs (the S3 store)", lambda: gobuild.ensure(("weed",)))
        _timed("barman-cloud (PostgreSQL's backups)", pgbackup.ensure_installed)
    if "kube" in parts:
        _timed(
            f"kubernetes {versions.KUBERNETES} + etcd {versions.ETCD} binaries",
            lambda: gobuild.ensure(("etcd", *gobuild.CONTROL_PLANE)),
        )
        _timed(f"helm {versions.HELM}", lambda: gobuild.ensure(("helm",)))
    if "node" in parts or "cluster" in parts:
        _timed("kubernetes node binaries", lambda: gobuild.ensure(gobuild.NODE))
    if "cluster" in parts:
        _timed(f"coredns {versions.COREDNS}", lambda: gobuild.ensure(("coredns",)))
        _timed(f"crictl {versions.CRI_TOOLS}", lambda: gobuild.ensure(("crictl",)))
        _timed("debian base image (debootstrap)", images.ensure_base)
        _timed("pause image", images.ensure_pause)
        _timed("python wheels for the image", images.ensure_wheels)
        _timed("project image", images.build_project)
    if "argocd" in parts:
        _timed("argo cd's debian packages", lambda: apt.ensure(versions.ARGOCD_DEBIAN_PACKAGES))
        _timed(f"argo cd {versions.ARGOCD}", lambda: gobuild.ensure(("argocd",)))


def up() -> None:
    stack = Stack(StackSettings.from_env())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack.start()
        print("\nThe exchange's infrastructure is up:", flush=True)
        for name, where in stack.endpoints.items():
            print(f"  {name:<16} {where}", flush=True)
        print(f"  {'run directory':<16} {stack.settings.run_dir}", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        stop.wait()
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        stack.stop()
        print("stopped.", file=sys.stderr, flush=True)


def down() -> None:
    run_dir = StackSettings.from_env().run_dir
    stopped = [
        name for d in (run_dir, run_dir / "kube") if d.exists() for name in stop_from_pid_files(d)
    ]
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def pg_restore(data_dir: Path, target_time: str | None) -> None:
    """`up`'s database from its base backups and WAL archive (`pgbackup.PgArchive.restore`),
    with `up`'s S3 store running for the time of the restore."""
    settings = StackSettings.from_env()
    store = s3.S3Server(settings.run_dir, settings.s3_port)
    store.start()
    try:
        archive = PgArchive(store.settings(prefix=UP_PG_PREFIX))
        used = archive.restore(data_dir, target_time, owner=postgres.server_user())
    finally:
        store.stop()
    until = f"to {target_time}" if target_time else "to its end"
    print(f"restored base backup {used} into {data_dir}; on its start PostgreSQL replays the "
          f"archived WAL {until} and promotes")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.env",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    setup_cmd = commands.add_parser("setup", help="install and build the real parts (idempotent)")
    setup_cmd.add_argument(
        "--parts",
        default="kafka,kube",
        help="comma list of kafka,s3,clickhouse,observe,web,kube,node,cluster,argocd",
    )
    commands.add_parser("up", help="run PostgreSQL, Kafka and the Kubernetes API until Ctrl-C")
    commands.add_parser("down", help="stop what an earlier `up` left running")
    commands.add_parser("versions", help="print the pinned versions")
    restore_cmd = commands.add_parser("pg-restore", help="restore up's PostgreSQL from S3")
    restore_cmd.add_argument("--to", default=None, help="target time, e.g. '2026-12-07 18:00+00'")
    restore_cmd.add_argument("--data-dir", required=True, type=Path, help="a fresh directory")
    clustercli.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command.startswith("cluster-") or args.command in ("image", "argocd-up"):
        clustercli.run(args)
    elif args.command == "setup":
        setup(args.parts.split(","))
    elif args.command == "up":
        up()
    elif args.command == "down":
        down()
    elif args.command == "pg-restore":
        pg_restore(args.data_dir, args.to)
    else:
        for name in ("KUBERNETES", "ETCD", "KAFKA", "LOG4J", "POSTGRES_MAJOR", "COREDNS"):
            print(f"{name.lower()}: {getattr(versions, name)}")
