"""The tiers' nightly job: the recompute, set-based. See DESIGN.md "Tiers" and service.py for the
dates (the window, the protection); the rule it applies to everyone is rules.target_rank, in SQL."""
from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from loyalty import clock
from loyalty.config import settings
from loyalty.database import Money, transaction
from loyalty.errors import ValidationFailed
from loyalty.extensions import db
from loyalty.members.models import Member
from loyalty.points.models import Activity, Purchase
from loyalty.tiers import rules
from loyalty.tiers.models import TierChange
from loyalty.tiers.service import protected_until, read_ladder, window_start
from loyalty.webhooks import service as webhooks

RECOMPUTE_ACTOR = "job:tiers.recompute"


def recompute_tiers(as_of: date, batch_size=50_000, progress=None, now=None):
    """Put every member in the tier their window earns, as of the end of local day `as_of`.

    Upgrades apply at once (a member whose purchase did not upgrade them, say because marketing
    lowered a threshold since). Downgrades only once the tier's protection and any admin guarantee
    have run out, and by at most LOYALTY_TIER_MAX_DROP tiers. A member moved down is protected for
    the rest of `as_of`, so a second run for the same day changes nothing.

    SQL over members in id ranges of `batch_size`, one transaction per range: an INSERT of the
    moves into tier history, selected from the window's aggregates, then one UPDATE of the members
    from those rows. No query per member. Returns {"members", "upgraded", "downgraded"}."""
    now = now or clock.now()
    max_drop, tz = settings().tier_max_drop, settings().timezone
    if as_of > clock.local_date(now, tz):
        raise ValidationFailed(f"{as_of} has not come yet: a recompute judges days that have begun, "
                               "today or earlier.", errors={"as_of": ["Must not be in the future."]})
    judged_at = clock.end_of_local_day(as_of, tz)
    start = window_start(as_of)
    since = min(now, judged_at)
    held_after_upgrade = protected_until(as_of)
    ladder = read_ladder()  # as it is now, not as this process last cached it
    first, last = db.session.execute(sa.select(sa.func.min(Member.id), sa.func.max(Member.id))).one()
    db.session.rollback()
    totals = {"members": 0, "upgraded": 0, "downgraded": 0}
    if first is None:
        return totals
    for low in range(first, last + 1, batch_size):
        high = min(low + batch_size - 1, last)
        with transaction():
            _recompute_range(low, high, ladder, start, judged_at, max_drop, now)
            _apply_moves(low, high, now, since, judged_at, held_after_upgrade)
            if webhooks.subscribers("tier.changed"):
                webhooks.emit_many("tier.changed", [
                    {"member_id": member_id, "from": from_code, "to": to_code, "reason": reason,
                     "note": note} for member_id, from_code, to_code, reason, note in db.session.execute(
                        sa.select(TierChange.member_id, TierChange.from_code, TierChange.to_code,
                                  TierChange.reason, TierChange.note)
                        .where(TierChange.member_id.between(low, high), TierChange.actor == RECOMPUTE_ACTOR,
                               TierChange.created_at == now).order_by(TierChange.member_id))], now)
            moved = _moves_counted(low, high, now)
            counted = db.session.scalar(sa.select(sa.func.count()).select_from(Member)
                                        .where(Member.id.between(low, high))) or 0
        totals["members"] += counted
        totals["upgraded"] += moved.get("upgrade", 0)
        totals["downgraded"] += moved.get("downgrade", 0)
        if progress:
            progress(counted)
    return totals


def _recompute_range(low, high, ladder, start, judged_at, max_drop, now):
    """Record in tier history, for the active members of the range whose tier changes, the move
    that rules.target_rank makes (in SQL: rules.*_sql) from the window's spend and activities."""
    spend = (sa.select(Purchase.member_id.label("member_id"),
                       sa.func.sum(Purchase.amount - Purchase.refunded_amount).label("spend"))
             .where(Purchase.member_id.between(low, high), Purchase.occurred_at >= start,
                    Purchase.occurred_at < judged_at)
             .group_by(Purchase.member_id).subquery("window_spend"))
    acts = (sa.select(Activity.member_id.label("member_id"), sa.func.count().label("activities"))
            .where(Activity.member_id.between(low, high), Activity.occurred_at >= start,
                   Activity.occurred_at < judged_at, Activity.capped.is_(False))
            .group_by(Activity.member_id).subquery("window_activities"))
    member_spend = sa.func.coalesce(spend.c.spend, sa.literal(Decimal("0"), Money()))
    member_acts = sa.func.coalesce(acts.c.activities, 0)
    qualified = rules.tier_for_sql(member_spend, member_acts, ladder)
    current = rules.position_sql(Member.tier_code, ladder)
    guaranteed = sa.case((Member.tier_guaranteed_until >= judged_at,
                          rules.position_sql(Member.tier_guaranteed_code, ladder)), else_=0)
    target = rules.target_rank_sql(current, qualified, Member.tier_held_until >= judged_at, max_drop,
                                   floor=guaranteed)
    targets = (sa.select(Member.id.label("member_id"), Member.tier_code.label("from_code"),
                         target.label("target"), qualified.label("qualified"), current.label("current"),
                         member_spend.label("spend"), member_acts.label("activities"))
               .select_from(Member)
               .outerjoin(spend, spend.c.member_id == Member.id)
               .outerjoin(acts, acts.c.member_id == Member.id)
               .where(Member.id.between(low, high), Member.status == "active")
               .subquery("targets"))
    reason = sa.case((targets.c.target > targets.c.current, "upgrade"), else_="downgrade")
    insert = sa.insert(TierChange).from_select(
        ["member_id", "from_code", "to_code", "reason", "note", "actor", "created_at"],
        sa.select(targets.c.member_id, targets.c.from_code, rules.code_sql(targets.c.target, ladder), reason,
                  sa.literal("Nightly recompute"), sa.literal(RECOMPUTE_ACTOR),
                  sa.literal(now, TierChange.created_at.type))
        .where(targets.c.target != targets.c.current))
    db.session.execute(insert)


def _moves_counted(low, high, now):
    return dict(db.session.execute(
        sa.select(TierChange.reason, sa.func.count()).where(
            TierChange.member_id.between(low, high), TierChange.actor == RECOMPUTE_ACTOR,
            TierChange.created_at == now).group_by(TierChange.reason)).all())


def _apply_moves(low, high, now, since, judged_at, held_after_upgrade):
    """Members take the tier of this run's history rows. Only if their tier is still the one the
    move started from: a purchase that upgraded them meanwhile wins, and its move is dropped."""
    when = Member.tier_held_until.type
    moves = sa.and_(TierChange.member_id == Member.id, TierChange.member_id.between(low, high),
                    TierChange.actor == RECOMPUTE_ACTOR, TierChange.created_at == now)
    db.session.execute(
        sa.update(Member).where(moves, Member.tier_code == TierChange.from_code)
        .values(tier_code=TierChange.to_code, tier_since=since, updated_at=now,
                tier_held_until=sa.case((TierChange.reason == "upgrade", sa.literal(held_after_upgrade, when)),
                                        else_=sa.literal(judged_at, when)))
        .execution_options(synchronize_session=False))
    db.session.execute(
        sa.delete(TierChange).where(
            TierChange.member_id.between(low, high), TierChange.actor == RECOMPUTE_ACTOR,
            TierChange.created_at == now,
            ~sa.exists().where(Member.id == TierChange.member_id, Member.tier_code == TierChange.to_code))
        .execution_options(synchronize_session=False))
