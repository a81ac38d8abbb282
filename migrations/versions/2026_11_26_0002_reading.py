"""reading: reads, assistance_events, explanation_ratings

The reading room's tables. reads.assignment_id has no foreign key yet: reader studies add assignments later.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 06:38:21.571070
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('reads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reader_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=True),
    sa.Column('assignment_id', sa.Integer(), nullable=True),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('form', sa.String(length=16), nullable=False),
    sa.Column('state', sa.Enum('draft', 'submitted', name='read_state', native_enum=False, length=16), nullable=False),
    sa.Column('answers', sa.JSON(), nullable=False),
    sa.Column('dr_grade', sa.Integer(), nullable=True),
    sa.Column('dme', sa.Boolean(), nullable=True),
    sa.Column('confidence', sa.Integer(), nullable=True),
    sa.Column('finding', sa.String(length=64), nullable=True),
    sa.Column('time_spent_seconds', sa.Float(), nullable=True),
    sa.Column('assisted', sa.Boolean(), nullable=False),
    sa.Column('assistance', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['reader_id'], ['users.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reader_id', 'client_id', name='uq_reads_reader_client')
    )
    with op.batch_alter_table('reads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reads_reader_id'), ['reader_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reads_study_id'), ['study_id'], unique=False)

    op.create_table('assistance_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reader_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=True),
    sa.Column('read_id', sa.Integer(), nullable=True),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('client_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['read_id'], ['reads.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['reader_id'], ['users.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('assistance_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assistance_events_read_id'), ['read_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assistance_events_reader_id'), ['reader_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_assistance_events_study_id'), ['study_id'], unique=False)

    op.create_table('explanation_ratings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reader_id', sa.Integer(), nullable=False),
    sa.Column('heatmap_id', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=64), nullable=False),
    sa.Column('answers', sa.JSON(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['heatmap_id'], ['heatmaps.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reader_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reader_id', 'client_id', name='uq_explanation_ratings_reader_client')
    )
    with op.batch_alter_table('explanation_ratings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_explanation_ratings_heatmap_id'), ['heatmap_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_explanation_ratings_reader_id'), ['reader_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('explanation_ratings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_explanation_ratings_reader_id'))
        batch_op.drop_index(batch_op.f('ix_explanation_ratings_heatmap_id'))

    op.drop_table('explanation_ratings')
    with op.batch_alter_table('assistance_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assistance_events_study_id'))
        batch_op.drop_index(batch_op.f('ix_assistance_events_reader_id'))
        batch_op.drop_index(batch_op.f('ix_assistance_events_read_id'))

    op.drop_table('assistance_events')
    with op.batch_alter_table('reads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reads_study_id'))
        batch_op.drop_index(batch_op.f('ix_reads_reader_id'))

    op.drop_table('reads')
