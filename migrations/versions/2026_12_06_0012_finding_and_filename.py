"""a reader study's finding, an instance's uploaded file name, studies indexed by patient

reader_studies.finding: the finding a binary-finding study reads ("effusion"), a label of the model that serves
its cases. instances.source_filename: the uploaded file's own name, shown for image uploads without a patient
name. Existing rows get "" (a binary-finding study made before keeps the nodule form). studies.patient_id
indexed: a study's priors are the other studies of its patient.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 19:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('reader_studies') as batch:
        batch.add_column(sa.Column('finding', sa.String(length=64), server_default='', nullable=False))
    with op.batch_alter_table('instances') as batch:
        batch.add_column(sa.Column('source_filename', sa.String(length=255), server_default='', nullable=False))
    op.create_index('ix_studies_patient_id', 'studies', ['patient_id'])


def downgrade() -> None:
    op.drop_index('ix_studies_patient_id', table_name='studies')
    with op.batch_alter_table('instances') as batch:
        batch.drop_column('source_filename')
    with op.batch_alter_table('reader_studies') as batch:
        batch.drop_column('finding')
