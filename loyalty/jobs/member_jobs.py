"""Members' nightly jobs, set-based: lifecycle stages, value segments, birthday bonuses.

Each is an UPDATE (or INSERT ... SELECT) over a range of member ids, one transaction per range,
with the thresholds from the settings (config.py, LOYALTY_LIFECYCLE_* and LOYALTY_SEGMENT_*).
Running one twice for the same day changes nothing the second time."""
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app

from loyalty import clock
from loyalty.database import Money, Points, UTCDateTime, transaction
from loyalty.extensions import db
from loyalty.jobs.models import JobRun
from loyalty.jobs.points_jobs import BATCH, day_cutoff, id_ranges
from loyalty.members.models import Member
from loyalty.points import rules as rules_mod
from loyalty.points.models import Activity, Purchase
from loyalty.points.settings import current_rules
from loyalty.webhooks import service as webhooks


def _setting(name):
    return current_app.config[name]


def lifecycle(as_of, progress=None, now=None, batch=BATCH):
    """potential: never bought; new: first purchase within LOYALTY_LIFECYCLE_NEW_DAYS (90);
    active: a purchase or an activity within LOYALTY_LIFECYCLE_ACTIVE_DAYS (30); dormant: quiet
    for longer, up to LOYALTY_LIFECYCLE_CHURN_DAYS (90); churned: quiet for longer than that."""
    now = now or clock.now()
    at = day_cutoff(as_of, now)
    when = UTCDateTime()
    new_since = sa.literal(at - timedelta(days=_setting("LOYALTY_LIFECYCLE_NEW_DAYS")), when)
    active_since = sa.literal(at - timedelta(days=_setting("LOYALTY_LIFECYCLE_ACTIVE_DAYS")), when)
    churn_before = sa.literal(at - timedelta(days=_setting("LOYALTY_LIFECYCLE_CHURN_DAYS")), when)

    def stages(low, high):
        bought = (sa.select(Purchase.member_id.label("member_id"),
                            sa.func.min(Purchase.occurred_at).label("first"),
                            sa.func.max(Purchase.occurred_at).label("last"))
                  .where(Purchase.member_id.between(low, high), Purchase.occurred_at < sa.literal(at, when))
                  .group_by(Purchase.member_id).subquery("bought"))
        acted = (sa.select(Activity.member_id.label("member_id"), sa.func.max(Activity.occurred_at).label("last"))
                 .where(Activity.member_id.between(low, high), Activity.occurred_at < sa.literal(at, when))
                 .group_by(Activity.member_id).subquery("acted"))
        first_purchase, last_purchase, last_activity = bought.c.first, bought.c.last, acted.c.last
        last_seen = sa.case((sa.and_(last_activity.is_not(None),
                                     sa.or_(last_purchase.is_(None), last_activity > last_purchase)), last_activity),
                            else_=last_purchase)
        stage = sa.case(
            (first_purchase.is_(None), "potential"),
            (first_purchase >= new_since, "new"),
            (last_seen >= active_since, "active"),
            (last_seen >= churn_before, "dormant"),
            else_="churned")
        member = sa.orm.aliased(Member, name="member")
        return (sa.select(member.id.label("member_id"), stage.label("value"))
                .outerjoin(bought, bought.c.member_id == member.id)
                .outerjoin(acted, acted.c.member_id == member.id)
                .where(member.id.between(low, high), member.status == "active")
                .subquery("computed"))

    return _update_column(Member.lifecycle_stage, stages, batch, progress, now)


def _update_column(column, computed, batch, progress, now):
    """Per id range: the new value of `column` for each active member, computed once from per-member
    aggregates (`computed(low, high)`, a subquery of member_id, value), then one UPDATE ... FROM of
    the members whose value differs (NULL-safe). No query and no correlated subquery per member."""
    changed = 0
    for low, high in id_ranges(batch):
        with transaction():
            values = computed(low, high)
            result = db.session.execute(
                # The range again on the target: PostgreSQL would otherwise hash-join it whole.
                sa.update(Member).where(Member.id.between(low, high), Member.id == values.c.member_id,
                                        column.is_distinct_from(values.c.value))
                .values({column.key: values.c.value, "updated_at": now})
                .execution_options(synchronize_session=False))
            changed += result.rowcount
        if progress:
            progress(high - low + 1)
    return {"changed": changed, "rows": changed}


def value_segments(as_of, progress=None, now=None, batch=BATCH):
    """By the last 12 months (local): at_risk: bought before, but nothing within
    LOYALTY_SEGMENT_AT_RISK_DAYS (90); high_value: the top LOYALTY_SEGMENT_HIGH_VALUE_SHARE (10%) of
    members by spend; potential: at least LOYALTY_SEGMENT_POTENTIAL_MIN_PURCHASES (4) purchases but
    an average below LOYALTY_SEGMENT_POTENTIAL_MAX_AVERAGE (300.00); low_value: the other buyers.
    Members who never bought have no segment."""
    now = now or clock.now()
    at = day_cutoff(as_of, now)
    year_ago = at - timedelta(days=365)
    at_risk_since = at - timedelta(days=_setting("LOYALTY_SEGMENT_AT_RISK_DAYS"))
    net = Purchase.amount - Purchase.refunded_amount
    # The spend a member needs to be in the top share: the spend of the member ranked
    # max(1, floor(buyers x share)) by the year's spend, in one pass over the year's purchases.
    share_num, share_den = Decimal(str(_setting("LOYALTY_SEGMENT_HIGH_VALUE_SHARE"))).as_integer_ratio()
    spends = (sa.select(sa.func.sum(net).label("spend"),
                        sa.func.row_number().over(order_by=sa.func.sum(net).desc()).label("position"),
                        sa.func.count().over().label("buyers"))
              .where(Purchase.occurred_at >= year_ago, Purchase.occurred_at < at).group_by(Purchase.member_id)
              .having(sa.func.sum(net) > 0).subquery())
    top = spends.c.buyers * share_num // share_den  # integers: floor, exactly
    threshold = db.session.scalar(
        sa.select(sa.type_coerce(spends.c.spend, Money()))
        .where(spends.c.position == sa.case((top < 1, 1), else_=top)))
    db.session.rollback()
    when = UTCDateTime()
    in_year = Purchase.occurred_at >= sa.literal(year_ago, when)
    potential_max = Decimal(str(_setting("LOYALTY_SEGMENT_POTENTIAL_MAX_AVERAGE")))

    def segments(low, high):
        # Per member, in one pass over their purchases before the cutoff: the last one, and the
        # year's net spend and count.
        bought = (sa.select(Purchase.member_id.label("member_id"),
                            sa.func.max(Purchase.occurred_at).label("last"),
                            sa.func.sum(sa.case((in_year, net), else_=sa.literal_column("0"))).label("spend"),
                            sa.func.count(sa.case((in_year, sa.literal_column("1")))).label("purchases"))
                  .where(Purchase.member_id.between(low, high), Purchase.occurred_at < sa.literal(at, when))
                  .group_by(Purchase.member_id).subquery("bought"))
        year_spend = sa.type_coerce(sa.func.coalesce(bought.c.spend, 0), Money())
        year_count = sa.func.coalesce(bought.c.purchases, 0)
        last_purchase = bought.c.last
        segment = sa.case(
            (last_purchase.is_(None), None),
            (last_purchase < sa.literal(at_risk_since, when), "at_risk"),
            *([(year_spend >= sa.literal(threshold, Money()), "high_value")] if threshold is not None else []),
            (sa.and_(year_count >= _setting("LOYALTY_SEGMENT_POTENTIAL_MIN_PURCHASES"),
                     year_spend < sa.literal(potential_max, Money()) * year_count), "potential"),
            else_="low_value")
        member = sa.orm.aliased(Member, name="member")
        return (sa.select(member.id.label("member_id"), segment.label("value"))
                .outerjoin(bought, bought.c.member_id == member.id)
                .where(member.id.between(low, high), member.status == "active")
                .subquery("computed"))

    result = _update_column(Member.value_segment, segments, batch, progress, now)
    result["high_value_threshold"] = None if threshold is None else str(threshold)
    return result


def birthday_bonus(as_of, progress=None, now=None, batch=BATCH):
    """Members whose birthday is `as_of` get their tier's birthday points, once a year: a `bonus`
    entry naming the year, and a lot (paying any debt first, like every credit). Born on 29
    February: 28 February in other years. Set-based: per range, one INSERT of the entries, one of
    the lots, one UPDATE of the accounts, after locking the accounts it changes.

    Days the job missed (the scheduler was down, a run failed) are caught up: the birthdays of
    every day after the last successful run, at most LOYALTY_BIRTHDAY_CATCH_UP_DAYS (7) back, are
    given too, each in its own year. A first run ever looks at `as_of` alone."""
    now = now or clock.now()
    tz = _setting("LOYALTY_TIMEZONE")
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
    first = max(last + timedelta(days=1), as_of - timedelta(days=_setting("LOYALTY_BIRTHDAY_CATCH_UP_DAYS")))
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
                f"a.available + a.pending + t.birthday_points AS balance_after {due}"), params)
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
