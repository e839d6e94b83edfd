"""members.phone: every stored phone rewritten in E.164, duplicates kept and reported

Phones used to be stored as typed, less spaces and dashes, so `13800138000`, `8613800138000`,
`008613800138000` and `+8613800138000` were four members. Each stored phone is read with the
function the service now uses (loyalty.members.phones.to_e164, in LOYALTY_PHONE_REGION, CN when
unset) and rewritten in E.164.

Where several members' phones are one number, nothing is merged and the unique constraint stays (it
is what keeps two registrations of one number from both succeeding): one member takes the E.164
form (the one already holding it, else an open member, else the earliest to join), the others keep
their old value, which lookups and identity checks still match. Each such pair is reported here and
listed by `loyalty members duplicates` until an admin merges it (POST /members/{id}/merge). A
stored phone that is not a valid number is left as it was and reported too.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 10:00:00

"""
import logging
import os

import sqlalchemy as sa
from alembic import op

from loyalty.members import phones

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# Not an alembic.* logger: alembic.ini's logging setup resets those, and this report must reach the
# operator (and a test) whoever configured logging.
log = logging.getLogger('loyalty.migrations')
BATCH = 1000


def region():
    try:
        from flask import current_app
        configured = current_app.config.get('LOYALTY_PHONE_REGION')
    except RuntimeError:  # no app: Alembic run on its own
        configured = None
    return (configured or os.environ.get('LOYALTY_PHONE_REGION') or phones.DEFAULT_REGION).strip().upper()


def upgrade():
    connection = op.get_bind()
    members = sa.table('members', sa.column('id', sa.BigInteger), sa.column('phone', sa.String),
                       sa.column('status', sa.String), sa.column('joined_at', sa.DateTime))
    rows = connection.execute(sa.select(members.c.id, members.c.phone, members.c.status)
                              .where(members.c.phone.isnot(None))
                              .order_by(members.c.joined_at, members.c.id)).all()
    where = region()
    by_number, unreadable = {}, []
    for row in rows:
        number = phones.e164_or_none(row.phone, where)
        if number is None:
            unreadable.append(row)
        else:
            by_number.setdefault(number, []).append(row)

    rewrites = []
    for number, holders in by_number.items():
        # Who takes the E.164 form: whoever holds it already, else an open member, else the first to join.
        keeper = min(holders, key=lambda r: (r.phone != number, r.status != 'active'))
        if keeper.phone != number:
            rewrites.append({'member_id': keeper.id, 'phone': number})
        for other in holders:
            if other is not keeper:
                log.warning('Members %s and %s share the phone %s; member %s keeps %r until an admin merges them '
                            '(loyalty members duplicates lists such pairs).',
                            keeper.id, other.id, number, other.id, other.phone)
    for row in unreadable:
        log.warning('Member %s has the phone %r, which is not a valid number in region %s; it is left as it was.',
                    row.id, row.phone, where)

    update = sa.update(members).where(members.c.id == sa.bindparam('member_id')) \
        .values(phone=sa.bindparam('phone'))
    for start in range(0, len(rewrites), BATCH):
        connection.execute(update, rewrites[start:start + BATCH])
    shared = sum(len(h) - 1 for h in by_number.values())
    log.log(logging.WARNING if shared or unreadable else logging.INFO,
            'Phones in E.164: %s rewritten, %s shared with another member, %s not valid numbers.',
            len(rewrites), shared, len(unreadable))


def downgrade():
    # E.164 values are valid under the old rule (a + and digits): nothing to undo.
    pass
