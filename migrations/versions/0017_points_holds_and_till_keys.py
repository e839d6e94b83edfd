"""points holds and which till key made each purchase, refund and payment

Holds reserve points at a till (authorise, then capture or release): `points_holds`, the lots
their points came from in `hold_allocations`, and `accounts.held`. Purchases, refunds, points
payments (and their reversals) and holds record the API key that made them, for the store's day
report by till.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29 13:50:00

"""
from alembic import op
import sqlalchemy as sa


ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')  # ids, as the models' BigId

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('accounts') as batch:
        batch.add_column(sa.Column('held', sa.BigInteger(), server_default=sa.text('0'), nullable=False))
    for table in ('purchases', 'refunds', 'points_payments'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('api_key_id', ID, nullable=True))
            batch.create_foreign_key(op.f(f'fk_{table}_api_key_id_api_keys'), 'api_keys', ['api_key_id'], ['id'])
    with op.batch_alter_table('vouchers') as batch:
        batch.add_column(sa.Column('used_api_key_id', ID, nullable=True))
        batch.create_foreign_key(op.f('fk_vouchers_used_api_key_id_api_keys'), 'api_keys', ['used_api_key_id'], ['id'])
    with op.batch_alter_table('points_payments') as batch:
        batch.add_column(sa.Column('reversal_api_key_id', ID, nullable=True))
        batch.create_foreign_key(op.f('fk_points_payments_reversal_api_key_id_api_keys'), 'api_keys',
                                 ['reversal_api_key_id'], ['id'])
    op.create_table(
        'points_holds',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('member_id', ID, nullable=False),
        sa.Column('store_id', sa.String(length=40), nullable=False),
        sa.Column('hold_no', sa.String(length=64), nullable=False),
        sa.Column('points', sa.BigInteger(), nullable=False),
        sa.Column('captured_points', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('payment_id', ID, nullable=True),
        sa.Column('api_key_id', ID, nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_points_holds_member_id_members')),
        sa.ForeignKeyConstraint(['payment_id'], ['points_payments.id'],
                                name=op.f('fk_points_holds_payment_id_points_payments')),
        sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_points_holds_api_key_id_api_keys')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_points_holds')),
        sa.UniqueConstraint('store_id', 'hold_no', name=op.f('uq_points_holds_store_id_hold_no')),
    )
    op.create_index('ix_points_holds_status_expires_at', 'points_holds', ['status', 'expires_at'])
    op.create_index('ix_points_holds_member_status', 'points_holds', ['member_id', 'status'])
    op.create_table(
        'hold_allocations',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('hold_id', ID, nullable=False),
        sa.Column('lot_id', ID, nullable=False),
        sa.Column('points', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['hold_id'], ['points_holds.id'], name=op.f('fk_hold_allocations_hold_id_points_holds')),
        sa.ForeignKeyConstraint(['lot_id'], ['lots.id'], name=op.f('fk_hold_allocations_lot_id_lots')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_hold_allocations')),
    )
    op.create_index(op.f('ix_hold_allocations_hold_id'), 'hold_allocations', ['hold_id'])
    op.create_index(op.f('ix_hold_allocations_lot_id'), 'hold_allocations', ['lot_id'])


def downgrade():
    op.drop_table('hold_allocations')
    op.drop_table('points_holds')
    with op.batch_alter_table('points_payments') as batch:
        batch.drop_constraint(op.f('fk_points_payments_reversal_api_key_id_api_keys'), type_='foreignkey')
        batch.drop_column('reversal_api_key_id')
    with op.batch_alter_table('vouchers') as batch:
        batch.drop_constraint(op.f('fk_vouchers_used_api_key_id_api_keys'), type_='foreignkey')
        batch.drop_column('used_api_key_id')
    for table in ('purchases', 'refunds', 'points_payments'):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f'fk_{table}_api_key_id_api_keys'), type_='foreignkey')
            batch.drop_column('api_key_id')
    with op.batch_alter_table('accounts') as batch:
        batch.drop_column('held')
