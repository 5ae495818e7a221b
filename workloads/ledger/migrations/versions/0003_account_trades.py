"""A trader's own trades, newest first, without a scan of every posting.

A trade's two parties are the accounts whose hold it reduced (the seller's base, the buyer's
quote); a release (a cancel, an expiry) reduces a hold too, and the query keeps trades only.
The index is partial so that it costs the settlement path about two entries per trade rather
than one per posting (a trade has about seven).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

HOLDS_GIVEN_UP = r"""
CREATE INDEX IF NOT EXISTS postings_holds_given_up ON postings (account_id, tx_id)
 WHERE bucket = 'hold' AND amount < 0
"""


def upgrade() -> None:
    op.execute(HOLDS_GIVEN_UP)


def downgrade() -> None:
    raise NotImplementedError("the ledger is append-only: its schema is never rolled back")
