"""job heartbeat: jobs.heartbeat_at

A running job is alive while its worker beats (claim, heartbeat thread, progress); the sweeper and `claim` read
only this column, not updated_at, which every write of the row moves (re-sending a job did, so a dead worker's
job looked fresh for ever). Rows running at upgrade time start from their updated_at, the old liveness signal.
Batch mode, so that SQLite (the embedded default) can drop the column again on downgrade.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 07:10:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE jobs SET heartbeat_at = updated_at WHERE state = 'running'")


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('heartbeat_at')
