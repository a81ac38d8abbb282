"""explanations beyond heatmaps: a prediction's similar cases and concept evidence, ratings of them

predictions.similar_cases (with their thumbnails in similar_thumbnails) and predictions.concepts: JSON, NULL where the model ships no reference library or
concept bank (and for every prediction made before). explanation_ratings may rate a prediction's explanation
that is not a map: heatmap_id becomes nullable and prediction_id names the prediction (method: similar_cases,
concepts or justification). A downgrade deletes those ratings: the older schema cannot hold them.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 21:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('predictions') as batch:
        batch.add_column(sa.Column('similar_cases', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('concepts', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('similar_thumbnails', sa.JSON(), nullable=True))
    with op.batch_alter_table('explanation_ratings') as batch:
        batch.alter_column('heatmap_id', existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column('prediction_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(
            'fk_explanation_ratings_prediction_id', 'predictions', ['prediction_id'], ['id'], ondelete='CASCADE'
        )
        batch.create_index('ix_explanation_ratings_prediction_id', ['prediction_id'])


def downgrade() -> None:
    op.execute('DELETE FROM explanation_ratings WHERE heatmap_id IS NULL')
    with op.batch_alter_table('explanation_ratings') as batch:
        batch.drop_index('ix_explanation_ratings_prediction_id')
        batch.drop_constraint('fk_explanation_ratings_prediction_id', type_='foreignkey')
        batch.drop_column('prediction_id')
        batch.alter_column('heatmap_id', existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table('predictions') as batch:
        batch.drop_column('similar_thumbnails')
        batch.drop_column('concepts')
        batch.drop_column('similar_cases')
