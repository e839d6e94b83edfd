"""purchases and activities: indexes that cover the per-member window aggregates

The nightly jobs (tiers.recompute, members.value_segments, members.lifecycle) aggregate each
member's purchases (occurred_at, amount, refunded_amount) and activities (occurred_at, capped) over
ranges of member ids. With only (member_id, occurred_at) indexed, every range had to visit the
table rows, which a live system writes in time order: each range of members touched nearly every
page of purchases, so a run cost grew with members x table size. With the aggregated columns in
the index the aggregates are index-only. The new indexes start with the old ones' columns and
replace them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 15:00:00

"""
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.create_index('ix_purchases_member_window',
                              ['member_id', 'occurred_at', 'amount', 'refunded_amount'], unique=False)
        batch_op.drop_index('ix_purchases_member_occurred')

    with op.batch_alter_table('activities', schema=None) as batch_op:
        batch_op.create_index('ix_activities_member_window', ['member_id', 'occurred_at', 'capped'], unique=False)
        batch_op.drop_index('ix_activities_member_occurred')


def downgrade():
    with op.batch_alter_table('activities', schema=None) as batch_op:
        batch_op.create_index('ix_activities_member_occurred', ['member_id', 'occurred_at'], unique=False)
        batch_op.drop_index('ix_activities_member_window')

    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.create_index('ix_purchases_member_occurred', ['member_id', 'occurred_at'], unique=False)
        batch_op.drop_index('ix_purchases_member_window')
