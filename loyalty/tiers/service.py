"""Membership tiers: the ladder marketing edits, upgrades at once, and an admin's manual tier; the
nightly recompute is in jobs.py, the rules both apply in rules.py. See DESIGN.md "Tiers".

Dates: a member's qualification window is the `LOYALTY_TIER_WINDOW_MONTHS` months that end with
today (local time). A tier reached on day R is protected from downgrades through the same day
`LOYALTY_TIER_PROTECTION_MONTHS` months later. The recompute "as of D" judges everyone at the end
of local day D.
"""
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import orm

from loyalty import audit, clock, settings_cache
from loyalty.config import settings
from loyalty.database import Money, PreparedSelect, transaction
from loyalty.errors import NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members.lookup import member_or_404
from loyalty.members.models import Member
from loyalty.points import ledger
from loyalty.points.models import Activity, Purchase
from loyalty.tiers import rules
from loyalty.tiers.models import Tier, TierChange
from loyalty.tiers.rules import TierRule
from loyalty.webhooks import service as webhooks

HISTORY_LIMIT = 100


# --- the ladder ---------------------------------------------------------------------------------

def seed_tiers(now: datetime | None = None) -> None:
    """Store the default ladder if there is none (the migration does this on a new database)."""
    now = now or clock.now()
    with transaction():
        if db.session.scalar(sa.select(sa.func.count()).select_from(Tier)) == 0:
            for rule in rules.DEFAULT_LADDER:
                db.session.add(_row_from_rule(rule, now))


def ladder() -> tuple[TierRule, ...]:
    """The ladder as rules, lowest rank first. Every purchase needs it (the multiplier, the upgrade,
    the answer's tier name): kept a few seconds per process (loyalty/settings_cache.py)."""
    return settings_cache.cached("tiers", read_ladder)


def read_ladder() -> tuple[TierRule, ...]:
    """The ladder as rules, lowest rank first, read now from the database: for the recompute, which
    judges everyone by the ladder as it is, not as this process last saw it."""
    return tuple(rule_of(tier) for tier in db.session.scalars(sa.select(Tier).order_by(Tier.rank)))


settings_cache.watch(Tier, "tiers")


def rule_of(tier: Tier) -> TierRule:
    return TierRule(code=tier.code, rank=tier.rank, spend=tier.qualify_spend,
                    activities=tier.qualify_activities, mode=tier.qualify_mode,
                    earn_multiplier=tier.earn_multiplier, name=tier.name,
                    birthday_points=tier.birthday_points, service_level=tier.service_level,
                    perks=tuple(tier.perks))


def _row_from_rule(rule: TierRule, now: datetime) -> Tier:
    return Tier(code=rule.code, name=rule.name, rank=rule.rank, qualify_spend=rule.spend,
                qualify_activities=rule.activities, qualify_mode=rule.mode,
                earn_multiplier=rule.earn_multiplier, birthday_points=rule.birthday_points,
                service_level=rule.service_level, perks=list(rule.perks), updated_at=now)


def tier_document(tier: TierRule) -> dict[str, Any]:
    return {"code": tier.code, "name": tier.name, "rank": tier.rank,
            "qualification": {"spend": str(tier.spend), "activities": tier.activities, "mode": tier.mode},
            "benefits": {"earn_multiplier": str(tier.earn_multiplier),
                         "birthday_points": str(tier.birthday_points),
                         "service_level": tier.service_level, "perks": list(tier.perks)}}


def update_tier(code: str, name: str, qualification: Mapping[str, Any], benefits: Mapping[str, Any], actor: str,
                now: datetime | None = None) -> TierRule:
    """Change one tier's name, qualification and benefits. The whole ladder must still make sense
    (ranks in order, thresholds rising with rank, multipliers ≥ 1); the change is audit-logged.
    Returns the tier as it now is (a TierRule)."""
    now = now or clock.now()
    with transaction():
        rows = {tier.code: tier for tier in db.session.scalars(
            sa.select(Tier).order_by(Tier.rank).with_for_update()).all()}
        tier = rows.get(code)
        if tier is None:
            raise NotFound(f"No tier {code!r}; the tiers are {', '.join(rows)}.")
        before = tier_document(rule_of(tier))
        tier.name = name
        tier.qualify_spend = qualification["spend"]
        tier.qualify_activities = qualification["activities"]
        tier.qualify_mode = qualification["mode"]
        tier.earn_multiplier = benefits["earn_multiplier"]
        tier.birthday_points = benefits["birthday_points"]
        tier.service_level = benefits["service_level"]
        tier.perks = list(benefits["perks"])
        tier.updated_at = now
        problems = rules.validate_ladder([rule_of(row) for row in rows.values()])
        if problems:
            raise ValidationFailed(" ".join(problems), errors={"tier": problems})
        updated = rule_of(tier)
        audit.record(actor, "tier.update", "tier", code, before, tier_document(updated), now)
    return updated


def earn_multiplier(member: Member) -> Decimal:
    tier = next((tier for tier in ladder() if tier.code == member.tier_code), None)
    return tier.earn_multiplier if tier is not None else Decimal("1")


# --- one member -----------------------------------------------------------------------------------

def window_start(day: date) -> datetime:
    """The first instant of the qualification window that ends with local `day`."""
    window_months, tz = settings().tier_window_months, settings().timezone
    return clock.start_of_local_day(rules.months_before(day, window_months) + timedelta(days=1), tz)


def protected_until(day: date) -> datetime:
    """A tier reached on local `day` is held through this instant (the end of its anniversary)."""
    protection_months, tz = settings().tier_protection_months, settings().timezone
    return clock.end_of_local_day(rules.months_after(day, protection_months), tz)


def qualifying(member_id: int, now: datetime) -> tuple[Decimal, int, datetime]:
    """(spend net of refunds, activities not stopped by a cap, window start) as of `now`.

    No upper bound: a request that waited for the account's lock counts what the requests
    before it recorded, even if their clocks read a little later than its own."""
    tz = settings().timezone
    start = window_start(clock.local_date(now, tz))
    db.session.flush()  # what the transaction changed counts (the session's execute would flush too)
    row = _QUALIFYING.first(member_id=member_id, start=start)
    return row[0], row[1], start


def window_sums(member_id: Any, start: Any) -> tuple[sa.ScalarSelect[Any], sa.ScalarSelect[Any]]:
    """`qualifying`'s two figures as SQL (scalar subqueries) for the member `member_id` and the
    window from `start` (each a column or a bind parameter): the spend net of refunds, and the
    activities not stopped by a cap. Also written into a purchase's own statement (points/
    plain_purchase.py), where they count what was recorded before it."""
    spend = (sa.select(sa.type_coerce(sa.func.coalesce(sa.func.sum(Purchase.amount - Purchase.refunded_amount), 0),
                                      Money()))
             .where(Purchase.member_id == member_id, Purchase.occurred_at >= start).scalar_subquery())
    activities = (sa.select(sa.func.count()).select_from(Activity)
                  .where(Activity.member_id == member_id, Activity.occurred_at >= start, Activity.capped.is_(False))
                  .scalar_subquery())
    return spend, activities


# Built once (every purchase and activity runs it): see ledger._LOCK_ACCOUNT.
_QUALIFYING = PreparedSelect(sa.select(*window_sums(sa.bindparam("member_id"), sa.bindparam("start"))))


class _Recorded(Protocol):
    """A recorded purchase as an upgrade names it: a Purchase, or plain_purchase's RecordedPurchase."""

    @property
    def id(self) -> int: ...


def upgrade_if_qualified(member: Member | SimpleNamespace, now: datetime, purchase: _Recorded | None = None,
                         window: tuple[Decimal, int] | None = None) -> TierChange | None:
    """Inside a purchase's or activity's transaction (the account is locked): if the window now
    qualifies the member for a higher tier, move them up at once (skipping tiers if need be).
    The history names the `purchase` that made the upgrade, so a refund of it can find it.
    `window`: the (spend, activities) of `qualifying`, when the caller has them already. `member`:
    the ORM's, or a plain view of one the session has not loaded (`move_tier`)."""
    if _at_top(member.tier_code):
        return None
    spend, activities = window if window is not None else qualifying(member.id, now)[:2]
    reached = _reached(member.tier_code, spend, activities)
    if reached is None:
        return None
    tz = settings().timezone
    return move_tier(member, reached.code, "upgrade", now, held_until=protected_until(clock.local_date(now, tz)),
                 note=f"Qualifying spend {spend}, {activities} activities",
                 purchase_id=None if purchase is None else purchase.id)


def _at_top(tier_code: str) -> bool:
    ladder_now, current = _standing(tier_code)
    return current.rank == ladder_now[-1].rank


def _reached(tier_code: str, spend: Decimal, activities: int) -> TierRule | None:
    """The higher tier this window's figures earn a member of `tier_code`, or None."""
    ladder_now, current = _standing(tier_code)
    reached = rules.tier_for(spend, activities, ladder_now)
    return reached if reached.rank > current.rank else None


def _standing(tier_code: str) -> tuple[Sequence[TierRule], TierRule]:
    """(the ladder, the member's rule on it: the lowest for a code it no longer has)."""
    ladder_now = ladder()
    return ladder_now, next((rule for rule in ladder_now if rule.code == tier_code), ladder_now[0])


def upgrade_after_purchases(members: Mapping[int, Member], purchases: Sequence[Purchase],
                            now: datetime) -> int:
    """`upgrade_if_qualified` after each of many purchases (an offline till's batch, inside its
    transaction, the members locked), for all their members at once: the same moves, the same
    history lines (each naming the purchase that crossed the threshold, so a refund of it finds
    it) and the same `tier.changed` events as the purchases sent one by one, from one statement.

    The statement walks each member's purchases of the batch in id order, as the single path
    would meet them: the window's spend after each one (a running sum), the tier that spend
    earns (rules.tier_for_sql), and the member's tier before and after it (rules.target_rank_sql,
    always protected here: a purchase only ever moves a member up). A step where the tier rises
    is a move. `members` are {member_id: Member}; returns the number of moves."""
    if not purchases:
        return 0
    ladder_now = ladder()
    tz = settings().timezone
    start = window_start(clock.local_date(now, tz))
    member_ids = sorted(members)
    batch_ids = [purchase.id for purchase in purchases]
    in_window = Purchase.occurred_at >= start
    # The window's spend after each purchase. A purchase of the batch dated before the window still
    # is a step (the single path checks after it too); it adds nothing.
    running = (sa.select(Purchase.id.label("purchase_id"), Purchase.member_id.label("member_id"),
                         sa.func.sum(sa.case((in_window, Purchase.amount - Purchase.refunded_amount), else_=0))
                         .over(partition_by=Purchase.member_id, order_by=Purchase.id, rows=(None, 0))
                         .label("spend"))
               .where(Purchase.member_id.in_(member_ids), sa.or_(in_window, Purchase.id.in_(batch_ids)))
               .subquery("running"))
    acts = (sa.select(Activity.member_id.label("member_id"), sa.func.count().label("activities"))
            .where(Activity.member_id.in_(member_ids), Activity.occurred_at >= start, Activity.capped.is_(False))
            .group_by(Activity.member_id).subquery("window_activities"))
    spend = sa.type_coerce(running.c.spend, Money())
    activities = sa.func.coalesce(acts.c.activities, 0)
    steps = (sa.select(running.c.purchase_id, running.c.member_id, spend.label("spend"),
                       activities.label("activities"), rules.position_sql(Member.tier_code, ladder_now).label("current"),
                       rules.tier_for_sql(spend, activities, ladder_now).label("qualified"))
             .join_from(running, Member, Member.id == running.c.member_id)
             .outerjoin(acts, acts.c.member_id == running.c.member_id)
             .where(running.c.purchase_id.in_(batch_ids))
             .subquery("steps"))

    def best_so_far(last):  # the best tier the window earned up to this step (`last` = 0) or the one before (-1)
        return sa.func.coalesce(sa.func.max(steps.c.qualified).over(
            partition_by=steps.c.member_id, order_by=steps.c.purchase_id, rows=(None, last)), 0)

    walked = (sa.select(steps.c.member_id, steps.c.purchase_id, steps.c.spend, steps.c.activities,
                        rules.target_rank_sql(steps.c.current, best_so_far(-1), sa.true(), 0).label("before"),
                        rules.target_rank_sql(steps.c.current, best_so_far(0), sa.true(), 0).label("after"))
              .subquery("walked"))
    moves = db.session.execute(
        sa.select(walked.c.member_id, walked.c.purchase_id, sa.type_coerce(walked.c.spend, Money()),
                  walked.c.activities, walked.c.after)
        .where(walked.c.after > walked.c.before).order_by(walked.c.member_id, walked.c.purchase_id)).all()
    if not moves:
        return 0
    ordered = rules.ranked(ladder_now)
    held_until = protected_until(clock.local_date(now, tz))
    changes, events = [], []
    for member_id, purchase_id, spend_then, activities_then, position in moves:
        change, event = _changed(members[member_id], ordered[position].code, "upgrade", now, held_until=held_until,
                                 note=f"Qualifying spend {spend_then}, {activities_then} activities",
                                 purchase_id=purchase_id)
        changes.append(change)
        events.append(event)
    # One multi-row INSERT (the members' rows are updated by the session's flush, in one executemany).
    db.session.execute(sa.insert(TierChange), changes)
    webhooks.emit_many("tier.changed", events, now)
    return len(changes)


# How far back a refund looks through the member's tier history for upgrades it undoes.
UNDO_SCAN_LIMIT = 50


def undo_returned_upgrades(member: Member, purchase: Purchase, refunded: Decimal, now: datetime) -> TierChange | None:
    """Inside a refund's transaction (the account is locked, the purchase's refunded amount
    already raised by `refunded`): a tier bought and returned is not kept.

    The upgrades made since the purchase was recorded, newest first, that this refund takes the
    window below (their tier was met before the refund and is not met now) are undone, down to
    the first one that still stands: an upgrade the window still earns, an admin's manual tier,
    a downgrade (an earlier refund of the same purchase is seen through: it only cut the upgrade
    down to what the rest of the purchase still paid for). The member goes to the tier they had
    before the earliest undone upgrade, or to what the window still earns if that is higher,
    never above their tier now nor below a guarantee still running; that tier's protection is
    the one it had (an earned tier keeps its protection; the returned one loses it). One `refund`
    entry in the history, naming the purchase, and a `tier.changed` event. Returns the change,
    or None."""
    ladder_now = ladder()
    # keyed by str | None: a history row's from_code may be None (then the lowest tier)
    by_code: dict[str | None, TierRule] = {rule.code: rule for rule in ladder_now}
    current = by_code.get(member.tier_code)
    if current is None or current.rank == ladder_now[0].rank:
        return None
    db.session.flush()  # the window must see the refund
    spend, activities, start = qualifying(member.id, now)
    if purchase.occurred_at < start:
        return None  # outside the window: the refund changes nothing it counts
    earned = rules.tier_for(spend, activities, ladder_now)
    if earned.rank >= current.rank:
        return None
    before_refund = spend + refunded
    changes = db.session.scalars(
        sa.select(TierChange).where(TierChange.member_id == member.id,
                                    TierChange.created_at >= purchase.created_at)
        .order_by(TierChange.id.desc()).limit(UNDO_SCAN_LIMIT)).all()
    undone, cut_to = None, None
    for change in changes:
        if change.reason == "refund" and change.purchase_id == purchase.id:
            cut_to = by_code.get(change.to_code)  # an earlier refund of it left the upgrade this far
            continue
        reached = by_code.get(change.to_code)
        if reached is not None and cut_to is not None and cut_to.rank < reached.rank:
            reached = cut_to
        cut_to = None
        if (change.reason != "upgrade" or reached is None or reached.met_by(spend, activities)
                or not reached.met_by(before_refund, activities)):
            break
        undone = change
    if undone is None:
        return None
    target = max(by_code.get(undone.from_code, ladder_now[0]), earned, key=lambda rule: rule.rank)
    guarantee = _guarantee(member, now)
    if guarantee and guarantee[0] in by_code:
        target = max(target, min(by_code[guarantee[0]], current, key=lambda rule: rule.rank),
                     key=lambda rule: rule.rank)
    if target.rank >= current.rank:
        return None
    tz = settings().timezone
    if target.code == undone.from_code:  # back where they were: as they were
        previous = db.session.scalar(
            sa.select(TierChange).where(TierChange.member_id == member.id, TierChange.id < undone.id)
            .order_by(TierChange.id.desc()).limit(1))
        since = member.joined_at if previous is None else previous.created_at
        held = (protected_until(clock.local_date(previous.created_at, tz))
                if previous is not None and previous.reason in ("upgrade", "manual") else None)
    else:  # the window still earns a tier between: as if the upgrade had reached only that one
        since = undone.created_at
        held = protected_until(clock.local_date(undone.created_at, tz))
    note = (f"Purchase {purchase.receipt_no} at store {purchase.store_id} refunded: qualifying spend "
            f"{spend}, {activities} activities no longer earn {undone.to_code}")
    return move_tier(member, target.code, "refund", now, held_until=held, since=since, note=note[:200],
                 purchase_id=purchase.id)


def move_tier(member: Member | SimpleNamespace, to_code: str, reason: str, now: datetime,
              held_until: datetime | None, note: str | None = None, actor: str | None = None,
              purchase_id: int | None = None, since: datetime | None = None) -> TierChange:
    """Move the member, write the history row, send `tier.changed`. `member` is the ORM's (the
    session writes it), or a plain view of a member the session has not loaded (a plain purchase's,
    points/plain_purchase.py: loading the ORM's for a move cost about a millisecond): its row is
    written by one UPDATE of the same columns, and the view shows the move."""
    values, event = _changed(member, to_code, reason, now, held_until, note, actor, purchase_id, since)
    if not isinstance(member, Member):
        db.session.execute(
            sa.update(Member).where(Member.id == member.id)
            .values(tier_code=member.tier_code, tier_since=member.tier_since, tier_held_until=member.tier_held_until,
                    updated_at=member.updated_at)
            .execution_options(synchronize_session=False))
    change = TierChange(**values)
    db.session.add(change)
    webhooks.emit("tier.changed", event, now)
    return change


def _changed(member: Member | SimpleNamespace, to_code: str, reason: str, now: datetime, held_until: datetime | None,
             note: str | None = None, actor: str | None = None, purchase_id: int | None = None,
             since: datetime | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Move the member (the session writes it) and answer the history row's values and the
    `tier.changed` event's data: one move, whether it is written alone or with many others."""
    values = dict(member_id=member.id, from_code=member.tier_code, to_code=to_code, reason=reason, note=note,
                  actor=actor, purchase_id=purchase_id, created_at=now)
    member.tier_code = to_code
    member.tier_since = since or now
    member.tier_held_until = held_until
    member.updated_at = now
    return values, {"member_id": member.id, "from": values["from_code"], "to": to_code, "reason": reason,
                    "note": note}


def set_member_tier(member_id: int, code: str, reason: str, actor: str, guaranteed_until: date | None = None,
                    now: datetime | None = None) -> Member:
    """An admin puts a member in a tier by hand. With `guaranteed_until` (a local date) the
    recompute will not move them down before the end of that day."""
    now = now or clock.now()
    tz = settings().timezone
    if guaranteed_until is not None and guaranteed_until < clock.local_date(now, tz):
        raise ValidationFailed("The guarantee must end today or later.",
                               errors={"guaranteed_until": ["Must not be in the past."]})
    with transaction():
        # The account's lock, like every write about this member: a purchase upgrading them at
        # the same moment waits, then sees the new tier.
        member = ledger.lock_account(member_id, now).member
        if db.session.get(Tier, code) is None:
            known = ", ".join(tier.code for tier in read_ladder())
            raise ValidationFailed(f"No tier {code!r}; choose one of: {known}.",
                                   errors={"tier": [f"Must be one of: {known}."]})
        before = {"tier": member.tier_code, "guaranteed_tier": member.tier_guaranteed_code,
                  "guaranteed_until": audit.plain(member.tier_guaranteed_until)}
        guarantee = clock.end_of_local_day(guaranteed_until, tz) if guaranteed_until else None
        move_tier(member, code, "manual", now, held_until=protected_until(clock.local_date(now, tz)),
              note=reason, actor=actor)
        # A new manual tier replaces any earlier guarantee; without a date there is none.
        member.tier_guaranteed_code = code if guarantee else None
        member.tier_guaranteed_until = guarantee
        audit.record(actor, "member.tier.set", "member", member_id, before,
                     {"tier": code, "guaranteed_until": audit.plain(guarantee), "reason": reason}, now)
    return member


def member_tier(member_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Everything the app shows about a member's tier: where they are, since when, until when at
    least, the window's figures, what the next tier needs, what keeping this one needs, history."""
    now = now or clock.now()
    start = window_start(clock.local_date(now, settings().timezone))
    # One statement, one snapshot, no transaction (a read writes nothing): the member, the window's
    # figures, the settings version (for the ladder and the API key's check) and the history.
    rows = _MEMBER_TIER.rows(member_id=member_id, start=start)
    if not rows:
        raise NotFound(f"No member with id {member_id}.")
    member, spend, activities = rows[0], rows[0].spend, rows[0].activities  # the member's columns by name
    settings_cache.observe(rows[0].settings_version)
    history = [row for row in rows if row.change_id is not None]
    ladder_now = ladder()
    current = next((rule for rule in ladder_now if rule.code == member.tier_code), ladder_now[0])
    upcoming = rules.next_tier(current.code, ladder_now)
    guarantee = _guarantee(member, now)
    valid_until = max((at for at in (member.tier_held_until,
                                     guarantee[1] if guarantee and guarantee[0] == member.tier_code else None)
                       if at), default=None)
    keep_spend, keep_activities = rules.shortfall(current, spend, activities)
    document = {
        "tier": {"code": current.code, "name": current.name, "rank": current.rank,
                 "benefits": {"earn_multiplier": current.earn_multiplier,
                              "birthday_points": current.birthday_points,
                              "service_level": current.service_level, "perks": list(current.perks)}},
        "since": member.tier_since,
        "valid_until": valid_until,
        "guaranteed": None if guarantee is None else {"tier": guarantee[0], "until": guarantee[1]},
        "qualifying": {"spend": spend, "activities": activities, "window_start": start},
        "keep": {"spend_needed": keep_spend, "activities_needed": keep_activities},
        "next": None,
        "history": [{"from": change.from_code, "to": change.to_code, "reason": change.reason,
                     "note": change.note, "purchase_id": change.purchase_id, "at": change.changed_at}
                    for change in history],
    }
    if upcoming is not None:
        spend_needed, activities_needed = rules.shortfall(upcoming, spend, activities)
        document["next"] = {"code": upcoming.code, "name": upcoming.name,
                            "spend_needed": spend_needed, "activities_needed": activities_needed,
                            "mode": upcoming.mode}
    return document


def _member_tier_statement() -> sa.Select[Any]:
    """member_tier's statement: the member's tier columns, the qualifying window's spend and
    activities (as _QUALIFYING counts them), the settings version, and its latest HISTORY_LIMIT
    tier changes newest first, one row each (or one row without a change). Run directly
    (database.PreparedSelect: a hot read, issue 20)."""
    member_id: sa.BindParameter[int] = sa.bindparam("member_id")
    latest = orm.aliased(TierChange)
    spend, activities = (column.label(name) for column, name in zip(_QUALIFYING.statement.selected_columns,
                                                                     ("spend", "activities")))
    return (sa.select(Member.tier_code, Member.tier_since, Member.tier_held_until, Member.tier_guaranteed_code,
                      Member.tier_guaranteed_until, spend, activities, settings_cache.VERSION,
                      TierChange.id.label("change_id"), TierChange.from_code, TierChange.to_code,
                      TierChange.reason, TierChange.note, TierChange.purchase_id,
                      TierChange.created_at.label("changed_at"))
            .outerjoin(TierChange, sa.and_(TierChange.member_id == Member.id, TierChange.id.in_(
                sa.select(latest.id).where(latest.member_id == member_id).order_by(latest.id.desc())
                .limit(HISTORY_LIMIT))))
            .where(Member.id == member_id).order_by(TierChange.id.desc()))


_MEMBER_TIER = PreparedSelect(_member_tier_statement())


def _guarantee(member: Member, now: datetime) -> tuple[str, datetime] | None:
    """(tier, until) of an admin's guarantee still running, else None."""
    if member.tier_guaranteed_code and member.tier_guaranteed_until and member.tier_guaranteed_until > now:
        return member.tier_guaranteed_code, member.tier_guaranteed_until
    return None
