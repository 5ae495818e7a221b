"""The matcher: one per market, the only writer of its order book and sequence.

Layers, from the pure core outwards:
- `spec`: the market's integer scales and limits.
- `engine`: the deterministic state machine (book, risk, idempotency); no I/O, no clock.
- `codec`: binary commands and events for the WAL; `wal`, `snapshot`: durability.
- `sequencer`: stamps seq and time, runs the engine, group-commits the WAL, replies.
- `outbox`: publishes durable events to Kafka; `service`: gRPC; `__main__`: the process.

gRPC's core polls its sockets from the completion-queue thread grpc.aio already runs,
instead of handing every read and write to a pool of four EventEngine threads: on two
cores shared with the rest of the venue those threads competed with the event loop for
the CPU (half of its involuntary context switches) and added a thread hop to each call.
Measured on the unary benchmark at 2,000 calls/s, 26 interleaved pairs of runs with the
matcher and its load generator both on it: p99 median 9.5 -> 5.8 ms, p50 1.9 -> 1.5 ms,
the matcher's CPU per call 500 -> 450 us. It is read once, when grpc is imported, which is why it is
set here (this package's processes import it first); an operator's own GRPC_EXPERIMENTS
wins. A later grpcio that drops these experiments logs "Unknown experiment" and runs as
its default.
"""

import os

LEGACY_POLLER = (
    "-event_engine_listener,-event_engine_for_all_other_endpoints,"
    "-event_engine_callback_cq,-event_engine_client"
)
os.environ.setdefault("GRPC_EXPERIMENTS", LEGACY_POLLER)
