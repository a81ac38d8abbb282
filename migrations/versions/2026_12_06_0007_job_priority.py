"""job priority: jobs.priority

Which queued job a worker takes first (app.tables.JobPriority: 0 a signed-in user's upload or request, 5 a
command-line import, 9 the demo). Jobs from before this revision are batch work (5). The index serves the
worker's look for the most urgent queued job of its queue. Batch mode, so that SQLite can drop the column again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 16:10:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), server_default='5', nullable=False))
        batch_op.create_index('ix_jobs_queue_order', ['state', 'queue', 'priority', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_queue_order')
        batch_op.drop_column('priority')
