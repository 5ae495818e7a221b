"""A planned batch's check and its balance, hold and cursor updates in one call; cheaper
per-market hold updates and double-entry trigger (same checks, same SQLSTATEs).

`ledger_apply_plan` checks, under the settlement lock the caller holds, what a plan made
ahead assumed (the markets' cursors as planned; no journal id at or above the plan's next
id taken by another writer), then runs `ledger_after_batch`. A failed check raises LP001
and the caller rolls back: nothing of the plan is kept and the batch takes the full path.
Checking after the journal and postings are copied in (rather than before) saves a round
trip per batch; it is as strong, because the lock is held from the transaction's first
statement, and a journal id already taken fails the copy on the primary key.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

APPLY_PLAN = r"""
CREATE FUNCTION ledger_apply_plan(
    e_markets text[], e_seqs bigint[], e_indexes int[], e_epochs bigint[], e_stalled bool[],
    e_reasons text[], e_stale bigint[], p_next_id bigint,
    p_accounts bigint[], p_available bigint[], p_hold bigint[],
    p_hold_markets text[], p_hold_accounts bigint[], p_hold_amounts bigint[],
    p_markets text[], p_seqs bigint[], p_indexes int[], p_epochs bigint[], p_stalled bool[],
    p_reasons text[], p_stale bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- A market without a row is at the defaults of market_state (what the plan assumed).
    IF EXISTS (
        SELECT 1
          FROM unnest(e_markets, e_seqs, e_indexes, e_epochs, e_stalled, e_reasons, e_stale)
               AS e(market, seq, idx, epoch, stalled, reason, stale)
          LEFT JOIN market_state s ON s.market = e.market
         WHERE (coalesce(s.applied_seq, 0), coalesce(s.applied_index, -1),
                coalesce(s.max_epoch, 0), coalesce(s.stalled, false),
                coalesce(s.stale_rejected, 0))
               IS DISTINCT FROM (e.seq, e.idx, e.epoch, e.stalled, e.stale)
            OR s.stall_reason IS DISTINCT FROM e.reason
    ) THEN
        RAISE EXCEPTION 'ledger: plan refused: the cursors moved' USING ERRCODE = 'LP001';
    END IF;
    IF (SELECT max(id) FROM journal) >= p_next_id THEN
        RAISE EXCEPTION 'ledger: plan refused: journal ids from % are taken', p_next_id
            USING ERRCODE = 'LP001';
    END IF;
    PERFORM ledger_after_batch(p_accounts, p_available, p_hold, p_hold_markets,
                               p_hold_accounts, p_hold_amounts, p_markets, p_seqs,
                               p_indexes, p_epochs, p_stalled, p_reasons, p_stale);
END $$
"""


# Market holds: an UPDATE of the rows that exist, then an INSERT of the rest, instead of
# INSERT ... ON CONFLICT DO UPDATE, whose speculative insertion costs about twice as much per
# row (nearly every row exists after a market's first batches). Safe without ON CONFLICT:
# every writer of market_holds (settlement and the repair) holds the settlement lock.
AFTER_BATCH = r"""
CREATE OR REPLACE FUNCTION ledger_after_batch(
    p_accounts bigint[], p_available bigint[], p_hold bigint[],
    p_hold_markets text[], p_hold_accounts bigint[], p_hold_amounts bigint[],
    p_markets text[], p_seqs bigint[], p_indexes int[], p_epochs bigint[], p_stalled bool[],
    p_reasons text[], p_stale bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE balances b
       SET available = b.available + d.a, hold = b.hold + d.h, version = b.version + 1,
           updated_at = now()
      FROM unnest(p_accounts, p_available, p_hold) AS d(id, a, h)
     WHERE b.account_id = d.id;
    WITH d AS (
        SELECT * FROM unnest(p_hold_markets, p_hold_accounts, p_hold_amounts)
                      AS d(market, account_id, amount)
    ), updated AS (
        UPDATE market_holds m SET amount = m.amount + d.amount
          FROM d WHERE m.market = d.market AND m.account_id = d.account_id
        RETURNING m.market, m.account_id
    )
    INSERT INTO market_holds (market, account_id, amount)
    SELECT d.market, d.account_id, d.amount
      FROM d LEFT JOIN updated u ON u.market = d.market AND u.account_id = d.account_id
     WHERE u.market IS NULL;
    INSERT INTO market_state AS s
           (market, applied_seq, applied_index, max_epoch, stalled, stall_reason, stale_rejected)
    SELECT * FROM unnest(p_markets, p_seqs, p_indexes, p_epochs, p_stalled, p_reasons, p_stale)
    ON CONFLICT (market) DO UPDATE SET
        applied_seq = EXCLUDED.applied_seq, applied_index = EXCLUDED.applied_index,
        max_epoch = EXCLUDED.max_epoch, stalled = EXCLUDED.stalled,
        stall_reason = EXCLUDED.stall_reason, stale_rejected = EXCLUDED.stale_rejected,
        updated_at = now();
END $$
"""


# The double-entry trigger with the same three checks; LB002 (every transaction of the
# statement is a journal row of this database transaction) first tries the usual case: the
# statement's tx ids span [lo, hi] and every journal id in that range was created by this
# transaction. Then every tx id (all within [lo, hi]) passes, proven by one index range scan
# instead of a DISTINCT and one index descent per transaction. Otherwise (ids with gaps, or
# a violation) the exact join decides, as in 0001.
CHECK_POSTINGS = r"""
CREATE OR REPLACE FUNCTION ledger_check_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    lo bigint;
    hi bigint;
BEGIN
    SELECT n.tx_id, n.asset, sum(n.amount) AS total INTO bad
      FROM new_postings n GROUP BY n.tx_id, n.asset HAVING sum(n.amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger: transaction % does not balance in %: postings sum to %',
            bad.tx_id, bad.asset, bad.total USING ERRCODE = 'LB001';
    END IF;
    SELECT min(n.tx_id), max(n.tx_id) INTO lo, hi FROM new_postings n;
    IF lo IS NOT NULL AND (
        SELECT count(*) FROM journal j
         WHERE j.id BETWEEN lo AND hi AND j.created_xid = pg_current_xact_id()
    ) <> hi - lo + 1 THEN
        SELECT n.tx_id INTO bad
          FROM (SELECT DISTINCT tx_id FROM new_postings) n
          LEFT JOIN journal j ON j.id = n.tx_id
         WHERE j.id IS NULL OR j.created_xid <> pg_current_xact_id() LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'ledger: postings of transaction % must be written with it',
                bad.tx_id USING ERRCODE = 'LB002';
        END IF;
    END IF;
    SELECT n.account_id, n.asset INTO bad
      FROM (SELECT DISTINCT account_id, asset FROM new_postings) n
      LEFT JOIN accounts a ON a.id = n.account_id
     WHERE a.id IS NULL OR a.asset <> n.asset LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger: account % does not exist or does not hold %',
            bad.account_id, bad.asset USING ERRCODE = 'LB003';
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.execute(CHECK_POSTINGS)
    op.execute(AFTER_BATCH)
    op.execute(APPLY_PLAN)


def downgrade() -> None:
    raise NotImplementedError("the ledger is append-only: its schema is never rolled back")
