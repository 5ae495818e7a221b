"""Benchmarks and load generators of the workloads (`make bench`, the ledger's exactly-once
stress). Beside the product packages, not inside them: they start the real parts through
`e2e.env`, which the image does not contain."""
