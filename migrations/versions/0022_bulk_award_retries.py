"""bulk_awards: attempts, retry_at, cancelled_at (a bounded retry with back-off, and a cancel)

A bulk award whose run failed used to be taken up by every later run, forever, and could not be
stopped. Now each failed run counts (`attempts`) and waits (`retry_at`) before the next; after the
last it is `failed` for good; `cancelled_at` marks one an operator stopped. An award left `failed`
by the old code is queued again with one attempt counted, so it gets its remaining tries.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-29 16:20:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('bulk_awards') as batch:
        batch.add_column(sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('retry_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE bulk_awards SET status = 'queued', attempts = 1 WHERE status = 'failed'")


def downgrade():
    with op.batch_alter_table('bulk_awards') as batch:
        batch.drop_column('cancelled_at')
        batch.drop_column('retry_at')
        batch.drop_column('attempts')
