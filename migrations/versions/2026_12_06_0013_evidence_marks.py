"""readers' own evidence: reads.evidence_marks

The regions a reader marked as what drove their grade (boxes and brush strokes in normalised image coordinates,
each on an image of the read: app.reading.schemas.EvidenceMark), saved with the draft and frozen at submit.
Existing reads get an empty list: nobody marked anything before.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 20:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('reads') as batch:
        batch.add_column(sa.Column('evidence_marks', sa.JSON(), server_default=sa.text("'[]'"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('reads') as batch:
        batch.drop_column('evidence_marks')
