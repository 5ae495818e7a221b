"""gRPC channels to a matcher, as every client of one opens them.

gRPC's default reconnect backoff starts at 1 s and grows by 1.6x up to 120 s. A matcher
restart (a crash, a failover, a rolling upgrade) takes a second or two; with the default a
client that failed a few times meanwhile waits seconds more after the matcher is back. A
matcher is one known address, not a fleet to spare from a reconnect storm: retry every
100 ms at first, never less often than once a second, and look its name up again as often.
"""

from __future__ import annotations

import grpc

RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # A matcher replaced by a new pod has a new address behind the same DNS name; gRPC
    # resolves the name again only every 30 s by default, so clients would knock at the old
    # address that long (seen: a deposit waiting 20 s for a restarted matcher).
    ("grpc.dns_min_time_between_resolutions_ms", 500),
    # A frozen matcher's kernel keeps its connections open: without pings a client would
    # wait on it until the process is killed, while the standby already leads elsewhere.
    ("grpc.keepalive_time_ms", 2_000),
    ("grpc.keepalive_timeout_ms", 1_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)

SERVER_OPTIONS = (
    # Accept those pings (by default a server answers pings more often than every 5 min
    # without data with GOAWAY "too_many_pings").
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
    ("grpc.http2.max_ping_strikes", 0),
)


def matcher_channel(target: str, *options: tuple[str, int]) -> grpc.aio.Channel:
    """An insecure channel to the matcher at `target`, reconnecting quickly."""
    return grpc.aio.insecure_channel(target, options=[*RECONNECT_OPTIONS, *options])
