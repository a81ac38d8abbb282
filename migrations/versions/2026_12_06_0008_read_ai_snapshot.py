"""read ai snapshot: reads.ai_shown, reads.ai_snapshot

What of the AI a read's page carried at submit (model, version, label, probability, entropy, referral, heatmap
method, condition), recorded by the server and copied, so that a later prediction or model change cannot alter
it; and whether it was on screen. Reads from before this revision keep both null: nobody recorded it. Batch
mode, so that SQLite can drop the columns again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 16:20:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('reads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ai_shown', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('ai_snapshot', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('reads', schema=None) as batch_op:
        batch_op.drop_column('ai_snapshot')
        batch_op.drop_column('ai_shown')
