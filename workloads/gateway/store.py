"""Shared state in PostgreSQL: users, API keys, sessions, idempotency, replay, rate limits.

Per-request writes on the order path are coalesced (see batching.py): one `gw_admit` call
admits every request that arrived within the batch window, one UPDATE stores all their
idempotent responses. Key secrets are cached in memory (they never change); whether a key
is revoked is checked inside `gw_admit`, so a revocation holds on every replica at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from workloads.gateway import schema
from workloads.gateway.batching import MicroBatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for. `account` is the matcher account of the user's orders."""

    user_id: int
    account: str
    api_key: str = ""
    static: bool = False
    session_hash: bytes = b""

    @property
    def name(self) -> str:
        """The rate-limit and idempotency scope."""
        if self.api_key:
            return f"key:{self.api_key}"
        return f"user:{self.user_id}"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    api_key: str
    secret: str
    user_id: int
    static: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    """One request's entry to `gw_admit`."""

    principal: str
    api_key: str  # checked for revocation; "" for static keys and sessions
    signature: str
    scope: str
    idempotency_key: str
    request_hash: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: int
    rate_count: int
    stored_status: int | None
    stored_body: bytes | None


def account_of(user_id: int) -> str:
    return f"u{user_id}"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def _keep_session(_: asyncpg.Connection) -> None:
    """Skip asyncpg's reset round trip on release: no statement here leaves session state
    (gw_admit's setting is transaction-local)."""


class Store:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        static_keys: dict[str, str],
        rate_limit: int,
        replay_ttl: float,
        idempotency_ttl: float,
        batch_window: float,
    ) -> None:
        self.pool = pool
        self.rate_limit = rate_limit
        self.replay_ttl = replay_ttl
        self.idempotency_ttl = idempotency_ttl
        self._keys: dict[str, KeyRecord] = {
            k: KeyRecord(k, s, 0, static=True) for k, s in static_keys.items()
        }
        self._admit = MicroBatcher[Admission, Verdict](
            "db_admit", self._admit_batch, window=batch_window, max_size=1000, max_inflight=3
        )
        self._pending: set[asyncio.Task[None]] = set()
        # Responses on their way to the idempotency table: a retry to this replica in that
        # window is answered from here rather than with 409 in progress.
        self.unwritten: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._finish = MicroBatcher[tuple[str, str, int, bytes], None](
            "db_idempotency", self._finish_batch, window=batch_window, max_size=1000, max_inflight=3
        )

    @classmethod
    async def open(cls, dsn: str, db_schema: str, pool_size: int, **kwargs: Any) -> Store:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{db_schema}"')
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", schema.LOCK_ID)
                await conn.execute(f'SET LOCAL search_path = "{db_schema}"')
                await conn.execute(schema.DDL)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=pool_size,
            server_settings={"search_path": db_schema, "application_name": "gateway"},
            reset=_keep_session,
        )
        return cls(pool, **kwargs)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        await self._admit.close()
        await self._finish.close()
        await self.pool.close()

    # ------------------------------------------------------------------ admission

    async def admit(self, item: Admission) -> Verdict:
        return await self._admit.submit(item)

    async def _admit_batch(self, items: list[Admission]) -> Sequence[Verdict]:
        for attempt in range(3):
            try:
                return await self._admit_once(items)
            except asyncpg.exceptions.DeadlockDetectedError:
                if attempt == 2:  # PostgreSQL broke a rare cross-scope cycle; retry it
                    raise
        raise AssertionError("unreachable")

    async def _admit_once(self, items: list[Admission]) -> Sequence[Verdict]:
        now = time.time()
        rows = await self.pool.fetch(
            "SELECT * FROM gw_admit($1, $2, $3, $4, $5, $6, $7, $8,"
            " to_timestamp($9), to_timestamp($10))",
            [i.principal for i in items],
            [i.api_key for i in items],
            [i.signature for i in items],
            [i.scope for i in items],
            [i.idempotency_key for i in items],
            [i.request_hash for i in items],
            self.rate_limit,
            int(now // 60),
            now + self.replay_ttl,
            now + self.idempotency_ttl,
        )
        return [Verdict(r[0], r[1], r[2], r[3]) for r in rows]

    async def finish_idempotent(self, scope: str, key: str, status: int, body: bytes) -> None:
        await self._finish.submit((scope, key, status, body))

    def finish_idempotent_later(self, scope: str, key: str, status: int, body: bytes) -> None:
        """Store the response without holding the reply back for it.

        Safe because the claim is already held: a retry that arrives first gets 409
        `idempotency_in_progress` (retry), and if this replica dies before the write, the
        claim's lease expires and the retry re-runs; for orders the matcher answers that
        DUPLICATE (the client order id is the Idempotency-Key) with the original result."""
        self.unwritten[(scope, key)] = (status, body)
        task = asyncio.get_running_loop().create_task(
            self._finish_quietly(scope, key, status, body)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _finish_quietly(self, scope: str, key: str, status: int, body: bytes) -> None:
        try:
            await self._finish.submit((scope, key, status, body))
        except Exception as exc:  # the claim's lease lets a retry run again
            log.warning("idempotency record not stored", extra={"why": repr(exc)})
        finally:
            self.unwritten.pop((scope, key), None)

    async def _finish_batch(self, items: list[tuple[str, str, int, bytes]]) -> Sequence[None]:
        # Asynchronous commit, as gw_admit: a response lost in a database crash only means a
        # retry runs again, and the matcher answers it DUPLICATE with the original result.
        await self.pool.execute(
            "WITH async AS (SELECT set_config('synchronous_commit', 'off', true))"
            " UPDATE idempotency d SET status = u.status, body = u.body"
            " FROM unnest($1::text[], $2::text[], $3::int[], $4::bytea[])"
            " AS u(scope, key, status, body), async"
            " WHERE d.scope = u.scope AND d.key = u.key",
            [i[0] for i in items],
            [i[1] for i in items],
            [i[2] for i in items],
            [i[3] for i in items],
        )
        return [None] * len(items)

    async def release_idempotent(self, scope: str, key: str) -> None:
        """Forget a claim whose request failed on our side (5xx): a retry may run again."""
        await self.pool.execute(
            "DELETE FROM idempotency WHERE scope = $1 AND key = $2 AND status = 0", scope, key
        )

    async def sweep(self) -> int:
        """Delete expired replay, rate-limit and idempotency rows; any replica may run it."""
        window = int(time.time() // 60)
        removed = 0
        async with self.pool.acquire() as conn:
            for sql, args in (
                ("DELETE FROM replay WHERE expires_at < now()", ()),
                ("DELETE FROM rate_limits WHERE win < $1", (window - 1,)),
                ("DELETE FROM idempotency WHERE expires_at < now()", ()),
                ("DELETE FROM sessions WHERE expires_at < now() - interval '1 day'", ()),
            ):
                status = await conn.execute(sql, *args)
                removed += int(status.split()[-1])
        return removed

    # ------------------------------------------------------------------ keys

    async def key(self, api_key: str) -> KeyRecord | None:
        """The key's secret and owner (cached: a key's secret never changes)."""
        cached = self._keys.get(api_key)
        if cached is not None:
            return cached
        if not api_key or len(api_key) > 64:
            return None
        row = await self.pool.fetchrow(
            "SELECT api_key, secret, user_id FROM api_keys WHERE api_key = $1", api_key
        )
        if row is None:
            return None
        record = KeyRecord(row[0], row[1], row[2])
        if len(self._keys) > 100_000:
            self._keys = {k: v for k, v in self._keys.items() if v.static}
        self._keys[api_key] = record
        return record

    async def create_key(self, user_id: int, label: str) -> tuple[str, str, float]:
        api_key = "k_" + secrets.token_hex(12)
        secret = secrets.token_urlsafe(32)
        created = await self.pool.fetchval(
            "INSERT INTO api_keys (api_key, user_id, secret, label) VALUES ($1, $2, $3, $4)"
            " RETURNING extract(epoch FROM created_at)",
            api_key,
            user_id,
            secret,
            label,
        )
        return api_key, secret, float(created)

    async def list_keys(self, user_id: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT api_key, label, extract(epoch FROM created_at) AS created,"
            " extract(epoch FROM revoked_at) AS revoked FROM api_keys WHERE user_id = $1"
            " ORDER BY created_at, api_key",
            user_id,
        )
        return [dict(r) for r in rows]

    async def revoke_key(self, user_id: int, api_key: str) -> bool:
        status = await self.pool.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
            " WHERE api_key = $1 AND user_id = $2",
            api_key,
            user_id,
        )
        return bool(status.endswith(" 1"))

    # ------------------------------------------------------------------ users and sessions

    async def create_user(self, email: str, password_hash: str) -> int | None:
        """The new user's id, or None when the email is taken."""
        return await self.pool.fetchval(  # type: ignore[no-any-return]
            "INSERT INTO users (email, password_hash) VALUES ($1, $2)"
            " ON CONFLICT (email) DO NOTHING RETURNING id",
            email,
            password_hash,
        )

    async def user_by_email(self, email: str) -> tuple[int, str] | None:
        row = await self.pool.fetchrow(
            "SELECT id, password_hash FROM users WHERE email = $1", email
        )
        return None if row is None else (row[0], row[1])

    async def user(self, user_id: int) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT id, email, extract(epoch FROM created_at) AS created FROM users WHERE id = $1",
            user_id,
        )
        return None if row is None else dict(row)

    async def create_session(self, user_id: int, ttl: float) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        expires = await self.pool.fetchval(
            "INSERT INTO sessions (token_hash, user_id, expires_at)"
            " VALUES ($1, $2, now() + make_interval(secs => $3))"
            " RETURNING extract(epoch FROM expires_at)",
            token_hash(token),
            user_id,
            float(ttl),
        )
        return token, float(expires)

    async def session_user(self, token: str) -> tuple[int, bytes] | None:
        digest = token_hash(token)
        user_id = await self.pool.fetchval(
            "SELECT user_id FROM sessions WHERE token_hash = $1 AND revoked_at IS NULL"
            " AND expires_at > now()",
            digest,
        )
        return None if user_id is None else (int(user_id), digest)

    async def revoke_session(self, digest: bytes) -> None:
        await self.pool.execute(
            "UPDATE sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL",
            digest,
        )
