"""The market's Lease through the kubernetes client: the I/O half of `lease.py`."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from workloads.matcher.lease import (
    SYNC_STANDBY,
    Identity,
    LeaseEpoch,
    LeaseRecord,
    LeaseUnavailable,
)
from workloads.matcher.settings import MatcherSettings

log = logging.getLogger(__name__)


class LeaseApi:
    """Read and conditionally replace one Lease (the kubernetes client, in a worker thread)."""

    def __init__(
        self, api_client: client.ApiClient, namespace: str, name: str, timeout: float = 2.0
    ) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.timeout = timeout

    async def read(self) -> LeaseRecord:
        try:
            lease = await asyncio.to_thread(
                self.api.read_namespaced_lease,
                self.name,
                self.namespace,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            raise LeaseUnavailable(f"{exc.status} {exc.reason}") from None
        except (OSError, TimeoutError, urllib3.exceptions.HTTPError) as exc:
            raise LeaseUnavailable(repr(exc)) from None
        spec = lease.spec or client.V1LeaseSpec()
        annotations = (lease.metadata.annotations if lease.metadata else None) or {}
        return LeaseRecord(
            spec.holder_identity or "",
            spec.lease_transitions or 0,
            _version(lease),
            annotations.get(SYNC_STANDBY, ""),
        )

    async def write(
        self,
        read: LeaseRecord,
        holder: str,
        transitions: int,
        duration: float,
        acquired: bool,
        sync_standby: str | None = None,
    ) -> LeaseRecord | None:
        """Write over the record `read` was; None when someone else wrote in between (409).

        A merge patch that carries the resourceVersion: the API server refuses it with 409
        if the Lease changed since it was read, as it would a PUT, but a patch leaves what
        others own (the operator's labels and owner reference) alone."""
        now = _micro_time()
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(1, round(duration)),
            "leaseTransitions": transitions,
            "renewTime": now,
        }
        if acquired:
            spec["acquireTime"] = now
        metadata: dict[str, Any] = {"resourceVersion": read.resource_version}
        if sync_standby is not None:
            metadata["annotations"] = {SYNC_STANDBY: sync_standby or None}  # None deletes it
        patch = {"metadata": metadata, "spec": spec}
        try:
            lease = await asyncio.to_thread(
                self.api.patch_namespaced_lease,
                self.name,
                self.namespace,
                patch,
                _content_type="application/merge-patch+json",
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise LeaseUnavailable(f"{exc.status} {exc.reason}") from None
        except (OSError, TimeoutError, urllib3.exceptions.HTTPError) as exc:
            raise LeaseUnavailable(repr(exc)) from None
        standby = read.sync_standby if sync_standby is None else sync_standby
        return LeaseRecord(holder, transitions, _version(lease), standby)


def _version(lease: client.V1Lease) -> str:
    return str(lease.metadata.resource_version if lease.metadata else "")


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_epoch(settings: MatcherSettings) -> LeaseEpoch:
    """This process's fencing by the market's Lease (a new boot: a new holder identity)."""
    api = LeaseApi(
        api_client(os.environ.get("KUBECONFIG") or None),
        settings.lease_namespace,
        settings.lease_name,
    )
    return LeaseEpoch(api, Identity(settings.instance, settings.pod_uid or "local"),
                      settings.lease_timing)  # fmt: skip


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """In a pod: its ServiceAccount; elsewhere (tests): a kubeconfig file."""
    if kubeconfig:
        loaded: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
        return loaded
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class PodRole:
    """Labels this instance's own pod with its role (`exchange.io/role`: leader, standby,
    refusing): the market's client Service selects the leader by it, at once and without
    the operator. Best effort: a failure is logged and tried again at the next change."""

    LABEL = "exchange.io/role"

    def __init__(self, api_client: client.ApiClient, namespace: str, pod: str) -> None:
        self.api = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.pod = pod
        self.current: str | None = None

    async def follow(self, role: Callable[[], str], every: float = 0.2) -> None:
        """Keep the label equal to `role()` (checked every `every` s, patched on change)."""
        while True:
            await self.set(role())
            await asyncio.sleep(every)

    async def set(self, role: str) -> None:
        if role == self.current:
            return
        patch = {"metadata": {"labels": {self.LABEL: role}}}
        try:
            await asyncio.to_thread(
                self.api.patch_namespaced_pod,
                self.pod,
                self.namespace,
                patch,
                _content_type="application/merge-patch+json",
                _request_timeout=2.0,
            )
        except (ApiException, OSError, TimeoutError, urllib3.exceptions.HTTPError) as exc:
            log.warning(
                "could not label the pod with its role", extra={"role": role, "why": repr(exc)}
            )
            return
        self.current = role
