"""The operator's settings, from environment variables (the chart sets them), validated at
start: an invalid value stops the process with a message that names it.

| variable | default | meaning |
|---|---|---|
| OPERATOR_IMAGE | localhost/exchange-platform:dev | the workloads' image (`spec.image` wins) |
| OPERATOR_IMAGE_PULL_POLICY | IfNotPresent | for the workloads' containers |
| OPERATOR_NAMESPACES | (empty: all) | comma list of namespaces to watch |
| OPERATOR_NAMESPACE | (the pod's) | the operator's: the workloads' NetworkPolicies admit its pods |
| OPERATOR_STATUS_INTERVAL_S | 5 | how often each Market's status and failover are checked |
| OPERATOR_PEERING | exchange-operator | kopf peering name (one active replica); empty: standalone |
| OPERATOR_HEALTH_PORT | 8080 | liveness (`/healthz`, kopf's probe) |
| OPERATOR_METRICS_PORT | 9090 | Prometheus `/metrics` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """An invalid setting; the message names the variable."""


@dataclass(frozen=True)
class OperatorSettings:
    image: str = "localhost/exchange-platform:dev"
    image_pull_policy: str = "IfNotPresent"
    namespaces: tuple[str, ...] = ()
    namespace: str = ""
    status_interval: float = 5.0
    """Seconds between two status checks of a Market: how soon a failover is noticed, against
    four small API and RPC reads per market per check."""
    peering: str = "exchange-operator"
    health_port: int = 8080
    metrics_port: int = 9090

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        policy = env.get("OPERATOR_IMAGE_PULL_POLICY", "IfNotPresent")
        if policy not in ("Always", "IfNotPresent", "Never"):
            raise SettingsError(
                f"OPERATOR_IMAGE_PULL_POLICY={policy!r}: Always, IfNotPresent or Never"
            )
        return cls(
            image=env.get("OPERATOR_IMAGE", cls.image) or cls.image,
            image_pull_policy=policy,
            namespaces=tuple(
                n.strip() for n in env.get("OPERATOR_NAMESPACES", "").split(",") if n.strip()
            ),
            namespace=env.get("OPERATOR_NAMESPACE", "") or _own_namespace(),
            status_interval=_number(env, "OPERATOR_STATUS_INTERVAL_S", 5.0, 0.5),
            peering=env.get("OPERATOR_PEERING", cls.peering).strip(),
            health_port=int(_number(env, "OPERATOR_HEALTH_PORT", 8080, 1)),
            metrics_port=int(_number(env, "OPERATOR_METRICS_PORT", 9090, 1)),
        )

    def operator_peer(self) -> dict[str, Any]:
        """The NetworkPolicy peer that is the operator's pods."""
        peer: dict[str, Any] = {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "exchange-operator"}}
        }
        if self.namespace:
            peer["namespaceSelector"] = {
                "matchLabels": {"kubernetes.io/metadata.name": self.namespace}
            }
        else:
            peer["namespaceSelector"] = {}
        return peer


def _number(env: Mapping[str, str], name: str, default: float, low: float) -> float:
    raw = env.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < low:
        raise SettingsError(f"{name}={raw} must be at least {low}")
    return value


def _own_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    return open(path).read().strip() if os.path.exists(path) else ""
