"""Shared state in PostgreSQL: users, API keys, sessions, idempotency, replay, rate limits.

Per-request writes on the order path are coalesced (see batching.py) into one `gw_batch`
call per batch window: it stores the responses that finished since the last call and admits
every request that arrived within the window. Key secrets are cached in memory (they never
change); whether a key is revoked is checked inside `gw_batch`, so a revocation holds on
every replica at once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple

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
    name: str = field(init=False, compare=False)
    """The rate-limit and idempotency scope (computed once: it is read on every request)."""

    def __post_init__(self) -> None:
        name = f"key:{self.api_key}" if self.api_key else f"user:{self.user_id}"
        object.__setattr__(self, "name", name)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as cached: its secret (as the bytes HMAC takes) and the principal it signs as."""

    api_key: str
    secret: str
    user_id: int
    static: bool = False
    secret_bytes: bytes = field(init=False, repr=False, compare=False)
    principal: Principal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "secret_bytes", self.secret.encode())
        if self.static:
            principal = Principal(0, self.api_key, api_key=self.api_key, static=True)
        else:
            principal = Principal(self.user_id, account_of(self.user_id), api_key=self.api_key)
        object.__setattr__(self, "principal", principal)


class Admission(NamedTuple):
    """One request's entry to `gw_batch` (tuples: built for every request, cheaply)."""

    principal: str
    api_key: str  # checked for revocation; "" for static keys and sessions
    signature: str
    scope: str
    idempotency_key: str
    request_hash: bytes  # SHA-256 of method, target and body; b"" without an Idempotency-Key


class Finished(NamedTuple):
    """A response to store under its Idempotency-Key (rides along with the next batch)."""

    scope: str
    key: str
    status: int
    body: bytes


class Verdict(NamedTuple):
    verdict: int
    rate_count: int
    stored_status: int | None
    stored_body: bytes | None


SEP = "\x1e"
"""Joins each text list of a batch into one value (see `gw_batch`): no principal, scope,
signature (hex) or Idempotency-Key (printable) holds it."""
NO_HASH = bytes(32)


def joined(values: list[str]) -> str:
    """`["a", "b"]` -> `"<SEP>a<SEP>b"`; refuses a value that holds SEP (it would split)."""
    text = SEP + SEP.join(values) if values else ""
    if text.count(SEP) != len(values):
        raise ValueError("a batched value holds the list separator")
    return text


def account_of(user_id: int) -> str:
    return f"u{user_id}"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def _keep_session(_: asyncpg.Connection) -> None:
    """Skip asyncpg's reset round trip on release: no statement here leaves session state
    (gw_batch's setting is transaction-local)."""


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
        # Admissions and finished responses share one batcher, hence one statement per window.
        self._batch = MicroBatcher[Admission | Finished, Verdict | None](
            "db_admit", self._run_batch, window=batch_window, max_size=1000, max_inflight=3
        )
        # Responses on their way to the idempotency table: a retry to this replica in that
        # window is answered from here rather than with 409 in progress.
        self.unwritten: dict[tuple[str, str], tuple[int, bytes]] = {}

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

    async def drain(self) -> None:
        """Wait (at most 5 s) until what is queued (responses written behind) has gone out."""
        pending = self._batch.pending()
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def close(self) -> None:
        await self.drain()  # the last responses still go out
        await self._batch.close()
        await self.pool.close()

    # ------------------------------------------------------------------ admission

    async def admit(self, item: Admission) -> Verdict:
        verdict = await self._batch.submit(item)
        assert verdict is not None
        return verdict

    def finish_idempotent_later(self, scope: str, key: str, status: int, body: bytes) -> None:
        """Store the response with the next batch, without holding the reply back for it.

        Safe because the claim is already held: a retry that arrives first gets 409
        `idempotency_in_progress` (retry), and if this replica dies before the write, the
        claim's lease expires and the retry re-runs; for orders the matcher answers that
        DUPLICATE (the client order id is the Idempotency-Key) with the original result."""
        self.unwritten[(scope, key)] = (status, body)
        future = self._batch.add(Finished(scope, key, status, body))
        future.add_done_callback(functools.partial(self._written, (scope, key)))

    def _written(self, key: tuple[str, str], future: asyncio.Future[Verdict | None]) -> None:
        self.unwritten.pop(key, None)
        if not future.cancelled() and future.exception() is not None:
            # the claim's lease lets a retry run again
            log.warning("idempotency record not stored", extra={"why": repr(future.exception())})

    async def _run_batch(self, items: list[Admission | Finished]) -> list[Verdict | None]:
        """One `gw_batch` call for `items`. A signature or an Idempotency-Key that occurs
        twice in one batch goes to a second call after the first (the set-based statements
        see each key once), where it meets the first one's row as any later request would."""
        results: list[Verdict | None] = [None] * len(items)
        now_items: list[int] = []
        admissions: list[Admission] = []
        later: list[int] = []
        signatures: set[str] = set()
        claims: set[tuple[str, str]] = set()
        finished: list[Finished] = []
        for i, item in enumerate(items):
            if isinstance(item, Finished):
                finished.append(item)
                continue
            claim = (item.scope, item.idempotency_key)
            signature = item.signature.lower()  # as gw_batch compares them
            if (signature and signature in signatures) or (
                item.idempotency_key and claim in claims
            ):
                later.append(i)
                continue
            if signature:
                signatures.add(signature)
            if item.idempotency_key:
                claims.add(claim)
            now_items.append(i)
            admissions.append(item)
        verdicts = await self._call(finished, admissions)
        for i, verdict in zip(now_items, verdicts, strict=True):
            results[i] = verdict
        if later:
            again = await self._run_batch([items[i] for i in later])
            for i, maybe in zip(later, again, strict=True):
                results[i] = maybe
        return results

    async def _call(self, finished: list[Finished], items: list[Admission]) -> list[Verdict]:
        for attempt in range(3):
            try:
                return await self._call_once(finished, items)
            except asyncpg.exceptions.DeadlockDetectedError:
                if attempt == 2:  # PostgreSQL broke a rare cycle of crossing retries; again
                    raise
        raise AssertionError("unreachable")

    async def _call_once(
        self,
        finished: list[Finished],
        items: list[Admission],
        conn: asyncpg.Connection | None = None,
    ) -> list[Verdict]:
        """One `gw_batch` call, on `conn` if given (a test's transaction), else the pool's."""
        now = time.time()
        hashes = b"".join([i.request_hash or NO_HASH for i in items])
        if len(hashes) != 32 * len(items):
            raise ValueError("a request hash is not a SHA-256 digest")
        row = await (conn or self.pool).fetchrow(
            "SELECT * FROM gw_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
            " to_timestamp($14), to_timestamp($15))",
            joined([f.scope for f in finished]),
            joined([f.key for f in finished]),
            joined([str(f.status) for f in finished]),
            joined([str(len(f.body)) for f in finished]),
            b"".join([f.body for f in finished]),
            joined([i.principal for i in items]),
            joined([i.api_key for i in items]),
            joined([i.signature.lower() for i in items]),
            joined([i.scope for i in items]),
            joined([i.idempotency_key for i in items]),
            hashes,
            self.rate_limit,
            int(now // 60),
            now + self.replay_ttl,
            now + self.idempotency_ttl,
        )
        assert row is not None
        verdicts, counts, taken, taken_status, taken_body = row
        out = list(map(Verdict, verdicts, counts, repeat(None), repeat(None)))
        for i, status, body in zip(taken, taken_status, taken_body, strict=True):
            out[i - 1] = Verdict(verdicts[i - 1], counts[i - 1], status, body)
        return out

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

    def cached_key(self, api_key: str) -> KeyRecord | None:
        """The key if this replica has it cached (no await on the hot path)."""
        return self._keys.get(api_key)

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
