"""The matcher: one per market, the only writer of its order book and sequence.

Layers, from the pure core outwards:
- `spec`: the market's integer scales and limits.
- `engine`: the deterministic state machine (book, risk, idempotency); no I/O, no clock.
- `codec`: binary commands and events for the WAL; `wal`, `snapshot`: durability.
- `sequencer`: stamps seq and time, runs the engine, group-commits the WAL, replies.
- `outbox`: publishes durable events to Kafka; `service`: gRPC; `__main__`: the process.
"""
