"""tier_changes.purchase_id; points_payment_refusals

A tier reached by a purchase that is then refunded is undone at once (issue 14): each upgrade
records the purchase that made it, and the move that undoes it records the refunded purchase.

A points payment refused for insufficient points is kept for its natural key (store_id,
payment_no), so the same payment sent again gets the same refusal even if points arrived since.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 10:20:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('tier_changes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purchase_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_tier_changes_purchase_id_purchases'), 'purchases',
                                    ['purchase_id'], ['id'])

    op.create_table('points_payment_refusals',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('store_id', sa.String(length=40), nullable=False),
    sa.Column('payment_no', sa.String(length=64), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('available', sa.BigInteger(), nullable=False),
    sa.Column('error', sa.String(length=30), nullable=False),
    sa.Column('message', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_points_payment_refusals_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_payment_refusals')),
    sa.UniqueConstraint('store_id', 'payment_no', name=op.f('uq_points_payment_refusals_store_id_payment_no'))
    )
    with op.batch_alter_table('points_payment_refusals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_points_payment_refusals_member_id'), ['member_id'], unique=False)


def downgrade():
    with op.batch_alter_table('points_payment_refusals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_points_payment_refusals_member_id'))
    op.drop_table('points_payment_refusals')

    with op.batch_alter_table('tier_changes', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_tier_changes_purchase_id_purchases'), type_='foreignkey')
        batch_op.drop_column('purchase_id')
