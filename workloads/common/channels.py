"""gRPC channels to a matcher, as every client of one opens them.

gRPC's default reconnect backoff starts at 1 s and grows by 1.6x up to 120 s. A matcher
restart (a crash, a failover, a rolling upgrade) takes a second or two; with the default a
client that failed a few times meanwhile waits seconds more after the matcher is back. A
matcher is one known address, not a fleet to spare from a reconnect storm: retry every
100 ms at first, never less often than once a second, and look its name up again as often.
"""

from __future__ import annotations

import time

import grpc

from contracts.v1 import matcher_pb2_grpc

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


def not_leader(exc: grpc.aio.AioRpcError) -> bool:
    """The instance answered that it does not lead (a standby, a process starting, or one
    refusing to serve)."""
    details = exc.details() or ""
    return exc.code() == grpc.StatusCode.FAILED_PRECONDITION and (
        "NOT_LEADER" in details or details.startswith("REFUSING")
    )


class LeaderChannel:
    """A channel to a market's leader through its Service, which routes each new connection
    to the pod labelled leader. A connection made while the Service still listed a former
    leader (its pod relabels itself a moment after it restarts) stays on that pod: gRPC
    keeps a connection that works. So a client that hears "not the leader" drops the
    channel, at most every RESET_S, and the next call connects through the Service again.

    Each channel keeps its own connections (`grpc.use_local_subchannel_pool`): by default
    channels of one process to the same address share them, and the new channel would go on
    using the old one's connection to the former leader (seen: 10 s of NOT_LEADER after a
    failover, until the test gave up)."""

    RESET_S = 0.2

    def __init__(self, target: str, *options: tuple[str, int]) -> None:
        self.target = target
        self.options = (*options, ("grpc.use_local_subchannel_pool", 1))
        self.channel = matcher_channel(target, *self.options)
        self.stub = matcher_pb2_grpc.MatcherStub(self.channel)
        self._reset_at = 0.0

    async def reset(self) -> None:
        now = time.monotonic()
        if now - self._reset_at < self.RESET_S:
            return
        self._reset_at = now
        old, self.channel = self.channel, matcher_channel(self.target, *self.options)
        self.stub = matcher_pb2_grpc.MatcherStub(self.channel)
        await old.close(grace=1.0)

    async def close(self) -> None:
        await self.channel.close()
