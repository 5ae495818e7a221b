"""How `make e2e-kind` reaches kind's node: through `docker exec` on the node container
(a `docker` stand-in on PATH records what it is asked), with routes for the kind address
plan, and a target description that the `kube_target` fixture reads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.env import kind

pytestmark = pytest.mark.unit


@pytest.fixture
def docker_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    calls = tmp_path / "calls"
    docker = tmp_path / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        'if [ "$3 $4" = "crictl inspect" ]; then echo \'{"info": {"pid": 4242}}\'; fi\n'
    )
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path('/usr/bin')}:{Path('/bin')}")
    return calls


def test_the_nodes_processes_are_reached_through_docker_exec(
    tmp_path: Path, docker_calls: Path
) -> None:
    node = kind.KindCluster(tmp_path / "kubeconfig")
    assert node.container_pid("c0ffee") == 4242
    node.on_node("kill", "-STOP", "4243")
    node.tag_image("localhost/exchange-platform:dev", "localhost/exchange-platform:e2e-next")
    assert docker_calls.read_text().splitlines() == [
        "exec exchange-control-plane crictl inspect c0ffee",
        "exec exchange-control-plane kill -STOP 4243",
        "exec exchange-control-plane ctr --namespace k8s.io images tag --force "
        "localhost/exchange-platform:dev localhost/exchange-platform:e2e-next",
    ]


def test_a_failed_command_on_the_node_says_what_failed(tmp_path: Path, docker_calls: Path) -> None:
    (tmp_path / "docker").write_text("#!/bin/sh\necho 'no such container' >&2\nexit 1\n")
    node = kind.KindCluster(tmp_path / "kubeconfig")
    with pytest.raises(RuntimeError, match="no such container"):
        node.on_node("true")
    assert node.on_node("true", check=False) == ""


def test_the_target_description_round_trips(tmp_path: Path) -> None:
    endpoints = {"EXCHANGE_KAFKA_BOOTSTRAP": "172.18.0.1:29094"}
    kind.write_target(tmp_path / "target.json", tmp_path / "kubeconfig", endpoints,
                      "http://172.18.0.1:29012", "http://127.0.0.1:29191")  # fmt: skip
    node, services = kind.load_target(tmp_path / "target.json")
    assert (node.kubeconfig, node.node) == (tmp_path / "kubeconfig", kind.NODE)
    assert services.endpoints() == endpoints
    assert services.archive("venue").endpoint == "http://172.18.0.1:29012"
    assert services.prometheus_url == "http://127.0.0.1:29191"


def test_the_host_routes_the_kind_pod_and_service_ranges_to_the_node() -> None:
    assert kind.routes("172.18.0.2") == [
        ["ip", "route", "replace", "10.244.0.0/16", "via", "172.18.0.2"],
        ["ip", "route", "replace", "10.0.0.0/24", "via", "172.18.0.2"],
    ]
