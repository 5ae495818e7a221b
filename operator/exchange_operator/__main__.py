"""`python -m exchange_operator` (console script `exchange-operator`): the operator.

kopf runs the handlers of `handlers.py`, cluster-wide or in OPERATOR_NAMESPACES, with peering
(several replicas, one active: the one of highest priority, each drawing its own; a standby
takes over within the peering lifetime, 20 s, of the active one's end) unless
OPERATOR_PEERING is empty; liveness on
OPERATOR_HEALTH_PORT (`/healthz`), Prometheus metrics on OPERATOR_METRICS_PORT.
"""

from __future__ import annotations

import logging
import secrets
import sys

import kopf
from prometheus_client import start_http_server

from exchange_operator import handlers  # noqa: F401  (registers the handlers)
from exchange_operator.settings import OperatorSettings, SettingsError
from workloads.common import logs


def _without_kopf_settings(record: logging.LogRecord) -> bool:
    """kopf attaches its whole settings object to every record: drop it from the JSON."""
    record.__dict__.pop("settings", None)
    return True


def main() -> None:
    logs.configure("operator")
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as exc:
        sys.exit(f"operator: invalid setting: {exc}")
    start_http_server(settings.metrics_port)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_without_kopf_settings)
    # kopf reports every timer run at INFO; its warnings and errors are what matter.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # the probes, every 5 s
    kopf.run(
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=not settings.peering,
        peering_name=settings.peering or None,
        # Replicas of equal priority would all pause (kopf's rule for a conflict): each
        # draws its own, and the highest is the active one.
        priority=secrets.randbelow(1_000_000) + 1,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
    )


if __name__ == "__main__":
    main()
