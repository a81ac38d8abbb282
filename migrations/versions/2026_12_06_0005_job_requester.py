"""job requester: jobs.requested_by_id

Who asked for a job through POST /api/jobs, so that the number of expensive jobs (perturbation and sampling
methods) one user has queued or running can be capped (app.jobs.service). Jobs planned by an upload, and every
job from before this revision, have none. A deleted user's jobs keep running, their requester set to NULL.
Batch mode, so that SQLite (the embedded default) can drop the column again on downgrade.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 10:15:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_by_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_jobs_requested_by_id', ['requested_by_id'], unique=False)
        batch_op.create_foreign_key(
            'fk_jobs_requested_by_id', 'users', ['requested_by_id'], ['id'], ondelete='SET NULL'
        )


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_requested_by_id', type_='foreignkey')
        batch_op.drop_index('ix_jobs_requested_by_id')
        batch_op.drop_column('requested_by_id')
