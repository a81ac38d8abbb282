"""read client sequence: reads.client_seq

The page's number of the newest draft stored (milliseconds since the epoch, raised past the last one sent): an
autosave that arrives after a newer one (a keep-alive request overtaken by the beacon sent as the page was
left) leaves the newer draft in place. Drafts from before this revision have none; the next one sets it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 16:30:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('reads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_seq', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('reads', schema=None) as batch_op:
        batch_op.drop_column('client_seq')
