"""Proof that the Kubernetes API the fixtures start is real: CRDs, watches, status
subresources, server-side validation and garbage collection by the controller-manager."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from e2e.env.process import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


def widget_crd(group: str) -> dict[str, Any]:
    spec_schema = {
        "type": "object",
        "required": ["size"],
        "properties": {
            "size": {"type": "integer", "minimum": 1, "maximum": 10},
            "color": {"type": "string", "enum": ["red", "blue"]},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": spec_schema,
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


@dataclass(frozen=True)
class Widgets:
    """The test CRD's objects in one namespace, through the dynamic custom-objects API."""

    api: client.CustomObjectsApi
    group: str
    namespace: str

    def create(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{self.group}/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": spec,
        }
        return cast(
            dict[str, Any],
            self.api.create_namespaced_custom_object(
                self.group, "v1", self.namespace, "widgets", body
            ),
        )

    def get(self, name: str) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.api.get_namespaced_custom_object(
                self.group, "v1", self.namespace, "widgets", name
            ),
        )


def established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    crd = ext.read_custom_resource_definition(name)
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def test_crd_object_watch_status_and_validation(api: client.ApiClient, k8s_namespace: str) -> None:
    group = f"g{uuid.uuid4().hex[:8]}.test.exchange.io"
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(cast(Any, widget_crd(group)))  # a plain manifest
    wait_until(lambda: established(ext, f"widgets.{group}"), timeout=30, what="CRD Established")
    widgets = Widgets(client.CustomObjectsApi(api), group, k8s_namespace)

    seen: list[tuple[str, str | None]] = []
    # Watch from the list's resourceVersion: every change after it is delivered however late
    # the watch request itself goes out (the stream only connects on its first read).
    listed = cast(
        dict[str, Any],
        widgets.api.list_namespaced_custom_object(group, "v1", k8s_namespace, "widgets"),
    )
    since = listed["metadata"]["resourceVersion"]

    def watch_widgets() -> None:
        stream = watch.Watch().stream(
            widgets.api.list_namespaced_custom_object,
            group,
            "v1",
            k8s_namespace,
            "widgets",
            resource_version=since,
            timeout_seconds=20,
        )
        for event in stream:
            status = event["object"].get("status") or {}
            seen.append((event["type"], status.get("phase")))
            if status.get("phase") == "Ready":
                return

    watcher = threading.Thread(target=watch_widgets, daemon=True)
    watcher.start()

    created = widgets.create("w1", {"size": 3})
    assert created["metadata"]["generation"] == 1

    # The status subresource: the patch changes status and leaves spec and generation alone.
    widgets.api.patch_namespaced_custom_object_status(
        group,
        "v1",
        k8s_namespace,
        "widgets",
        "w1",
        {"status": {"phase": "Ready"}, "spec": {"size": 9}},
    )
    current = widgets.get("w1")
    assert current["status"] == {"phase": "Ready"}
    assert current["spec"] == {"size": 3}
    assert current["metadata"]["generation"] == 1

    watcher.join(25)
    assert ("ADDED", None) in seen
    assert ("MODIFIED", "Ready") in seen

    bad_specs: list[dict[str, Any]] = [
        {"size": 0},
        {"size": "three"},
        {"color": "green", "size": 2},
        {},
    ]
    for bad_spec in bad_specs:
        with pytest.raises(ApiException) as rejected:
            widgets.create("bad", bad_spec)
        assert rejected.value.status == 422, bad_spec
    with pytest.raises(ApiException) as missing:
        widgets.get("bad")
    assert missing.value.status == 404

    ext.delete_custom_resource_definition(f"widgets.{group}")


def test_controller_manager_collects_orphaned_dependents(
    api: client.ApiClient, k8s_namespace: str
) -> None:
    core = client.CoreV1Api(api)

    def config_map(name: str, owners: list[client.V1OwnerReference] | None = None) -> str:
        meta = client.V1ObjectMeta(name=name, owner_references=owners)
        created = core.create_namespaced_config_map(
            k8s_namespace, client.V1ConfigMap(metadata=meta)
        )
        assert created.metadata is not None
        return str(created.metadata.uid)

    owner_uid = config_map("owner")
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner_uid
    )
    config_map("dependent", [reference])
    config_map("bystander")

    core.delete_namespaced_config_map("owner", k8s_namespace)

    def names() -> set[str]:
        items = core.list_namespaced_config_map(k8s_namespace).items
        return {str(cm.metadata.name) for cm in items if cm.metadata is not None}

    wait_until(
        lambda: "dependent" not in names(),
        timeout=60,
        what="garbage collection of the dependent",
        interval=0.25,
    )
    assert "bystander" in names()
