"""The trader gateway: REST and WebSocket in front of the matchers (aiohttp).

Signed API keys and sessions, idempotency, replay protection and rate limits in shared
PostgreSQL state (so replicas agree), orders coalesced into matcher batches over gRPC,
and market data and private updates from the core events topic.
"""
