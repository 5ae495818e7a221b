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
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable

from e2e.env import apt, clustercli, gobuild, images, kafka, versions
from e2e.env.process import stop_from_pid_files
from e2e.env.stack import Stack, StackSettings


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
    if "s3" in parts:
        _timed("seaweedfs (the S3 store)", lambda: gobuild.ensure(("weed",)))
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.env",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    setup_cmd = commands.add_parser("setup", help="install and build the real parts (idempotent)")
    setup_cmd.add_argument(
        "--parts", default="kafka,kube", help="comma list of kafka,s3,kube,node,cluster,argocd"
    )
    commands.add_parser("up", help="run PostgreSQL, Kafka and the Kubernetes API until Ctrl-C")
    commands.add_parser("down", help="stop what an earlier `up` left running")
    commands.add_parser("versions", help="print the pinned versions")
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
    else:
        for name in ("KUBERNETES", "ETCD", "KAFKA", "LOG4J", "POSTGRES_MAJOR", "COREDNS"):
            print(f"{name.lower()}: {getattr(versions, name)}")
