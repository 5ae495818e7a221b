"""The ledger's Prometheus metrics (served at /metrics).

The `reconciliation_*` and `invariant_*` names are the seed's, so its alert rules apply.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("ledger_events_total", "Events seen by the applier, by outcome", ["outcome"])
APPLIED = EVENTS.labels("applied")
DUPLICATES = EVENTS.labels("duplicate")
PARKED = EVENTS.labels("parked")
STALE_EPOCH = Counter(
    "ledger_stale_epoch_rejected_total",
    "Events rejected because their epoch is lower than the highest seen for the market",
    ["market"],
)
GAPS = Counter("ledger_seq_gaps_total", "Seq gaps that stalled a market", ["market"])
POSTINGS = Counter("ledger_postings_total", "Postings written")
BATCH_SECONDS = Histogram(
    "ledger_batch_seconds",
    "One settlement database transaction",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_EVENTS = Histogram(
    "ledger_batch_events",
    "Events per settlement database transaction",
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 50000),
)
APPLIED_SEQ = Gauge("ledger_applied_seq", "Last applied matcher seq", ["market"])
APPLY_ERRORS = Counter("ledger_apply_errors_total", "Failed settlement transactions (retried)")
CONSUMER_PAUSED = Gauge("ledger_consumer_paused", "1 while the settlement consumer is paused")
CONSUMER_LAG = Gauge("ledger_consumer_lag", "Records on the topic not yet settled")
API_ERRORS = Counter("ledger_api_errors_total", "Requests answered with a 4xx, by code", ["code"])
FUNDING_SENT = Counter(
    "ledger_funding_commands_total", "Funding commands sent to matchers, by result", ["result"]
)

RECONCILIATION_LAG_MAX = Gauge("reconciliation_lag_max", "Largest lag over the markets")
RECONCILIATION_LAG = Gauge(
    "reconciliation_lag", "Matcher committed seq - ledger applied seq", ["market"]
)
RECONCILIATION_BEHIND_SECONDS = Gauge(
    "reconciliation_behind_seconds",
    "How long the ledger has trailed the matcher by more than the lag threshold (0: it does not)",
    ["market"],
)
RECONCILIATION_BREACH_ACTIVE = Gauge(
    "reconciliation_breach_active", "Markets in breach (lag, staleness or mismatch)"
)
RECONCILIATION_ALERTS = Counter("reconciliation_alert_total", "Breaches that began")
RECONCILIATION_LATCHED = Gauge(
    "reconciliation_latched",
    "1 while the market is latched (held in its safety mode until an admin releases it)",
    ["market", "source"],
)
RECONCILIATION_LAG_GRACE = Gauge(
    "reconciliation_lag_grace_seconds",
    "LEDGER_RECONCILIATION_LAG_GRACE_MS in seconds: how long the ledger may trail before a lag "
    "breach (alert rules warn at a fraction of it)",
)
RECONCILIATION_MISMATCHES = Counter(
    "reconciliation_mismatch_total", "Evaluations that found a mismatch"
)
RECONCILIATION_STALE = Counter(
    "reconciliation_stale_total", "Evaluations that found the matcher's seq stale"
)
RECONCILIATION_SAFETY_TRIGGERS = Counter(
    "reconciliation_safety_trigger_total", "Safety modes set on a matcher for a breach"
)
RECONCILIATION_SAFETY_FAILURES = Counter(
    "reconciliation_safety_failure_total", "Failed attempts to set a safety mode for a breach"
)
INVARIANT_SAFETY_TRIGGERS = Counter(
    "invariant_safety_trigger_total", "Safety modes set on a matcher for a failed invariant"
)
INVARIANT_SAFETY_FAILURES = Counter(
    "invariant_safety_failure_total", "Failed attempts to set a safety mode for an invariant"
)
INVARIANT_FAILURES = Counter(
    "ledger_invariant_failures_total", "Invariant checks that failed", ["check"]
)
