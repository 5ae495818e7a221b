"""Wallets: each account's funds that no market holds, and transfers between them and markets.

- postings get a third bucket, `wallet`, and the materialized balances a `wallet` column;
- the journal takes entries the ledger books itself, with no matcher event behind them
  (deposits into and withdrawals from a wallet, the wallet's side of a transfer into a
  market, its refund when the matcher refuses): their reference starts with `wallet:` and
  their seq and epoch are 0;
- funding requests get the origin `transfer`.
Constraints are added NOT VALID and then validated, which does not block settlement while
existing rows are checked.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATEMENTS = (
    "ALTER TABLE balances ADD COLUMN wallet bigint NOT NULL DEFAULT 0",
    "ALTER TABLE postings DROP CONSTRAINT postings_bucket_check",
    """ALTER TABLE postings ADD CONSTRAINT postings_bucket_check
       CHECK (bucket IN ('available', 'hold', 'wallet')) NOT VALID""",
    "ALTER TABLE postings VALIDATE CONSTRAINT postings_bucket_check",
    "ALTER TABLE journal DROP CONSTRAINT journal_kind_check",
    """ALTER TABLE journal ADD CONSTRAINT journal_kind_check
       CHECK (kind IN ('reserve', 'release', 'trade', 'funding', 'correction',
                       'deposit', 'withdrawal', 'transfer')) NOT VALID""",
    "ALTER TABLE journal VALIDATE CONSTRAINT journal_kind_check",
    "ALTER TABLE journal DROP CONSTRAINT journal_seq_check",
    """ALTER TABLE journal ADD CONSTRAINT journal_seq_check
       CHECK (seq > 0 OR (seq = 0 AND epoch = 0 AND starts_with(reference, 'wallet:')))
       NOT VALID""",
    "ALTER TABLE journal VALIDATE CONSTRAINT journal_seq_check",
    """COMMENT ON COLUMN journal.reference IS 'The matcher event id <symbol>:<seq>:<index>, '
       'or wallet:<kind>:<id> for an entry the ledger books itself (seq 0): '
       'the exactly-once key.'""",
    "ALTER TABLE funding_requests DROP CONSTRAINT funding_requests_origin_check",
    """ALTER TABLE funding_requests ADD CONSTRAINT funding_requests_origin_check
       CHECK (origin IN ('adjustment', 'correction', 'transfer')) NOT VALID""",
    "ALTER TABLE funding_requests VALIDATE CONSTRAINT funding_requests_origin_check",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the ledger is append-only: its schema is never rolled back")
