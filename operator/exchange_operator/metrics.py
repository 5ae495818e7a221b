"""The operator's Prometheus metrics (served on OPERATOR_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter

RECONCILES = Counter("exchange_operator_reconciles_total", "Children or venues applied", ["what"])
ERRORS = Counter("exchange_operator_errors_total", "Failed reconcile steps", ["step"])
FAILOVERS = Counter(
    "exchange_operator_failovers_total", "Epoch changes of a market's leader", ["reason"]
)
FENCES = Counter("exchange_operator_fences_total", "Leader pods the operator deleted")
STATUS_PATCHES = Counter("exchange_operator_status_patches_total", "Market status patches")
MODES_APPLIED = Counter(
    "exchange_operator_modes_applied_total", "SetSymbolMode calls made for SafetyModes"
)
BREACHES = Counter("exchange_operator_breaches_total", "Ledger latches turned into SafetyModes")
