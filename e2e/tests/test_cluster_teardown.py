"""Proof that `cluster-down` leaves nothing of a cluster on the host.

A second cluster is started beside the session's (other bridge, ports, address range and
cgroup root), given a running pod so that there is something to clean up (a shim and its
container, volume and shm mounts, a network namespace, kube-proxy's rules), and torn down.
The session's cluster must survive it: it gets its iptables rules back and stays Ready.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.env import cleanup, images, paths, rollout
from e2e.env.cluster import Cluster
from e2e.env.process import free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


def kubernetes_service_rule(plane_cluster: Cluster) -> bool:
    """kube-proxy's rule for the `kubernetes` Service's ClusterIP is in the nat table."""
    ip = plane_cluster.plane.first_service_ip
    return any(
        f"-d {ip}/32" in line and "default/kubernetes:https" in line
        for line in cleanup.iptables_rules()
    )


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A short path: containerd's socket lives in it and unix socket paths are limited."""
    path = paths.new_run_dir("exchange-down-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_cluster_down_leaves_no_process_mount_bridge_or_rule_behind(
    local_cluster: Cluster, state_dir: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    settings = local_cluster.settings.secondary(
        f"down{suffix}", state_dir, bridge=f"cnid{suffix}", api_port=free_port()
    )
    second = Cluster(settings)
    try:
        second.start()
        sandbox = {
            "name": "pause",
            "image": images.PAUSE_IMAGE,
            "imagePullPolicy": "Never",
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        }
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "doomed"},
            "spec": {
                "containers": [sandbox],
                "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
            },
        }
        second.kubectl("create", "-n", "default", "-f", "-", input=json.dumps(manifest))
        doomed = rollout.wait_pod(second.kubectl, "default", "doomed", timeout=60)
        assert doomed["status"]["podIP"].startswith("10.244.0.")

        # Everything teardown has to remove is there now.
        commands = " ".join(cleanup.processes_using(str(state_dir)).values())
        for name in ("kubelet", "containerd-shim-runc-v2", "kube-proxy", "coredns", "etcd"):
            assert name in commands, name
        mounts = cleanup.mounts_under(state_dir)
        assert any("/netns/" in m for m in mounts), mounts
        assert any("kubernetes.io~empty-dir" in m for m in mounts), mounts
        assert any(m.endswith("/shm") for m in mounts), mounts
        assert settings.network.exists()
        wait_until(
            lambda: any(settings.network.subnet in rule for rule in cleanup.iptables_rules()),
            timeout=30,
            what="the second kube-proxy's rules",
        )
    finally:
        left = second.teardown(check=False)

    assert left == []
    assert cleanup.processes_using(str(state_dir)) == {}
    assert cleanup.mounts_under(state_dir) == []
    assert not settings.network.exists()
    assert not any(settings.network.subnet in rule for rule in cleanup.iptables_rules())
    assert not any(path.exists() for path in cleanup.cgroup_dirs(settings.cgroup_root))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert settings.bridge not in links.stdout

    # The session's cluster lost its shared KUBE-* chains with the second one's; its
    # kube-proxy notices the missing canary chain and restores its rules.
    wait_until(
        lambda: kubernetes_service_rule(local_cluster),
        timeout=60,
        what="the session cluster's kube-proxy rules restored",
    )
    assert local_cluster.node_ready()
