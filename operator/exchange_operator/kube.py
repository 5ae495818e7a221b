"""The operator's I/O with the API server (the kubernetes client, in worker threads).

Writes are server-side apply under one field manager (`exchange-operator`), forced: the
operator owns the fields it sets and never touches others' (a user's labels, the HPA's
replicas of nothing it sets). The Lease is the exception: created once, then written only by
its holder, and by the operator only to release it after fencing, conditionally on the
resourceVersion it read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from exchange_operator.model import API_VERSION, FIELD_MANAGER, SAFETYMODES

T = TypeVar("T")
TIMEOUT = 10.0


class KubeUnavailable(RuntimeError):
    """The API server could not be asked, or answered an error the caller cannot fix."""


def api_client() -> client.ApiClient:
    """In a pod its ServiceAccount, elsewhere the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


@dataclass(frozen=True)
class PodState:
    name: str
    uid: str
    ready: bool
    ip: str
    deleting: bool
    revision: str = ""
    """The StatefulSet revision the pod was made from (`controller-revision-hash`)."""


@dataclass(frozen=True)
class LeaseState:
    holder: str
    transitions: int
    resource_version: str
    acquire_time: str


def _pod_state(pod: client.V1Pod) -> PodState:
    status = pod.status or client.V1PodStatus()
    ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
    meta = pod.metadata or client.V1ObjectMeta()
    return PodState(
        meta.name or "",
        meta.uid or "",
        ready,
        status.pod_ip or "",
        meta.deletion_timestamp is not None,
        (meta.labels or {}).get("controller-revision-hash", ""),
    )


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._dynamic: dynamic.DynamicClient | None = None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, _request_timeout=TIMEOUT, **kwargs)
        except ApiException:
            raise
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeUnavailable(repr(exc)) from None

    def _resources(self) -> dynamic.DynamicClient:
        if self._dynamic is None:
            self._dynamic = dynamic.DynamicClient(self.api)  # type: ignore[no-untyped-call]
        return self._dynamic

    async def apply(self, manifest: dict[str, Any]) -> None:
        """Server-side apply of one object (forced: the operator owns what it sets)."""

        def run() -> None:
            resource = self._resources().resources.get(
                api_version=manifest["apiVersion"], kind=manifest["kind"]
            )
            self._resources().server_side_apply(  # type: ignore[no-untyped-call]
                resource,
                body=manifest,
                namespace=manifest["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                _request_timeout=TIMEOUT,
            )

        try:
            await asyncio.to_thread(run)
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise KubeUnavailable(repr(exc)) from None

    async def create_lease(self, manifest: dict[str, Any]) -> bool:
        """Create the Lease unless it exists; never overwrite its holder's fields."""
        meta = manifest["metadata"]
        try:
            await self._call(self.coordination.create_namespaced_lease, meta["namespace"], manifest)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def lease(self, namespace: str, name: str) -> LeaseState | None:
        try:
            lease = await self._call(self.coordination.read_namespaced_lease, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        spec = lease.spec or client.V1LeaseSpec()
        acquired = spec.acquire_time.isoformat() if spec.acquire_time else ""
        return LeaseState(
            spec.holder_identity or "",
            spec.lease_transitions or 0,
            str(lease.metadata.resource_version if lease.metadata else ""),
            acquired,
        )

    async def release_lease(self, namespace: str, name: str, read: LeaseState) -> bool:
        """Empty the holder, conditional on the version read (demote before promote: only
        after the holder's pod is gone). False when the Lease changed meanwhile."""
        patch = {
            "metadata": {"resourceVersion": read.resource_version},
            "spec": {"holderIdentity": ""},
        }
        try:
            await self._call(
                self.coordination.patch_namespaced_lease,
                name,
                namespace,
                patch,
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def pod(self, namespace: str, name: str) -> PodState | None:
        try:
            pod = await self._call(self.core.read_namespaced_pod, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _pod_state(pod)

    async def pods(self, namespace: str, selector: dict[str, str]) -> list[PodState]:
        """The pods with these labels, by name."""
        found = await self._call(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        )
        return sorted((_pod_state(p) for p in found.items), key=lambda p: p.name)

    async def update_revision(self, namespace: str, name: str) -> str:
        """The StatefulSet's revision its pods should run ("" before its first status)."""
        try:
            found = await self._call(
                client.AppsV1Api(self.api).read_namespaced_stateful_set, name, namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return ""
            raise
        return (found.status.update_revision or "") if found.status else ""

    async def delete_pod(self, namespace: str, pod: PodState, grace: int | None) -> None:
        """Delete exactly this pod (its UID as a precondition), not a successor. `grace`:
        seconds to stop in (None: the pod's own terminationGracePeriodSeconds)."""
        body = client.V1DeleteOptions(
            grace_period_seconds=grace, preconditions=client.V1Preconditions(uid=pod.uid)
        )
        try:
            await self._call(self.core.delete_namespaced_pod, pod.name, namespace, body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def config_map(self, namespace: str, name: str) -> dict[str, str]:
        try:
            found = await self._call(self.core.read_namespaced_config_map, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return dict(found.data or {})

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        import base64

        try:
            found = await self._call(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return ""
            raise
        raw = (found.data or {}).get(key)
        return base64.b64decode(raw).decode() if raw else ""

    async def statefulset_ready(self, namespace: str, name: str) -> int:
        try:
            found = await self._call(
                client.AppsV1Api(self.api).read_namespaced_stateful_set, name, namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return 0
            raise
        return (found.status.ready_replicas or 0) if found.status else 0

    async def deployment_replicas(self, namespace: str, name: str) -> tuple[int, int]:
        """(available, wanted) replicas of a Deployment; (0, 0) while it does not exist."""
        try:
            found = await self._call(
                client.AppsV1Api(self.api).read_namespaced_deployment, name, namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return 0, 0
            raise
        available = (found.status.available_replicas or 0) if found.status else 0
        return available, found.spec.replicas or 0

    async def wait_for_resources(self, plurals: tuple[str, ...], within: float) -> None:
        """Until the API server serves our resources. Right after their CRDs are created (a
        first `helm install`) it answers 429 "storage is (re)initializing" for a while, and a
        controller that starts watching meanwhile may never recover its timers."""
        group, version = API_VERSION.split("/")
        deadline = asyncio.get_running_loop().time() + within
        for plural in plurals:
            while True:
                try:
                    await self._call(
                        self.custom.list_cluster_custom_object, group, version, plural, limit=1
                    )
                    break
                except (ApiException, KubeUnavailable) as exc:
                    if asyncio.get_running_loop().time() > deadline:
                        raise KubeUnavailable(f"{plural}.{group} not served: {exc}") from exc
                    await asyncio.sleep(1)

    async def create_safetymode(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create unless it exists (False then)."""
        group, version = API_VERSION.split("/")
        try:
            await self._call(
                self.custom.create_namespaced_custom_object,
                group,
                version,
                namespace,
                SAFETYMODES,
                body,
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True
