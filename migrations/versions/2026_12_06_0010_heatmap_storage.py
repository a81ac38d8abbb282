"""heatmap storage: heatmaps.data stored out of line without compression (Postgres)

A job's eight maps (float16, up to 512 x 512 each, 3.5 MB) took 40 ms to insert because Postgres tried to
compress each one with pglz, and the smooth upsampled maps kept it trying to the end without gaining anything
(457 KB stored for 438 KB given); uncompressed they take 6 ms. STORAGE EXTERNAL keeps them out of line
(TOAST) with no attempt at compression. Rows stored before keep their form. SQLite has no such setting.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 17:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE heatmaps ALTER COLUMN data SET STORAGE EXTERNAL')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE heatmaps ALTER COLUMN data SET STORAGE EXTENDED')
