"""Unit tests of the local cluster's pure parts: configuration files, address plans, the
DNS probe's wire format, image inputs and benchmark selection. No process is started."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import subprocess
import tomllib
from pathlib import Path

import pytest

from e2e import benchmarks
from e2e.env import coredns, images, registry, rollout
from e2e.env.clustersettings import ClusterSettings
from e2e.env.containerd import Containerd
from e2e.env.kube import ControlPlane
from e2e.env.node import Kubelet

pytestmark = pytest.mark.unit


def test_the_second_cluster_takes_the_other_half_of_the_allowed_ranges(tmp_path: Path) -> None:
    first = ClusterSettings(name="one", state_dir=tmp_path / "one")
    second = first.secondary("two", tmp_path / "two", bridge="cni1", api_port=7443)
    pods = ipaddress.IPv4Network("10.244.0.0/24")
    services = ipaddress.IPv4Network("10.0.0.0/24")
    for settings in (first, second):
        network = ipaddress.IPv4Network(settings.network.subnet)
        assert network.subnet_of(pods)
        assert ipaddress.IPv4Network(settings.service_cidr).subnet_of(services)
        low, high = (ipaddress.IPv4Address(a) for a in settings.pod_range)
        assert low in network and high in network
    first_last = ipaddress.IPv4Address(first.pod_range[1])
    assert first_last < ipaddress.IPv4Address(second.pod_range[0])
    assert first_last not in ipaddress.IPv4Network(second.network.subnet)
    assert (second.node_name, second.cgroup_root) == ("two-node", "/exchange-two")


def test_settings_round_trip_through_the_state_directory(tmp_path: Path) -> None:
    settings = ClusterSettings(name="saved", state_dir=tmp_path, api_port=7443, daemon=True)
    settings.save()
    assert ClusterSettings.load(tmp_path) == settings


def test_cni_config_is_a_bridge_without_masquerade(tmp_path: Path) -> None:
    settings = ClusterSettings(name="cni", state_dir=tmp_path)
    path = settings.network.write_conflist(tmp_path / "net.d", "exchange-cni", tmp_path / "ipam")
    bridge, portmap = json.loads(path.read_text())["plugins"]
    assert (bridge["type"], bridge["bridge"], bridge["ipMasq"]) == ("bridge", "cni0", False)
    pod_range = bridge["ipam"]["ranges"][0][0]
    assert pod_range == {
        "subnet": "10.244.0.0/24",
        "rangeStart": "10.244.0.2",
        "rangeEnd": "10.244.0.127",
        "gateway": "10.244.0.1",
    }
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")
    assert portmap["type"] == "portmap"


def test_containerd_config_has_this_machines_settings(tmp_path: Path) -> None:
    config = tomllib.loads(Containerd(tmp_path, tmp_path / "net.d").write_config().read_text())
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == images.PAUSE_IMAGE
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == str(tmp_path / "net.d")
    assert config["grpc"]["address"] == str(tmp_path / "containerd.sock")
    assert config["root"].startswith(str(tmp_path))


def test_kubelet_config_keeps_local_images_and_runs_on_cgroup_v1(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path, 6443, host="10.244.0.1")
    kubelet = Kubelet(
        tmp_path / "kubelet",
        plane,
        "n-node",
        "10.244.0.1",
        "unix:///x.sock",
        "/exchange-n",
        "10.244.0.1",
    )
    kubelet.home.mkdir()
    config = json.loads(kubelet._config().read_text())
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == "/exchange-n"
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["evictionHard"]["imagefs.available"] == "1%"
    assert config["clusterDNS"] == ["10.244.0.1"]
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert (kubelet.home / "resolv.conf").read_text() == ""


def dns_reply(query: bytes, addresses: list[str], rcode: int = 0) -> bytes:
    header = struct.pack(
        ">HHHHHH", struct.unpack(">H", query[:2])[0], 0x8180 | rcode, 1, len(addresses), 0, 0
    )
    answers = b"".join(
        b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(a) for a in addresses
    )
    return header + query[12:] + answers


def test_dns_probe_reads_the_a_records_and_ignores_errors() -> None:
    query = coredns.build_query("kubernetes.default.svc.cluster.local")
    assert b"\x0akubernetes\x07default\x03svc\x07cluster\x05local\x00" in query
    assert coredns.parse_answer(query, dns_reply(query, ["10.0.0.1"])) == ["10.0.0.1"]
    assert coredns.parse_answer(query, dns_reply(query, ["10.0.0.7", "10.0.0.8"])) == [
        "10.0.0.7",
        "10.0.0.8",
    ]
    assert coredns.parse_answer(query, dns_reply(query, [], rcode=3)) == []  # NXDOMAIN
    assert coredns.parse_answer(query, b"\x00\x01" + dns_reply(query, ["10.0.0.1"])[2:]) == []


def test_image_wheels_follow_the_lock() -> None:
    lock = {
        line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
        for line in (Path(__file__).parents[2] / "requirements.lock").read_text().split()
    }
    wanted = {
        name.partition("[")[0]: version
        for name, _, version in (r.partition("==") for r in images.runtime_requirements())
    }
    assert {"kubernetes", "grpcio", "aiokafka", "asyncpg"} <= set(wanted)
    for name, version in wanted.items():
        assert version == lock.get(name, ""), name  # pinned exactly when the lock pins it


def test_the_debian_mirror_comes_from_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert images.apt_mirror(tmp_path) == "http://mirror.example/debian"
    assert images.apt_mirror(tmp_path / "missing") == "http://deb.debian.org/debian"


def test_on_demand_benchmarks_run_only_when_named() -> None:
    def run() -> dict[str, object]:
        return {}

    found = {"cluster.start": run, "cluster.cold_setup": run, "infra.kube_start": run}
    on_demand = {"cluster.cold_setup"}
    assert set(benchmarks.select(found, on_demand, "cluster")) == {"cluster.start"}
    assert set(benchmarks.select(found, on_demand, "")) == {"cluster.start", "infra.kube_start"}
    assert set(benchmarks.select(found, on_demand, "cluster.cold_setup")) == {"cluster.cold_setup"}


def test_pod_ready_reads_the_ready_condition() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    starting = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    assert rollout.pod_ready(ready)
    assert not rollout.pod_ready(starting)
    assert not rollout.pod_ready({})


def test_clusters_clash_on_name_bridge_or_address_but_not_with_themselves() -> None:
    def entry(name: str, state: str, bridge: str, address: str) -> registry.Entry:
        return registry.Entry(name, Path(state), bridge, address, owner=None)

    one = entry("one", "/s/one", "cni0", "10.244.0.1")
    assert not one.clashes_with(one)
    assert not one.clashes_with(entry("two", "/s/two", "cni1", "10.244.0.129"))
    assert one.clashes_with(entry("one", "/s/other", "cni1", "10.244.0.129"))
    assert one.clashes_with(entry("two", "/s/two", "cni0", "10.244.0.129"))
    assert one.clashes_with(entry("two", "/s/two", "cni1", "10.244.0.1"))


def test_an_entry_is_stale_when_its_owner_is_gone() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert registry.Entry("t", Path("/s"), "cni0", "10.244.0.1", owner=gone.pid).stale
    assert not registry.Entry("t", Path("/s"), "cni0", "10.244.0.1", owner=os.getpid()).stale
    assert not registry.Entry("d", Path("/s"), "cni0", "10.244.0.1", owner=None).stale
