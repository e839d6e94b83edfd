"""Birthday gifts, nightly and set-based: the tier's birthday points, once a year, as one INSERT
... SELECT per range of member ids and day. Running it twice for the same day changes nothing the
second time."""
from datetime import timedelta

import sqlalchemy as sa

from loyalty import clock
from loyalty.database import Points, UTCDateTime, transaction
from loyalty.extensions import db
from loyalty.jobs.batching import BATCH, id_ranges
from loyalty.jobs.models import JobRun
from loyalty.points import rules as rules_mod
from loyalty.points.settings import current_rules
from loyalty.webhooks import service as webhooks
from loyalty.config import settings


def birthday_bonus(as_of, progress=None, now=None, batch=BATCH):
    """Members whose birthday is `as_of` get their tier's birthday points, once a year: a `bonus`
    entry naming the year, and a lot (paying any debt first, like every credit). Born on 29
    February: 28 February in other years. Set-based: per range, one INSERT of the entries, one of
    the lots, one UPDATE of the accounts, after locking the accounts it changes.

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
    lock = " ORDER BY a.member_id FOR UPDATE OF a" if dialect == "postgresql" else ""
    year = str(day.year)
    params = {"year": year, "now": now, "expires": expires, "d1": days[0], "d2": days[-1]}
    when = UTCDateTime()
    bind = [sa.bindparam("now", type_=when), sa.bindparam("expires", type_=when)]
    given = 0
    for low, high in id_ranges(batch):
        params.update(low=low, high=high)
        with transaction():
            due = (f"FROM members m JOIN tiers t ON t.code = m.tier_code JOIN accounts a ON a.member_id = m.id "
                   f"WHERE m.id BETWEEN :low AND :high AND m.status = 'active' AND m.birthday IS NOT NULL "
                   f"AND {month_day} IN (:d1, :d2) AND t.birthday_points > 0 AND NOT EXISTS ("
                   f"SELECT 1 FROM ledger_entries e WHERE e.member_id = m.id AND e.type = 'bonus' "
                   f"AND e.reference_type = 'birthday' AND e.reference_id = :year)")
            db.session.execute(sa.text(f"SELECT a.member_id {due}{lock}"), params)
            db.session.execute(sa.text("DROP TABLE IF EXISTS birthday_due"))
            db.session.execute(sa.text(
                f"CREATE TEMPORARY TABLE birthday_due AS SELECT m.id AS member_id, t.birthday_points AS points, "
                f"CASE WHEN a.debt < t.birthday_points THEN a.debt ELSE t.birthday_points END AS paid, "
                f"a.available + a.pending + a.held + t.birthday_points AS balance_after {due}"), params)
            db.session.execute(sa.text(
                "INSERT INTO ledger_entries (member_id, type, points, balance_after, description, reference_type, "
                "reference_id, expires_at, created_at) SELECT member_id, 'bonus', points, balance_after, "
                "'Birthday gift', 'birthday', :year, :expires, :now FROM birthday_due").bindparams(*bind), params)
            db.session.execute(sa.text(
                "INSERT INTO lots (member_id, entry_id, points, remaining, status, available_at, expires_at, "
                "created_at) SELECT d.member_id, e.id, d.points, d.points - d.paid, 'available', :now, :expires, "
                ":now FROM birthday_due d JOIN ledger_entries e ON e.member_id = d.member_id AND e.type = 'bonus' "
                "AND e.reference_type = 'birthday' AND e.reference_id = :year").bindparams(*bind), params)
            db.session.execute(sa.text(
                "UPDATE accounts SET available = available + (SELECT points FROM birthday_due d "
                "WHERE d.member_id = accounts.member_id), lifetime_earned = lifetime_earned + (SELECT points "
                "FROM birthday_due d WHERE d.member_id = accounts.member_id), debt = debt - (SELECT paid "
                "FROM birthday_due d WHERE d.member_id = accounts.member_id), updated_at = :now "
                "WHERE member_id IN (SELECT member_id FROM birthday_due)").bindparams(bind[0]), params)
            given += db.session.scalar(sa.text("SELECT COUNT(*) FROM birthday_due"))
            if webhooks.subscribers("points.credited"):
                webhooks.emit_many("points.credited", [
                    {"member_id": member_id, "entry_type": "bonus", "points": points, "pending": False,
                     "available_at": now, "expires_at": expires, "description": "Birthday gift",
                     "reference": {"type": "birthday", "id": year},
                     "balance": {"available": available, "pending": pending}}
                    for member_id, points, available, pending in db.session.execute(sa.text(
                        "SELECT d.member_id, d.points, a.available, a.pending FROM birthday_due d "
                        "JOIN accounts a ON a.member_id = d.member_id ORDER BY d.member_id").columns(
                        sa.column("member_id", sa.BigInteger), sa.column("points", Points()),
                        sa.column("available", Points()), sa.column("pending", Points())))], now)
            db.session.execute(sa.text("DROP TABLE birthday_due"))
        if progress:
            progress(high - low + 1)
    return given


def _leap(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
