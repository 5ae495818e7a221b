"""Benchmarks, load generators and the event simulator of the workloads (`make bench`, the
ledger's exactly-once stress). Beside the product packages, never inside them: they start
the real parts through `e2e.env`, which the image does not contain.

Importing `workloads` first starts gRPC's core here as in the venue's processes (the
poller setting in `workloads/__init__.py`), so that a load generator measures the matcher,
not a different gRPC runtime of its own."""

import workloads  # noqa: F401  (GRPC_EXPERIMENTS before any grpc import)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0.99: p99) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
