"""promotions, promotion_grants; purchases.channel and breakdown; refunds.promotion_points

Promotions (issue 16): marketing's points campaigns, and what each gave to which purchase (its
`bonus` entry and lot, the per-member period it counts in, what refunds took back). A purchase
keeps its channel and the lines of its points; a refund the promotion points it took back.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 13:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    op.create_table('promotions',
    sa.Column('id', BIGID, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('schedule', sa.JSON(), nullable=True),
    sa.Column('scope', sa.JSON(), nullable=True),
    sa.Column('effect', sa.JSON(), nullable=False),
    sa.Column('per_member', sa.Integer(), nullable=True),
    sa.Column('per_member_period', sa.String(length=10), nullable=True),
    sa.Column('budget_points', sa.BigInteger(), nullable=True),
    sa.Column('budget_used', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('stacking', sa.String(length=10), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('budget_points IS NULL OR budget_used <= budget_points',
                       name=op.f('ck_promotions_budget_not_exceeded')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promotions'))
    )
    with op.batch_alter_table('promotions', schema=None) as batch_op:
        batch_op.create_index('ix_promotions_status_starts', ['status', 'starts_at'], unique=False)

    op.create_table('promotion_grants',
    sa.Column('id', BIGID, nullable=False),
    sa.Column('promotion_id', BIGID, nullable=False),
    sa.Column('purchase_id', BIGID, nullable=False),
    sa.Column('member_id', BIGID, nullable=False),
    sa.Column('period', sa.String(length=10), nullable=False),
    sa.Column('qualifying_amount', sa.BigInteger(), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('points_reversed', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('points_clawed_back', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('entry_id', BIGID, nullable=False),
    sa.Column('lot_id', BIGID, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['ledger_entries.id'], name=op.f('fk_promotion_grants_entry_id_ledger_entries')),
    sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], name=op.f('fk_promotion_grants_lot_id_lots')),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_promotion_grants_member_id_members')),
    sa.ForeignKeyConstraint(['promotion_id'], ['promotions.id'], name=op.f('fk_promotion_grants_promotion_id_promotions')),
    sa.ForeignKeyConstraint(['purchase_id'], ['purchases.id'], name=op.f('fk_promotion_grants_purchase_id_purchases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_promotion_grants')),
    sa.UniqueConstraint('purchase_id', 'promotion_id', name=op.f('uq_promotion_grants_purchase_id_promotion_id'))
    )
    with op.batch_alter_table('promotion_grants', schema=None) as batch_op:
        batch_op.create_index('ix_promotion_grants_member_period', ['member_id', 'promotion_id', 'period'], unique=False)
        batch_op.create_index('ix_promotion_grants_promotion', ['promotion_id', 'member_id'], unique=False)

    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel', sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column('breakdown', sa.JSON(), nullable=True))

    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('promotion_points', sa.BigInteger(), server_default=sa.text('0'),
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_column('promotion_points')

    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.drop_column('breakdown')
        batch_op.drop_column('channel')

    with op.batch_alter_table('promotion_grants', schema=None) as batch_op:
        batch_op.drop_index('ix_promotion_grants_promotion')
        batch_op.drop_index('ix_promotion_grants_member_period')
    op.drop_table('promotion_grants')

    with op.batch_alter_table('promotions', schema=None) as batch_op:
        batch_op.drop_index('ix_promotions_status_starts')
    op.drop_table('promotions')
