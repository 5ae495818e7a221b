"""Proof that the local cluster is a real Kubernetes node: the project's image runs as pods
that use the API with their own service-account token, Services and DNS route between pods,
PVC data survives a crash and a rescheduling, RBAC refuses, and kubectl's streaming
commands (logs, exec, port-forward) reach the containers through the kubelet."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.env import cleanup, gobuild, hostservices, images, rollout
from e2e.env.cluster import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

LEASE_READER = f"""
import http.server, json, os
from kubernetes import client
config = client.Configuration()
config.host = "https://kubernetes.default.svc"  # the Service, found through the cluster DNS
config.ssl_ca_cert = "{SA_DIR}/ca.crt"
config.api_key = {{"authorization": "Bearer " + open("{SA_DIR}/token").read()}}
namespace = open("{SA_DIR}/namespace").read()
api = client.CoordinationV1Api(client.ApiClient(config))
lease = api.read_namespaced_lease(os.environ["LEASE"], namespace)
seen = {{"lease": lease.metadata.name, "holder": lease.spec.holder_identity}}
print(json.dumps(seen), flush=True)
http.server.HTTPServer(("", 8080), http.server.SimpleHTTPRequestHandler).serve_forever()
"""

WEB_SERVER = """
import http.server, os, pathlib
root = pathlib.Path("/tmp/www")
root.mkdir(exist_ok=True)
(root / "index.html").write_text("served by " + os.environ["POD_NAME"])
os.chdir(root)
print("serving on 8080", flush=True)
http.server.HTTPServer(("", 8080), http.server.SimpleHTTPRequestHandler).serve_forever()
"""

# kube-proxy programs a new Service's endpoints asynchronously (until then its rule rejects
# connections), as on any cluster: the client retries refused connections for a while.
WEB_CLIENT = """
import json, os, time, urllib.error, urllib.request
urls = {
    "dns": "http://web." + os.environ["NAMESPACE"] + ".svc.cluster.local/",
    "short_name": "http://web/",
    "cluster_ip": "http://" + os.environ["WEB_CLUSTER_IP"] + "/",
}
def get(url):
    deadline = time.monotonic() + 30
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
answers = {k: get(u) for k, u in urls.items()}
print(json.dumps(answers))
"""

STORE = """
import pathlib, time, uuid
identity = pathlib.Path("/data/identity")
if not identity.exists():
    identity.write_text(uuid.uuid4().hex)
print("identity", identity.read_text(), flush=True)
while True:
    time.sleep(3600)
"""

HOST_SERVICES_CLIENT = """
import asyncio, json, os
import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

async def main():
    conn = await asyncpg.connect(os.environ["EXCHANGE_PG_DSN"])
    version = await conn.fetchval("SHOW server_version")
    await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=os.environ["EXCHANGE_KAFKA_BOOTSTRAP"])
    await admin.start()
    brokers = (await admin.describe_cluster())["brokers"]
    await admin.close()
    print(json.dumps({"postgres": version, "kafka_brokers": len(brokers)}))

asyncio.run(main())
"""


def container(name: str, script: str, **extra: Any) -> dict[str, Any]:
    """A container of the project's image, non-root on a read-only root filesystem."""
    return {
        "name": name,
        "image": images.PROJECT_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["python3", "-c", script],
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        **extra,
    }


def pod_spec(*containers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "containers": list(containers),
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "terminationGracePeriodSeconds": 1,
        **extra,
    }


def deployment(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def pod(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def http_ready(port: int = 8080) -> dict[str, Any]:
    return {"httpGet": {"path": "/", "port": port}, "periodSeconds": 1}


def create(local_cluster: Cluster, namespace: str, *objects: dict[str, Any]) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    local_cluster.kubectl("create", "-n", namespace, "-f", "-", input=body)


def test_deployment_reads_its_own_lease_with_its_service_account_token(
    local_cluster: Cluster, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    create(
        local_cluster,
        ns,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "lease-reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-market-lease"},
            "rules": [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "resourceNames": ["market-btc-usd"],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "lease-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-market-lease",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "lease-reader", "namespace": ns}],
        },
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "market-btc-usd"},
            "spec": {"holderIdentity": "matcher-0", "leaseDurationSeconds": 15},
        },
        deployment(
            "lease-reader",
            pod_spec(
                container(
                    "reader",
                    LEASE_READER,
                    env=[{"name": "LEASE", "value": "market-btc-usd"}],
                    readinessProbe=http_ready(),
                ),
                serviceAccountName="lease-reader",
            ),
        ),
    )

    rollout.wait_available(local_cluster.kubectl, ns, "lease-reader", timeout=90)

    logs = local_cluster.kubectl("logs", "-n", ns, "deployment/lease-reader")
    assert json.loads(logs.splitlines()[0]) == {"lease": "market-btc-usd", "holder": "matcher-0"}


def test_a_pod_reaches_another_pods_service_by_dns_name_and_cluster_ip(
    local_cluster: Cluster, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    create(
        local_cluster,
        ns,
        deployment(
            "web",
            pod_spec(container("web", WEB_SERVER, env=[pod_name], readinessProbe=http_ready())),
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    rollout.wait_available(local_cluster.kubectl, ns, "web", timeout=90)
    cluster_ip = local_cluster.kubectl(
        "get", "-n", ns, "service/web", "-o", "jsonpath={.spec.clusterIP}"
    )
    assert cluster_ip.startswith("10.0.0.")
    web_pod = local_cluster.kubectl(
        "get", "pods", "-n", ns, "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"
    )

    env = [{"name": "NAMESPACE", "value": ns}, {"name": "WEB_CLUSTER_IP", "value": cluster_ip}]
    create(
        local_cluster,
        ns,
        pod(
            "web-client", pod_spec(container("client", WEB_CLIENT, env=env), restartPolicy="Never")
        ),
    )
    rollout.wait_pod_phase(local_cluster.kubectl, ns, "web-client", "Succeeded", timeout=90)

    answers = json.loads(local_cluster.kubectl("logs", "-n", ns, "web-client"))
    expected = f"served by {web_pod}"
    assert answers == {"dns": expected, "short_name": expected, "cluster_ip": expected}


def statefulset(name: str) -> dict[str, Any]:
    """One replica whose /data is a PVC of the default (host-path) StorageClass.

    Host-path volumes keep the provisioner's root ownership (no fsGroup support), so an
    init container hands /data to the image's user, as one would on any hostPath-backed PV.
    """
    chown = container(
        "own-data",
        "import os; os.chown('/data', 10001, 10001)",
        securityContext={"runAsUser": 0, "runAsNonRoot": False, "readOnlyRootFilesystem": True},
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
    )
    store = container(
        "store",
        STORE,
        volumeMounts=[{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
        readinessProbe={"exec": {"command": ["cat", "/data/identity"]}, "periodSeconds": 1},
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": pod_spec(store, initContainers=[chown]),
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "64Mi"}},
                    },
                }
            ],
        },
    }


def test_statefulset_data_survives_kill_9_and_pod_deletion(
    local_cluster: Cluster, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    create(
        local_cluster,
        ns,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "store"},
            "spec": {"clusterIP": "None", "selector": {"app": "store"}, "ports": [{"port": 80}]},
        },
        statefulset("store"),
    )
    rollout.wait_statefulset(local_cluster.kubectl, ns, "store", timeout=90)
    pvc = rollout.get(local_cluster.kubectl, ns, "pvc/data-store-0")
    assert pvc["status"]["phase"] == "Bound"

    def identity() -> str:
        return local_cluster.kubectl(
            "exec", "-n", ns, "store-0", "-c", "store", "--", "cat", "/data/identity"
        )

    written = identity()
    assert re.fullmatch(r"[0-9a-f]{32}", written)

    # kill -9 the container's main process on the host: the kubelet restarts the container.
    first = rollout.get(local_cluster.kubectl, ns, "pod/store-0")
    container_id = first["status"]["containerStatuses"][0]["containerID"].removeprefix(
        "containerd://"
    )
    os.kill(local_cluster.containerd.container_pid(container_id), signal.SIGKILL)
    restarted = rollout.wait_pod(
        local_cluster.kubectl,
        ns,
        "store-0",
        until=lambda p: (
            rollout.pod_ready(p) and p["status"]["containerStatuses"][0]["restartCount"] == 1
        ),
        what="restarted once by the kubelet and Ready",
        timeout=60,
    )
    assert restarted["metadata"]["uid"] == first["metadata"]["uid"]
    assert identity() == written

    # Delete the pod: the StatefulSet controller makes a new one, bound to the same claim.
    local_cluster.kubectl("delete", "pod", "-n", ns, "store-0", "--wait=false")
    recreated = rollout.wait_pod(
        local_cluster.kubectl,
        ns,
        "store-0",
        until=lambda p: p["metadata"]["uid"] != first["metadata"]["uid"] and rollout.pod_ready(p),
        what="recreated by the StatefulSet and Ready",
        timeout=90,
    )
    assert recreated["status"]["containerStatuses"][0]["restartCount"] == 0
    assert identity() == written


def test_a_service_account_without_a_role_is_refused(
    local_cluster: Cluster, cluster_namespace: str
) -> None:
    ns = cluster_namespace
    local_cluster.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    token = local_cluster.kubectl("create", "token", "nobody", "-n", ns, "--duration=10m").strip()

    config = client.Configuration()
    config.host = local_cluster.plane.server
    config.ssl_ca_cert = str(local_cluster.plane.ca)
    config.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(config) as api:
        # The token is valid: the API server knows who this is ...
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert review.status is not None and review.status.user_info is not None
        assert review.status.user_info.username == f"system:serviceaccount:{ns}:nobody"
        # ... and, with no Role bound, refuses it.
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(api).list_namespaced_pod(ns)
        assert refused.value.status == 403
        with pytest.raises(ApiException) as refused_lease:
            client.CoordinationV1Api(api).read_namespaced_lease("any", ns)
        assert refused_lease.value.status == 403


@pytest.fixture
def port_forward(local_cluster: Cluster) -> Iterator[list[subprocess.Popen[str]]]:
    """Holds `kubectl port-forward` processes so they are stopped even when a test fails."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def test_kubectl_logs_exec_and_port_forward(
    local_cluster: Cluster, cluster_namespace: str, port_forward: list[subprocess.Popen[str]]
) -> None:
    ns = cluster_namespace
    env = [{"name": "POD_NAME", "value": "echo"}]
    create(
        local_cluster,
        ns,
        pod("echo", pod_spec(container("echo", WEB_SERVER, env=env, readinessProbe=http_ready()))),
    )
    rollout.wait_pod(local_cluster.kubectl, ns, "echo", timeout=90)

    assert "serving on 8080" in local_cluster.kubectl("logs", "-n", ns, "echo")
    assert (
        local_cluster.kubectl(
            "exec", "-n", ns, "echo", "--", "python3", "-c", "print(6 * 7)"
        ).strip()
        == "42"
    )
    whoami = local_cluster.kubectl("exec", "-n", ns, "echo", "--", "id", "-u").strip()
    assert whoami == "10001"

    forward = subprocess.Popen(
        [
            str(gobuild.binary("kubectl")),
            f"--kubeconfig={local_cluster.kubeconfig}",
            "port-forward", "-n", ns, "pod/echo", "--address", "127.0.0.1", ":8080",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    port_forward.append(forward)
    assert forward.stdout is not None
    first_line = forward.stdout.readline()  # "Forwarding from 127.0.0.1:<port> -> 8080"
    match = re.search(r"127\.0\.0\.1:(\d+) -> 8080", first_line)
    assert match, first_line
    with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/", timeout=10) as response:
        assert response.read().decode() == "served by echo"


def test_pods_find_postgres_and_kafka_through_the_published_config_map(
    local_cluster: Cluster,
    cluster_namespace: str,
    cluster_services: hostservices.HostServices,
) -> None:
    ns = cluster_namespace
    cluster_services.publish(ns)
    published = rollout.get(local_cluster.kubectl, ns, f"configmap/{hostservices.CONFIG_MAP}")
    assert published["data"]["EXCHANGE_KAFKA_BOOTSTRAP"].startswith(f"{local_cluster.address}:")

    env_from = [{"configMapRef": {"name": hostservices.CONFIG_MAP}}]
    create(
        local_cluster,
        ns,
        pod(
            "services-client",
            pod_spec(
                container("client", HOST_SERVICES_CLIENT, envFrom=env_from), restartPolicy="Never"
            ),
        ),
    )
    rollout.wait_pod_phase(local_cluster.kubectl, ns, "services-client", "Succeeded", timeout=120)
    report = json.loads(local_cluster.kubectl("logs", "-n", ns, "services-client"))
    assert report["postgres"].startswith("15.")
    assert report["kafka_brokers"] == 1


def test_node_processes_run_on_the_host(local_cluster: Cluster, cluster_namespace: str) -> None:
    """What `ps` shows during a run: the control plane, the node agents, the runtime and a
    pod's shim, all as host processes of this cluster."""
    ns = cluster_namespace
    sandbox = {"name": "pause", "image": images.PAUSE_IMAGE, "imagePullPolicy": "Never"}
    create(local_cluster, ns, pod("pause", {"containers": [sandbox]}))
    rollout.wait_pod(local_cluster.kubectl, ns, "pause", timeout=60)

    commands = [
        command.split()[0].rsplit("/", 1)[-1]
        for command in cleanup.processes_using(str(local_cluster.settings.state_dir)).values()
    ]
    for name in (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "containerd",
        "containerd-shim-runc-v2",
        "kubelet",
        "kube-proxy",
        "coredns",
    ):
        assert name in commands, (name, commands)
