"""The matcher's spans (MATCHER_OTEL_*): only for commands an order's sampled trace reaches.

The matcher starts no trace of its own: sampling is decided per order at the gateway, whose
request span's `traceparent` arrives as the command's `correlation_id`
(`workloads.common.tracing`). For each command of a batch whose correlation is a sampled
traceparent, and only for those:

- `matcher.batch` (child of the gateway's request span): from the batch's arrival until its
  WAL record is committed, with the batch's size and the command's seq and outcome;
- `matcher.wal_commit` (its child): from the command's execution until the group commit that
  holds it is durable (fsync, and an in-sync standby's acknowledgement);
- `matcher.outbox_publish` (child of the gateway's request span, kind PRODUCER): the Kafka
  transaction that publishes the command's events; its traceparent goes into those events'
  record headers, where the ledger and the gateway's feed continue the trace.

What this costs the hot path: with MATCHER_OTEL_ENDPOINT empty, one `is None` test per
batch. With it set, a length-and-character test per command, and for sampled commands a
few integers taken with the clock; the spans themselves are built after the reply has
gone (`call_soon`), and exported by the batch span processor's thread. A sampled command's
three spans cost about 0.17 ms of the process's CPU to build and encode (measured), which
is why the gateway samples 1% of orders by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from workloads.common.tracing import SAMPLED_LAST_DIGITS, parent_of, span_after, traceparent
from workloads.matcher import engine as e

_OUTCOMES = {e.ACCEPTED: "accepted", e.REJECTED: "rejected"}


def sampled_positions(items: Sequence[tuple[tuple[Any, ...], str]]) -> list[int]:
    """Positions of the commands whose correlation is a sampled traceparent (inlined
    `common.tracing.is_sampled`: this runs for every command while tracing is on)."""
    last = SAMPLED_LAST_DIGITS
    return [
        position
        for position, (_, correlation) in enumerate(items)
        if len(correlation) == 55 and correlation[54] in last
    ]


class MatcherTracing:
    """Builds the matcher's spans; one per process, shared by the service and the outbox."""

    def __init__(self, provider: TracerProvider, symbol: str) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("workloads.matcher")
        self.symbol = symbol

    def batch_spans(
        self,
        items: Sequence[tuple[tuple[Any, ...], str]],
        positions: Sequence[int],
        executed: Any,  # sequencer.Executed (not imported: the sequencer does not know us)
        started_ns: int,
        executed_ns: int,
        durable_ns: int,
    ) -> None:
        """`matcher.batch` and `matcher.wal_commit` for each sampled command of a batch."""
        duplicates: dict[int, Any] = executed.duplicates or {}
        for position in positions:
            parent = parent_of(items[position][1])
            if parent is None:
                continue
            attributes: dict[str, Any] = {
                "exchange.market": self.symbol,
                "matcher.epoch": executed.epoch,
                "matcher.batch.commands": len(items),
                "matcher.batch.sampled": len(positions),
            }
            duplicate = duplicates.get(position)
            if duplicate is not None:
                attributes["matcher.seq"] = duplicate.seq
                attributes["matcher.outcome"] = "duplicate"
            else:
                index = position - sum(1 for other in duplicates if other < position)
                _ts, _cmd, events, _correlation, _hash = executed.entries[index]
                attributes["matcher.seq"] = executed.first_seq + index
                attributes["matcher.outcome"] = _OUTCOMES.get(e.outcome(events)[0], "other")
                attributes["matcher.events"] = len(events)
            batch = span_after(
                self.tracer,
                "matcher.batch",
                parent,
                started_ns,
                durable_ns,
                kind=SpanKind.SERVER,
                attributes=attributes,
            )
            if duplicate is None:
                span_after(
                    self.tracer,
                    "matcher.wal_commit",
                    batch,
                    executed_ns,
                    durable_ns,
                    attributes={"matcher.batch.last_seq": executed.last_seq},
                )

    def start_publish(
        self, correlation: str, seq: int, topic: str, partition: int, commands: int
    ) -> tuple[Span, bytes] | None:
        """A started `matcher.outbox_publish` span for one sampled command of a Kafka
        transaction, and the traceparent its events carry in their headers."""
        parent = parent_of(correlation)
        if parent is None:
            return None
        span = self.tracer.start_span(
            "matcher.outbox_publish",
            parent,
            SpanKind.PRODUCER,
            {
                "exchange.market": self.symbol,
                "matcher.seq": seq,
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "matcher.outbox.commands": commands,
            },
        )
        return span, traceparent(span.get_span_context()).encode()

    @staticmethod
    def end_publish(spans: Sequence[Span], error: BaseException | None = None) -> None:
        for span in spans:
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, repr(error)))
            span.end()

    def shutdown(self) -> None:
        """Flush what is queued (blocking: call it from a thread)."""
        self.provider.shutdown()
