"""The gateway's PostgreSQL schema: users, API keys, sessions and the shared edge state.

Applied at startup under an advisory lock, so replicas starting together do not race.
Everything a replica needs to agree with another lives here: a key revoked on one is
refused by the other on its next request, a signature seen by one is a replay on the
other, and both count toward one rate limit and one idempotency record.

`gw_admit` is the order path's only read-write round trip before the matcher: for a batch
of requests it checks the key is not revoked, records the signature (replay), counts the
request in its rate window and claims the Idempotency-Key, in request order. Those writes
need not survive a database crash (at worst a replay or a retry goes through, which the
matcher's own idempotency still catches), so the function commits them asynchronously.
"""

from __future__ import annotations

LOCK_ID = 0x6761_7465  # "gate"
IN_PROGRESS_LEASE_SEC = 30
"""An idempotency claim older than this with no response is taken over by a retry: its
replica died mid-request; the order's client id makes the matcher answer DUPLICATE."""

DDL = """
CREATE TABLE IF NOT EXISTS users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS api_keys (
    api_key text PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    secret text NOT NULL,
    label text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash bytea PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope text NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    status integer NOT NULL DEFAULT 0,
    body bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS replay (
    signature text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_limits (
    principal text NOT NULL,
    win bigint NOT NULL,
    count integer NOT NULL,
    PRIMARY KEY (principal, win)
);
CREATE OR REPLACE FUNCTION gw_admit(
    p_principal text[], p_api_key text[], p_signature text[], p_scope text[],
    p_idem_key text[], p_hash bytea[], p_limit integer, p_window bigint,
    p_replay_until timestamptz, p_idem_until timestamptz
) RETURNS TABLE (verdict integer, rate_count integer, stored_status integer, stored_body bytea)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    h bytea;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    -- Lock every principal of the batch first, in sorted order: batches (also of other
    -- replicas) that share principals queue here instead of deadlocking on their rows.
    PERFORM pg_advisory_xact_lock(%(lock)s, hashtext(pr))
    FROM (SELECT DISTINCT pr FROM unnest(p_principal) AS t (pr) ORDER BY pr) AS s;
    FOR i IN 1 .. coalesce(array_length(p_principal, 1), 0) LOOP
        verdict := 0; rate_count := 0; stored_status := NULL; stored_body := NULL;
        IF p_api_key[i] <> '' AND NOT EXISTS (
            SELECT 1 FROM api_keys k WHERE k.api_key = p_api_key[i] AND k.revoked_at IS NULL
        ) THEN
            verdict := 1;
        END IF;
        IF verdict = 0 AND p_signature[i] <> '' THEN
            INSERT INTO replay AS r (signature, expires_at) VALUES (p_signature[i], p_replay_until)
            ON CONFLICT (signature) DO UPDATE SET expires_at = EXCLUDED.expires_at
                WHERE r.expires_at < now();
            IF NOT FOUND THEN verdict := 2; END IF;
        END IF;
        IF verdict = 0 AND p_limit > 0 AND p_principal[i] <> '' THEN
            INSERT INTO rate_limits AS t (principal, win, count)
            VALUES (p_principal[i], p_window, 1)
            ON CONFLICT (principal, win) DO UPDATE SET count = t.count + 1
            RETURNING t.count INTO rate_count;
            IF rate_count > p_limit THEN verdict := 3; END IF;
        END IF;
        IF verdict = 0 AND p_idem_key[i] <> '' THEN
            INSERT INTO idempotency AS d (scope, key, request_hash, expires_at)
            VALUES (p_scope[i], p_idem_key[i], p_hash[i], p_idem_until)
            ON CONFLICT (scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash,
                status = 0, body = NULL, created_at = now(), expires_at = EXCLUDED.expires_at
                WHERE d.expires_at < now() OR (d.status = 0
                    AND d.request_hash = EXCLUDED.request_hash
                    AND d.created_at < now() - make_interval(secs => %(lease)s));
            IF NOT FOUND THEN
                SELECT d.status, d.body, d.request_hash INTO stored_status, stored_body, h
                FROM idempotency d WHERE d.scope = p_scope[i] AND d.key = p_idem_key[i];
                verdict := CASE WHEN h IS DISTINCT FROM p_hash[i] THEN 5 ELSE 4 END;
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
""".replace("%(lease)s", str(IN_PROGRESS_LEASE_SEC)).replace("%(lock)s", str(LOCK_ID & 0x7FFFFFFF))

# Verdicts of gw_admit.
ADMITTED = 0
REVOKED = 1
REPLAYED = 2
RATE_LIMITED = 3
IDEMPOTENT_MATCH = 4  # same key, same request: stored response (or still in progress)
IDEMPOTENT_MISMATCH = 5  # same key, different request
