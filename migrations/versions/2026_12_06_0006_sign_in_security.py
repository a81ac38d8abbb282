"""sign-in security: login_throttles; sessions keep an HMAC of the token under the secret key

`login_throttles` counts recent failed sign-ins per account and per client address and holds their lock-outs
(app/auth/throttle.py). `sessions.token_sha256` becomes `token_hmac`, HMAC-SHA256 of the token under
LUMEN_SECRET_KEY (app/auth/service.py): the stored digests of the old tokens cannot be turned into the new ones,
so every session and bearer token is ended, and everyone signs in again once. Batch mode, for SQLite.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 12:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'login_throttles',
        sa.Column('key', sa.String(length=80), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    op.create_index('ix_login_throttles_updated_at', 'login_throttles', ['updated_at'], unique=False)
    _replace_token_column(old='token_sha256', new='token_hmac')


def downgrade() -> None:
    _replace_token_column(old='token_hmac', new='token_sha256')
    op.drop_index('ix_login_throttles_updated_at', table_name='login_throttles')
    op.drop_table('login_throttles')


def _replace_token_column(*, old: str, new: str) -> None:
    """Sessions whose token digest is of the other kind resolve to nothing: they are deleted, not converted."""
    op.execute('DELETE FROM sessions')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column(old)
        batch_op.add_column(sa.Column(new, sa.String(length=64), nullable=False))
        batch_op.create_unique_constraint(f'uq_sessions_{new}', [new])
