"""reader studies: reader_studies, study_cases, study_readers, assignments

Reads, assistance events and ratings point at their assignment. The alterations run in batch mode so
that SQLite (the embedded default) can take them: it cannot add a foreign key with ALTER TABLE.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:24:46.151255
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('reader_studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('task', sa.Enum('dr_grading', 'binary_finding', 'explanation_rating', name='study_task', native_enum=False, length=32), nullable=False),
    sa.Column('scheme', sa.String(length=32), nullable=False),
    sa.Column('conditions', sa.JSON(), nullable=False),
    sa.Column('questions', sa.JSON(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('washout_days', sa.Float(), nullable=False),
    sa.Column('allow_toggle', sa.Boolean(), nullable=False),
    sa.Column('educational', sa.Boolean(), nullable=False),
    sa.Column('state', sa.Enum('draft', 'open', 'closed', name='reader_study_state', native_enum=False, length=16), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('study_readers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reader_study_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('pseudonym', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['reader_study_id'], ['reader_studies.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reader_study_id', 'user_id', name='uq_study_readers_user')
    )
    op.create_index(op.f('ix_study_readers_reader_study_id'), 'study_readers', ['reader_study_id'], unique=False)
    op.create_index(op.f('ix_study_readers_user_id'), 'study_readers', ['user_id'], unique=False)
    op.create_table('study_cases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reader_study_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('pseudonym', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('reference', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['reader_study_id'], ['reader_studies.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reader_study_id', 'pseudonym', name='uq_study_cases_pseudonym'),
    sa.UniqueConstraint('reader_study_id', 'study_id', name='uq_study_cases_study')
    )
    op.create_index(op.f('ix_study_cases_reader_study_id'), 'study_cases', ['reader_study_id'], unique=False)
    op.create_table('assignments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reader_study_id', sa.Integer(), nullable=False),
    sa.Column('study_reader_id', sa.Integer(), nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('condition', sa.String(length=64), nullable=False),
    sa.Column('session', sa.Integer(), nullable=False),
    sa.Column('order', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('state', sa.Enum('pending', 'done', name='assignment_state', native_enum=False, length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['study_cases.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reader_study_id'], ['reader_studies.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_reader_id'], ['study_readers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_reader_id', 'order', name='uq_assignments_reader_order')
    )
    op.create_index(op.f('ix_assignments_case_id'), 'assignments', ['case_id'], unique=False)
    op.create_index(op.f('ix_assignments_reader_study_id'), 'assignments', ['reader_study_id'], unique=False)
    op.create_index(op.f('ix_assignments_study_reader_id'), 'assignments', ['study_reader_id'], unique=False)
    for table in ('assistance_events', 'explanation_ratings', 'reads'):
        with op.batch_alter_table(table) as batch:
            if table != 'reads':  # reads.assignment_id exists since 0002, without a foreign key
                batch.add_column(sa.Column('assignment_id', sa.Integer(), nullable=True))
            batch.create_index(f'ix_{table}_assignment_id', ['assignment_id'], unique=False)
            batch.create_foreign_key(
                f'fk_{table}_assignment_id', 'assignments', ['assignment_id'], ['id'], ondelete='SET NULL'
            )

def downgrade() -> None:
    for table in ('reads', 'explanation_ratings', 'assistance_events'):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f'fk_{table}_assignment_id', type_='foreignkey')
            batch.drop_index(f'ix_{table}_assignment_id')
            if table != 'reads':
                batch.drop_column('assignment_id')
    op.drop_index(op.f('ix_assignments_study_reader_id'), table_name='assignments')
    op.drop_index(op.f('ix_assignments_reader_study_id'), table_name='assignments')
    op.drop_index(op.f('ix_assignments_case_id'), table_name='assignments')
    op.drop_table('assignments')
    op.drop_index(op.f('ix_study_cases_reader_study_id'), table_name='study_cases')
    op.drop_table('study_cases')
    op.drop_index(op.f('ix_study_readers_user_id'), table_name='study_readers')
    op.drop_index(op.f('ix_study_readers_reader_study_id'), table_name='study_readers')
    op.drop_table('study_readers')
    op.drop_table('reader_studies')
