"""points_hold_refusals: a hold refused for insufficient points is kept for its natural key

A till that sends the same hold (store_id, hold_no) again gets the same refusal, even if points
arrived in between, as a refused points payment does (points_payment_refusals, 0012): the till
took cash, and a retry must not reserve the member's points.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-29 16:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('points_hold_refusals',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('store_id', sa.String(length=40), nullable=False),
    sa.Column('hold_no', sa.String(length=64), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('available', sa.BigInteger(), nullable=False),
    sa.Column('error', sa.String(length=30), nullable=False),
    sa.Column('message', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_points_hold_refusals_member_id_members')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_hold_refusals')),
    sa.UniqueConstraint('store_id', 'hold_no', name=op.f('uq_points_hold_refusals_store_id_hold_no'))
    )
    with op.batch_alter_table('points_hold_refusals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_points_hold_refusals_member_id'), ['member_id'], unique=False)


def downgrade():
    with op.batch_alter_table('points_hold_refusals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_points_hold_refusals_member_id'))
    op.drop_table('points_hold_refusals')
