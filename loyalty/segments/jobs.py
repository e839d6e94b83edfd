"""Members' stages and segments, nightly and set-based: lifecycle stages and value segments.

Each is an UPDATE over a range of member ids, one transaction per range, with the thresholds from
the settings (config.py, LOYALTY_LIFECYCLE_* and LOYALTY_SEGMENT_*). Running one twice for the same
day changes nothing the second time."""
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa

from loyalty import clock
from loyalty.database import Money, UTCDateTime, transaction
from loyalty.extensions import db
from loyalty.jobs.batching import BATCH, day_cutoff, id_ranges
from loyalty.members.models import Member
from loyalty.points.models import Activity, Purchase
from loyalty.segments import figures
from loyalty.config import settings


def lifecycle(as_of, progress=None, now=None, batch=BATCH):
    """potential: never bought; new: first purchase within LOYALTY_LIFECYCLE_NEW_DAYS (90);
    active: a purchase or an activity within LOYALTY_LIFECYCLE_ACTIVE_DAYS (30); dormant: quiet
    for longer, up to LOYALTY_LIFECYCLE_CHURN_DAYS (90); churned: quiet for longer than that."""
    now = now or clock.now()
    at = day_cutoff(as_of, now)
    when = UTCDateTime()
    new_since = sa.literal(at - timedelta(days=settings().lifecycle_new_days), when)
    active_since = sa.literal(at - timedelta(days=settings().lifecycle_active_days), when)
    churn_before = sa.literal(at - timedelta(days=settings().lifecycle_churn_days), when)

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
    at_risk_since = at - timedelta(days=settings().segment_at_risk_days)
    net = Purchase.amount - Purchase.refunded_amount
    # The spend a member needs to be in the top share: the spend of the member ranked
    # max(1, floor(buyers x share)) by the year's spend, in one pass over the year's purchases.
    share_num, share_den = Decimal(str(settings().segment_high_value_share)).as_integer_ratio()
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
    potential_max = Decimal(str(settings().segment_potential_max_average))

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
            (sa.and_(year_count >= settings().segment_potential_min_purchases,
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




def fold_figures(as_of=None, progress=None, now=None):
    """The report figures' rows collapse to one per key (segments/figures.py), in one transaction;
    the figures do not change. Runs every minute, so the overview reads a few hundred rows."""
    with transaction():
        folded = figures.fold()
    return {**folded, "rows": sum(folded.values())}
