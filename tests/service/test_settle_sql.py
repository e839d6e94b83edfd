"""The settle rule has one source, points/ledger.py, in two forms: `settle`, which brings one locked
account up to now when it is written to, and `release_range` + `expire_range`, which do the same to
every account of a range of members at once (the nightly jobs). On generated lives (credits pending
for a while or available at once, expiring or not, points taken back into debt) and generated
dates, twins settled each way end with the same balances, lots and entries."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty.database import transaction
from loyalty.extensions import db
from loyalty.points import ledger
from loyalty.points.models import Account, Entry, Lot
from loyalty.points.verify import broken_accounts
from tests import factories

pytestmark = pytest.mark.usefixtures("ctx")

T0 = datetime(2026, 3, 10, 4, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)

points = st.integers(min_value=1, max_value=50_000).map(lambda n: Decimal(n).scaleb(-2))
hours = st.integers(min_value=0, max_value=96)
credit = st.tuples(st.just("credit"), points, hours, st.one_of(st.none(), hours))  # pending for, expires after
take_back = st.tuples(st.just("take_back"), points)  # a refund's claw-back: what is spent becomes debt
lives = st.lists(st.lists(st.one_of(credit, credit, take_back), min_size=1, max_size=8), min_size=1, max_size=4)


def live(member_id, operations):
    """One member's life, all of it at T0, through the ledger itself: credits pending for some hours
    (or available at once) that expire some hours after they become available (or never), and
    claw-backs, which leave a debt when the points are gone."""
    with transaction():
        account = ledger.lock_account(member_id, T0)
        for number, operation in enumerate(operations):
            if operation[0] == "credit":
                _, amount, pending_hours, expiry_hours = operation
                available_at = T0 + pending_hours * HOUR
                expires_at = None if expiry_hours is None else available_at + (expiry_hours + 1) * HOUR
                ledger.credit(account, "earn", amount, "credit", ("test", number), T0,
                              available_at=available_at, expires_at=expires_at)
            else:
                ledger.claw_back(account, operation[1], "taken back", ("test", number), T0)


def state(member_id):
    """Balances, lots in credit order, and entries in order, with lot references as lot positions."""
    account = db.session.get(Account, member_id, populate_existing=True)
    lot_ids = db.session.scalars(sa.select(Lot.id).where(Lot.member_id == member_id).order_by(Lot.id)).all()
    position = {str(lot_id): index for index, lot_id in enumerate(lot_ids)}
    lots = [(lot.status, lot.points, lot.remaining, lot.available_at, lot.expires_at) for lot in db.session.scalars(
        sa.select(Lot).where(Lot.member_id == member_id).order_by(Lot.id))]
    entries = [(entry.type, entry.points, entry.balance_after, entry.description, entry.reference_type,
                position.get(entry.reference_id, entry.reference_id) if entry.reference_type == "lot"
                else entry.reference_id, entry.created_at)
               for entry in db.session.scalars(sa.select(Entry).where(Entry.member_id == member_id).order_by(Entry.id))]
    return (account.available, account.pending, account.debt, account.lifetime_earned), lots, entries


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lives, st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=200))
def test_settling_one_account_and_settling_a_range_in_sql_leave_the_same_ledger(lives, first_hours, more_hours):
    """The jobs' form runs over the whole range of the first twins, releasing at one instant and
    releasing again and expiring at a later one (two nights); each second twin is settled once, at
    the later instant, by its next write. Same balances, same lots, same entries."""
    by_sql = [factories.member(now=T0).id for _ in lives]
    by_write = [factories.member(now=T0).id for _ in lives]
    for operations, one, twin in zip(lives, by_sql, by_write):
        live(one, operations)
        live(twin, operations)
    first_night = T0 + first_hours * HOUR
    second_night = first_night + more_hours * HOUR

    with transaction():
        ledger.release_range(by_sql[0], by_sql[-1], first_night, first_night)
    with transaction():
        ledger.release_range(by_sql[0], by_sql[-1], second_night, second_night)
        ledger.expire_range(by_sql[0], by_sql[-1], second_night, second_night)
    for twin in by_write:
        with transaction():
            ledger.lock_account(twin, second_night)
    db.session.remove()

    assert [state(one) for one in by_sql] == [state(twin) for twin in by_write]
    assert broken_accounts() == []
