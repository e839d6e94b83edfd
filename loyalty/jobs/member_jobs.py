"""Members' nightly jobs, set-based: lifecycle stages, value segments, birthday bonuses.

Each is an UPDATE (or INSERT ... SELECT) over a range of member ids, one transaction per range,
with the thresholds from the settings (config.py, LOYALTY_LIFECYCLE_* and LOYALTY_SEGMENT_*).
Running one twice for the same day changes nothing the second time."""
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app

from loyalty import clock
from loyalty.database import Money, UTCDateTime, transaction
from loyalty.extensions import db
from loyalty.jobs.points_jobs import BATCH, _cutoff, _ranges
from loyalty.members.models import Member
from loyalty.points.models import Activity, Purchase


def _setting(name):
    return current_app.config[name]


def lifecycle(as_of, progress=None, now=None, batch=BATCH):
    """potential: never bought; new: first purchase within LOYALTY_LIFECYCLE_NEW_DAYS (90);
    active: a purchase or an activity within LOYALTY_LIFECYCLE_ACTIVE_DAYS (30); dormant: quiet
    for longer, up to LOYALTY_LIFECYCLE_CHURN_DAYS (90); churned: quiet for longer than that."""
    now = now or clock.now()
    at = _cutoff(as_of, now)
    new_since = at - timedelta(days=_setting("LOYALTY_LIFECYCLE_NEW_DAYS"))
    active_since = at - timedelta(days=_setting("LOYALTY_LIFECYCLE_ACTIVE_DAYS"))
    churn_before = at - timedelta(days=_setting("LOYALTY_LIFECYCLE_CHURN_DAYS"))
    first_purchase = (sa.select(sa.func.min(Purchase.occurred_at))
                      .where(Purchase.member_id == Member.id, Purchase.occurred_at < at).scalar_subquery())
    last_purchase = (sa.select(sa.func.max(Purchase.occurred_at))
                     .where(Purchase.member_id == Member.id, Purchase.occurred_at < at).scalar_subquery())
    last_activity = (sa.select(sa.func.max(Activity.occurred_at))
                     .where(Activity.member_id == Member.id, Activity.occurred_at < at).scalar_subquery())
    when = UTCDateTime()
    last_seen = sa.case((sa.and_(last_activity.is_not(None),
                                 sa.or_(last_purchase.is_(None), last_activity > last_purchase)), last_activity),
                        else_=last_purchase)
    stage = sa.case(
        (first_purchase.is_(None), "potential"),
        (first_purchase >= sa.literal(new_since, when), "new"),
        (last_seen >= sa.literal(active_since, when), "active"),
        (last_seen >= sa.literal(churn_before, when), "dormant"),
        else_="churned")
    return _update_column("lifecycle_stage", stage, batch, progress, now)


def _update_column(column, value, batch, progress, now):
    changed = 0
    for low, high in _ranges(batch):
        with transaction():
            # The computed value once per member: a CTE-free UPDATE ... WHERE IS DISTINCT FROM would
            # compute it twice, so compare in the SET and count changes after.
            result = db.session.execute(
                sa.update(Member).where(Member.id.between(low, high), Member.status == "active",
                                        sa.or_(getattr(Member, column).is_(None),
                                               getattr(Member, column) != value))
                .values({column: value, "updated_at": now})
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
    at = _cutoff(as_of, now)
    year_ago = at - timedelta(days=365)
    at_risk_since = at - timedelta(days=_setting("LOYALTY_SEGMENT_AT_RISK_DAYS"))
    net = Purchase.amount - Purchase.refunded_amount
    # The spend a member needs to be in the top share: one aggregate over the year's purchases.
    spends = (sa.select(sa.type_coerce(sa.func.sum(net), Money()).label("spend")).where(
        Purchase.occurred_at >= year_ago, Purchase.occurred_at < at).group_by(Purchase.member_id)
        .having(sa.func.sum(net) > 0).subquery())
    buyers = db.session.scalar(sa.select(sa.func.count()).select_from(spends))
    top = max(1, int(Decimal(buyers) * Decimal(str(_setting("LOYALTY_SEGMENT_HIGH_VALUE_SHARE")))))
    threshold = db.session.scalar(sa.select(spends.c.spend).order_by(spends.c.spend.desc())
                                  .offset(top - 1).limit(1)) if buyers else None
    db.session.rollback()
    when = UTCDateTime()
    year_spend = sa.type_coerce(sa.select(sa.func.coalesce(sa.func.sum(net), 0)).where(
        Purchase.member_id == Member.id, Purchase.occurred_at >= sa.literal(year_ago, when),
        Purchase.occurred_at < sa.literal(at, when)).scalar_subquery(), Money())
    year_count = sa.select(sa.func.count()).where(
        Purchase.member_id == Member.id, Purchase.occurred_at >= sa.literal(year_ago, when),
        Purchase.occurred_at < sa.literal(at, when)).scalar_subquery()
    last_purchase = sa.select(sa.func.max(Purchase.occurred_at)).where(
        Purchase.member_id == Member.id, Purchase.occurred_at < sa.literal(at, when)).scalar_subquery()
    potential_max = Decimal(str(_setting("LOYALTY_SEGMENT_POTENTIAL_MAX_AVERAGE")))
    segment = sa.case(
        (last_purchase.is_(None), None),
        (last_purchase < sa.literal(at_risk_since, when), "at_risk"),
        *([(year_spend >= sa.literal(threshold, Money()), "high_value")] if threshold is not None else []),
        (sa.and_(year_count >= _setting("LOYALTY_SEGMENT_POTENTIAL_MIN_PURCHASES"),
                 year_spend < sa.literal(potential_max, Money()) * year_count), "potential"),
        else_="low_value")
    result = _update_segment(segment, batch, progress, now)
    result["high_value_threshold"] = None if threshold is None else str(threshold)
    return result


def _update_segment(segment, batch, progress, now):
    changed = 0
    for low, high in _ranges(batch):
        with transaction():
            result = db.session.execute(
                sa.update(Member).where(Member.id.between(low, high), Member.status == "active",
                                        sa.or_(sa.and_(Member.value_segment.is_(None), segment.is_not(None)),
                                               sa.and_(Member.value_segment.is_not(None), segment.is_(None)),
                                               Member.value_segment != segment))
                .values(value_segment=segment, updated_at=now)
                .execution_options(synchronize_session=False))
            changed += result.rowcount
        if progress:
            progress(high - low + 1)
    return {"changed": changed, "rows": changed}
