"""a referral keeps the cap of the campaign it was made under

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 14:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_rewards_per_referrer', sa.Integer(), nullable=True))
    # Referrals made before this revision take their campaign's cap as it is now.
    op.execute("UPDATE referrals SET max_rewards_per_referrer = (SELECT c.max_rewards_per_referrer "
               "FROM referral_campaigns c WHERE c.id = referrals.campaign_id)")


def downgrade():
    with op.batch_alter_table('referrals', schema=None) as batch_op:
        batch_op.drop_column('max_rewards_per_referrer')
