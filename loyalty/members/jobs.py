"""Birthday gifts, nightly and set-based: the tier's birthday points, once a year, credited by
ledger.credit_many per range of member ids and day. Running it twice for the same day changes
nothing the second time."""
from datetime import timedelta

import sqlalchemy as sa

from loyalty import clock
from loyalty.database import transaction
from loyalty.extensions import db
from loyalty.jobs.batching import BATCH, id_ranges
from loyalty.jobs.models import JobRun
from loyalty.points import ledger
from loyalty.points import rules as rules_mod
from loyalty.points.settings import current_rules
from loyalty.config import settings


def birthday_bonus(as_of, progress=None, now=None, batch=BATCH):
    """Members whose birthday is `as_of` get their tier's birthday points, once a year: a `bonus`
    entry naming the year, and a lot (paying any debt first, like every credit). Born on 29
    February: 28 February in other years. Set-based: per range, the members due are credited by
    ledger.credit_many (one INSERT of the entries, one of the lots, one UPDATE of the accounts,
    after locking the accounts it changes).

    Days the job missed (the scheduler was down, a run failed) are caught up: the birthdays of
    every day after the last successful run, at most LOYALTY_BIRTHDAY_CATCH_UP_DAYS (7) back, are
    given too, each in its own year. A first run ever looks at `as_of` alone."""
    now = now or clock.now()
    tz = settings().timezone
    expires = rules_mod.expires_at(now, now, current_rules(), tz)
    days = _birthday_days(as_of)
    db.session.rollback()
    given = sum(_birthday_gifts(day, now, expires, progress, batch) for day in days)
    return {"gifts": given, "rows": given, "days": [str(day) for day in days]}


def _birthday_days(as_of):
    """`as_of`, after the days since the last successful run (within the catch-up limit)."""
    last = db.session.scalar(sa.select(sa.func.max(JobRun.as_of)).where(
        JobRun.job_id == "members.birthday_bonus", JobRun.outcome == "succeeded", JobRun.as_of <= as_of))
    if last is None or last == as_of:
        return [as_of]
    first = max(last + timedelta(days=1), as_of - timedelta(days=settings().birthday_catch_up_days))
    return [first + timedelta(days=n) for n in range((as_of - first).days + 1)]


def _birthday_gifts(day, now, expires, progress, batch):
    """The gifts of one day's birthdays; returns how many were given."""
    days = [day.strftime("%m-%d")]
    if day.month == 2 and day.day == 28 and not _leap(day.year):
        days.append("02-29")
    dialect = db.session.get_bind().dialect.name
    month_day = "to_char(m.birthday, 'MM-DD')" if dialect == "postgresql" else "strftime('%m-%d', m.birthday)"
    year = str(day.year)
    params = {"year": year, "d1": days[0], "d2": days[-1]}
    due = (f"SELECT m.id AS member_id, t.birthday_points AS points FROM members m "
           f"JOIN tiers t ON t.code = m.tier_code "
           f"WHERE m.id BETWEEN :low AND :high AND m.status = 'active' AND m.birthday IS NOT NULL "
           f"AND {month_day} IN (:d1, :d2) AND t.birthday_points > 0 AND NOT EXISTS ("
           f"SELECT 1 FROM ledger_entries e WHERE e.member_id = m.id AND e.type = 'bonus' "
           f"AND e.reference_type = 'birthday' AND e.reference_id = :year)")
    given = 0
    for low, high in id_ranges(batch):
        params.update(low=low, high=high)
        with transaction():
            given += ledger.credit_many(due, params, "bonus", "Birthday gift", ("birthday", year), now,
                                        expires_at=expires)
        if progress:
            progress(high - low + 1)
    return given


def _leap(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
