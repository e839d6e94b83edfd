"""members.token_epoch; member_token_secrets

Member tokens (issue 18) carry the epoch of their member when issued; revoking them all adds one
to it. When LOYALTY_MEMBER_TOKEN_SECRET is unset, the signing secret is generated once and kept in
member_token_secrets so every process shares it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 13:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    # A plain ADD COLUMN with a constant default, on SQLite too: a batch would copy the members
    # table and drop the old one, which every table pointing at members forbids once they hold rows.
    op.add_column('members', sa.Column('token_epoch', sa.Integer(), server_default='0', nullable=False))

    op.create_table('member_token_secrets',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('secret', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member_token_secrets'))
    )


def downgrade():
    op.drop_table('member_token_secrets')
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('token_epoch')
