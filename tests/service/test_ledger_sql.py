"""The ledger's rules have one source each, points/ledger.py, in two forms: one locked account at a
time (what a write does) and every account of a range of members at once (the nightly jobs).

- `settle` brings an account up to now; `release_range` + `expire_range` do the same set-based.
- `credit` adds a lot to one account; `credit_many` credits many (the birthday gifts).

On generated lives (credits pending for a while or available at once, expiring or not, points
taken back into debt) and generated dates, twins taken each way end with the same balances, lots
and entries, and the ledger's invariants hold."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty.database import transaction
from loyalty.errors import ValidationFailed
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
spend = st.tuples(st.just("spend"), points)  # a payment, of at most what is available
lives = st.lists(st.lists(st.one_of(credit, credit, take_back, spend), min_size=1, max_size=8), min_size=1, max_size=4)


def live(member_id, operations):
    """One member's life, all of it at T0, through the ledger itself: credits pending for some hours
    (or available at once) that expire some hours after they become available (or never),
    payments, and claw-backs, which leave a debt when the points are gone."""
    with transaction():
        account = ledger.lock_account(member_id, T0)
        for number, operation in enumerate(operations):
            if operation[0] == "credit":
                _, amount, pending_hours, expiry_hours = operation
                available_at = T0 + pending_hours * HOUR
                expires_at = None if expiry_hours is None else available_at + (expiry_hours + 1) * HOUR
                ledger.credit(account, "earn", amount, "credit", ("test", number), T0,
                              available_at=available_at, expires_at=expires_at)
            elif operation[0] == "spend":
                if account.available > 0:
                    ledger.debit(account, "redeem", min(operation[1], account.available), "spent", ("test", number), T0)
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


PROPERTIES = settings(max_examples=30, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTIES
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


@PROPERTIES
@given(lives.flatmap(lambda lives: st.tuples(st.just(lives), st.lists(points, min_size=len(lives),
                                                                      max_size=len(lives)))),
       st.booleans(), st.one_of(st.none(), st.integers(min_value=0, max_value=2)))
def test_crediting_many_accounts_at_once_leaves_what_crediting_each_would(world, earned, near_the_most):
    """Twins live the same life; then the first of each pair is credited with the others in one
    credit_many, the second by a credit of its own. With `near_the_most`, the first pair holds
    almost the most an account may: a gift that would pass it is refused one way, left out the other."""
    lives, gifts = world
    by_sql = [factories.member(now=T0).id for _ in lives]
    by_one = [factories.member(now=T0).id for _ in lives]
    for operations, one, twin in zip(lives, by_sql, by_one):
        live(one, operations)
        live(twin, operations)
        if near_the_most is not None and one == by_sql[0]:
            account = db.session.get(Account, one, populate_existing=True)
            fortune = (ledger.MAX_ACCOUNT_POINTS - max(account.balance, account.lifetime_earned)
                       - gifts[0] * near_the_most)
            live(one, [("credit", fortune, 0, None)])
            live(twin, [("credit", fortune, 0, None)])
    expires_at = T0 + 400 * 24 * HOUR

    due = " UNION ALL ".join(f"SELECT :member{n} AS member_id, :points{n} AS points" for n in range(len(by_sql)))
    params = {name: value for n, (member_id, gift) in enumerate(zip(by_sql, gifts))
              for name, value in ((f"member{n}", member_id), (f"points{n}", int(gift * 100)))}
    with transaction():
        credited = ledger.credit_many(due, params, "bonus", "A gift", ("gift", 2026), T0,
                                      expires_at=expires_at, earned=earned)
    refused = 0
    for twin, gift in zip(by_one, gifts):
        try:
            with transaction():
                account = ledger.lock_account(twin, T0)
                ledger.credit(account, "bonus", gift, "A gift", ("gift", 2026), T0,
                              expires_at=expires_at, earned=earned)
        except ValidationFailed:
            refused += 1
    db.session.remove()

    assert credited == len(by_sql) - refused
    assert [state(one) for one in by_sql] == [state(twin) for twin in by_one]
    assert broken_accounts() == []
