"""settings_version: one counter bumped by every change of the settings processes keep

Every request reads it with its API key (loyalty/settings_cache.py), so a change of the earning
rules, the tier ladder or the webhook subscriptions reaches every process's next request, instead
of within LOYALTY_SETTINGS_CACHE_SECONDS.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 13:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table('settings_version',
                            sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
                            sa.Column('version', sa.BigInteger(), nullable=False),
                            sa.PrimaryKeyConstraint('id', name=op.f('pk_settings_version')))
    op.bulk_insert(table, [{"id": 1, "version": 0}])


def downgrade():
    op.drop_table('settings_version')
