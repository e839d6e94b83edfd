"""bulk_awards and bulk_award_members: points to every member of a segment, frozen at queue time

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29 13:45:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('bulk_awards',
                    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
                    sa.Column('award_no', sa.String(length=64), nullable=False),
                    sa.Column('segment', sa.String(length=80), nullable=False),
                    sa.Column('points', sa.BigInteger(), nullable=False),
                    sa.Column('reason', sa.String(length=200), nullable=False),
                    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
                    sa.Column('status', sa.String(length=10), nullable=False),
                    sa.Column('members', sa.Integer(), nullable=False),
                    sa.Column('awarded', sa.Integer(), server_default='0', nullable=False),
                    sa.Column('points_awarded', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
                    sa.Column('actor', sa.String(length=150), nullable=False),
                    sa.Column('error', sa.String(length=2000), nullable=True),
                    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
                    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
                    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_bulk_awards')),
                    sa.UniqueConstraint('award_no', name=op.f('uq_bulk_awards_award_no')))
    op.create_index('ix_bulk_awards_status', 'bulk_awards', ['status', 'id'], unique=False)
    op.create_table('bulk_award_members',
                    sa.Column('award_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
                    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
                    sa.Column('awarded_at', sa.DateTime(timezone=True), nullable=True),
                    sa.ForeignKeyConstraint(['award_id'], ['bulk_awards.id'],
                                            name=op.f('fk_bulk_award_members_award_id_bulk_awards')),
                    sa.ForeignKeyConstraint(['member_id'], ['members.id'],
                                            name=op.f('fk_bulk_award_members_member_id_members')),
                    sa.PrimaryKeyConstraint('award_id', 'member_id', name=op.f('pk_bulk_award_members')))


def downgrade():
    op.drop_table('bulk_award_members')
    op.drop_index('ix_bulk_awards_status', table_name='bulk_awards')
    op.drop_table('bulk_awards')
