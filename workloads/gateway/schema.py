"""The gateway's PostgreSQL schema: users, API keys, sessions and the shared edge state.

Applied at startup under an advisory lock, so replicas starting together do not race.
Everything a replica needs to agree with another lives here: a key revoked on one is
refused by the other on its next request, a signature seen by one is a replay on the
other, and both count toward one rate limit and one idempotency record.

`gw_batch` is the order path's only round trip to the database, one per batch window for
all the requests of that window: it stores the responses of the requests that finished
since the last one, then, for each new request, checks the key is not revoked, records
the signature (replay), counts the request in its rate window and claims the
Idempotency-Key, in request order. Each step is one set-based statement for the whole
batch (not one per request): PostgreSQL's per-statement cost, not the rows, is what a
batch of small writes pays for. Rows are written in sorted key order, so batches of two
replicas that share principals queue on a row rather than deadlock. Those writes need not
survive a database crash (at worst a replay or a retry goes through, which the matcher's
own idempotency still catches), so the function commits them asynchronously.
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
-- The janitor deletes expired records every 30 s; a day of them at 1,000 orders/s is 86M
-- rows, which it must not scan.
CREATE INDEX IF NOT EXISTS idempotency_expires ON idempotency (expires_at);
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
-- Lists arrive as one value each: text joined (`<RS>a<RS>b`, RS = chr(30), which no key,
-- scope or signature holds; numbers as their text), request hashes concatenated (32 bytes
-- each) and response bodies concatenated with their lengths. For the client, one value is
-- far cheaper to encode than an array of many elements.
CREATE OR REPLACE FUNCTION gw_batch(
    j_f_scope text, j_f_key text, j_f_status text, j_f_length text, j_f_body bytea,
    j_principal text, j_api_key text, j_signature text, j_scope text,
    j_idem_key text, j_hash bytea, p_limit integer, p_window bigint,
    p_replay_until timestamptz, p_idem_until timestamptz
) RETURNS TABLE (verdicts integer[], counts integer[], taken integer[],
                 taken_status integer[], taken_body bytea[])
LANGUAGE plpgsql
-- Every table access here is by primary key. PL/pgSQL caches its statements' plans per
-- connection, and a plan made while the tables were tiny (seq scan, hash join) is kept as
-- they grow: measured, the responses' UPDATE went from 0.2 to 10 ms per batch as
-- `idempotency` grew to 50,000 rows. These settings hold whatever the statistics say.
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    f_scope text[] := (string_to_array(j_f_scope, chr(30)))[2:];
    f_key text[] := (string_to_array(j_f_key, chr(30)))[2:];
    f_status integer[] := (string_to_array(j_f_status, chr(30)))[2:]::integer[];
    f_body bytea[] := ARRAY(
        SELECT substring(j_f_body FROM (sum(t.l) OVER (ORDER BY t.i) - t.l + 1)::integer
                         FOR t.l)
        FROM unnest((string_to_array(j_f_length, chr(30)))[2:]::integer[])
             WITH ORDINALITY AS t (l, i)
        ORDER BY t.i);
    p_principal text[] := (string_to_array(j_principal, chr(30)))[2:];
    p_api_key text[] := (string_to_array(j_api_key, chr(30)))[2:];
    p_signature text[] := (string_to_array(j_signature, chr(30)))[2:];
    p_scope text[] := (string_to_array(j_scope, chr(30)))[2:];
    p_idem_key text[] := (string_to_array(j_idem_key, chr(30)))[2:];
    p_hash bytea[] := ARRAY(
        SELECT substring(j_hash FROM g * 32 + 1 FOR 32)
        FROM generate_series(0, length(j_hash) / 32 - 1) AS g ORDER BY g);
    n integer := coalesce(array_length(p_principal, 1), 0);
    v integer[] := array_fill(0, ARRAY[n]);
    idx integer;
    cnt integer;
    st integer;
    bd bytea;
    h bytea;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    counts := array_fill(0, ARRAY[n]);
    taken := '{}';
    taken_status := '{}';
    taken_body := '{}';
    -- 1. The responses of requests that finished since the last batch.
    IF coalesce(array_length(f_scope, 1), 0) > 0 THEN
        UPDATE idempotency d SET status = u.status, body = u.body
        FROM unnest(f_scope, f_key, f_status, f_body) AS u (scope, key, status, body)
        WHERE d.scope = u.scope AND d.key = u.key;
    END IF;
    -- 2. Revoked (or deleted) API keys.
    FOR idx IN
        SELECT t.i FROM unnest(p_api_key) WITH ORDINALITY AS t (k, i)
        WHERE t.k <> '' AND NOT EXISTS (
            SELECT 1 FROM api_keys a WHERE a.api_key = t.k AND a.revoked_at IS NULL)
    LOOP
        v[idx] := 1;
    END LOOP;
    -- 3. Replay: one INSERT of every signature; the caller sends a signature once a batch.
    FOR idx IN
        WITH c AS (
            SELECT t.s, t.i FROM unnest(p_signature, v) WITH ORDINALITY AS t (s, vv, i)
            WHERE t.vv = 0 AND t.s <> '' ORDER BY t.s
        ), fresh AS (
            INSERT INTO replay AS r (signature, expires_at)
            SELECT c.s, p_replay_until FROM c ORDER BY c.s
            ON CONFLICT (signature) DO UPDATE SET expires_at = EXCLUDED.expires_at
                WHERE r.expires_at < now()
            RETURNING r.signature
        )
        SELECT c.i FROM c WHERE NOT EXISTS (SELECT 1 FROM fresh f WHERE f.signature = c.s)
    LOOP
        v[idx] := 2;
    END LOOP;
    -- 4. Rate limits: one upsert per principal (sorted: batches never deadlock on these
    --    rows), then each request's count in request order.
    IF p_limit > 0 THEN
        FOR idx, cnt IN
            WITH t AS (
                SELECT u.pr, u.i FROM unnest(p_principal, v) WITH ORDINALITY AS u (pr, vv, i)
                WHERE u.vv = 0 AND u.pr <> ''
            ), g AS (
                SELECT t.pr, count(*)::integer AS k FROM t GROUP BY t.pr ORDER BY t.pr
            ), up AS (
                INSERT INTO rate_limits AS rl (principal, win, count)
                SELECT g.pr, p_window, g.k FROM g ORDER BY g.pr
                ON CONFLICT (principal, win) DO UPDATE SET count = rl.count + EXCLUDED.count
                RETURNING rl.principal, rl.count
            )
            SELECT t.i,
                (up.count - g.k + row_number() OVER (PARTITION BY t.pr ORDER BY t.i))::integer
            FROM t JOIN g ON g.pr = t.pr JOIN up ON up.principal = t.pr
        LOOP
            counts[idx] := cnt;
            IF cnt > p_limit THEN
                v[idx] := 3;
            END IF;
        END LOOP;
    END IF;
    -- 5. Idempotency-Key claims, one INSERT; the caller sends a scope and key once a batch.
    FOR idx IN
        WITH c AS (
            SELECT u.sc, u.k, u.h, u.i
            FROM unnest(p_scope, p_idem_key, p_hash, v) WITH ORDINALITY AS u (sc, k, h, vv, i)
            WHERE u.vv = 0 AND u.k <> '' ORDER BY u.sc, u.k
        ), claimed AS (
            INSERT INTO idempotency AS d (scope, key, request_hash, expires_at)
            SELECT c.sc, c.k, c.h, p_idem_until FROM c ORDER BY c.sc, c.k
            ON CONFLICT (scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash,
                status = 0, body = NULL, created_at = now(), expires_at = EXCLUDED.expires_at
                WHERE d.expires_at < now() OR (d.status = 0
                    AND d.request_hash = EXCLUDED.request_hash
                    AND d.created_at < now() - make_interval(secs => %(lease)s))
            RETURNING d.scope, d.key
        )
        SELECT c.i FROM c
        WHERE NOT EXISTS (SELECT 1 FROM claimed x WHERE x.scope = c.sc AND x.key = c.k)
    LOOP
        -- Held by an earlier request (a retry, or a reuse of the key): this statement's
        -- fresh snapshot sees the holder's row even when it committed after the INSERT began.
        SELECT d.status, d.body, d.request_hash INTO st, bd, h
        FROM idempotency d WHERE d.scope = p_scope[idx] AND d.key = p_idem_key[idx];
        IF NOT FOUND THEN  -- released (5xx) or swept meanwhile: let the client retry
            st := 0;
            bd := NULL;
            h := p_hash[idx];
        END IF;
        v[idx] := CASE WHEN h IS DISTINCT FROM p_hash[idx] THEN 5 ELSE 4 END;
        taken := array_append(taken, idx);
        taken_status := array_append(taken_status, st);
        taken_body := array_append(taken_body, bd);
    END LOOP;
    verdicts := v;
    RETURN NEXT;
END $$;
""".replace("%(lease)s", str(IN_PROGRESS_LEASE_SEC))

# Verdicts of gw_batch.
ADMITTED = 0
REVOKED = 1
REPLAYED = 2
RATE_LIMITED = 3
IDEMPOTENT_MATCH = 4  # same key, same request: stored response (or still in progress)
IDEMPOTENT_MISMATCH = 5  # same key, different request
