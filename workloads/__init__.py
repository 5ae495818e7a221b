"""The exchange's processes: matcher, ledger and gateway (one subpackage each).

gRPC's core polls its sockets from the completion-queue thread grpc.aio already runs,
instead of handing every read and write to a pool of four EventEngine threads: on two
cores shared by the venue's processes those threads competed with the event loops for the
CPU (half of the matcher loop's involuntary context switches) and added a thread hop to
each call. Measured on the matcher's unary benchmark at 2,000 calls/s, 26 interleaved
pairs of runs with the matcher and its load generator both on it: p99 median 9.5 -> 5.8
ms, p50 1.9 -> 1.5 ms, the matcher's CPU per call ~500 -> ~450 us; `gateway.orders` was
the same within noise (4 pairs). The core reads the setting once, when grpc is imported,
so it is set here, where every process of the venue starts (and its children inherit
it); an operator's own GRPC_EXPERIMENTS wins. A later grpcio that drops these experiments logs
"Unknown experiment" and runs as its default.
"""

import os

LEGACY_POLLER = (
    "-event_engine_listener,-event_engine_for_all_other_endpoints,"
    "-event_engine_callback_cq,-event_engine_client"
)
os.environ.setdefault("GRPC_EXPERIMENTS", LEGACY_POLLER)
