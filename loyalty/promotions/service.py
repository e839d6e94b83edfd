"""Promotions: marketing's points campaigns (API.md "Promotions").

Marketing's use cases (create, change, stop, list, stats) each own their transaction and are
audit-logged. A purchase reaches this module inside its own transaction, with the member's account
locked (points/service.py): `plan` decides what the promotions give (the pure rules of
promotions/rules.py over the promotions this process keeps in the settings cache), `grant` writes
one `bonus` entry per promotion, referencing it, and `on_refund` takes them back pro rata.

Budgets: a promotion's `budget_used` is a counter. A purchase locks the rows of the budgeted
promotions it may get (in id order, after the member's account and the purchase's receipt, as an
offline batch does too: no other order is ever taken, so no deadlock), reads what is left, gets at
most that, and adds it with a conditional UPDATE that can never take the counter past the budget
(the table's check constraint says so too). The last purchase gets what is left; later ones
nothing. Points a refund takes back do not return to the budget: the budget counts what was given.
"""
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from loyalty import audit, clock, settings_cache
from loyalty.config import settings
from loyalty.cursors import decode_cursor, encode_cursor
from loyalty.database import Money, Points, rows_changed, transaction
from loyalty.errors import Conflict, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members.models import Member
from loyalty.points import ledger
from loyalty.points.models import Account, Entry, Purchase, Refund
from loyalty.points import rules as earning
from loyalty.promotions import rules
from loyalty.promotions.models import Promotion, PromotionGrant
from loyalty.segments.models import MemberTag
from loyalty.tiers import service as tiers

ZERO = Decimal("0.00")
FIELDS = ("name", "status", "starts_at", "ends_at", "schedule", "scope", "effect", "limits", "stacking",
          "priority")
STATUSES = ("draft", "active", "stopped", "ended")
# Ended promotions stay in the cache this long: a till uploading offline purchases (up to
# LOYALTY_OFFLINE_MAX_DAYS back) still gets the promotions in force when they were made.
LOADED_AFTER_END = timedelta(days=400)


# --- marketing's use cases ----------------------------------------------------------------------

def create_promotion(fields: Mapping[str, Any], actor: str, now: datetime | None = None) -> Promotion:
    """A new promotion, draft or active; audit-logged."""
    now = now or clock.now()
    values = {"status": "draft", "stacking": "stack", "priority": 0, "starts_at": now, **fields}
    _check(values)
    with transaction():
        promotion = Promotion(created_at=now, updated_at=now, budget_used=ZERO)
        _assign(promotion, values)
        db.session.add(promotion)
        db.session.flush()
        audit.record(actor, "promotion.create", "promotion", promotion.id, None, document(promotion), now)
    return promotion


def update_promotion(promotion_id: int, changes: Mapping[str, Any], actor: str,
                     now: datetime | None = None) -> Promotion:
    """Change a promotion; purchases after the change see it. A stopped one cannot change."""
    now = now or clock.now()
    with transaction():
        promotion = db.session.get(Promotion, promotion_id, with_for_update=True, populate_existing=True)
        if promotion is None:
            raise NotFound(f"No promotion with id {promotion_id}.")
        if promotion.status == "stopped":
            raise Conflict(f"Promotion {promotion_id} was stopped and cannot change; create a new one.")
        before = document(promotion)
        merged = {**before_values(promotion), **changes}
        _check(merged)
        limits = merged.get("limits") or {}
        if limits.get("budget_points") is not None and limits["budget_points"] < promotion.budget_used:
            raise ValidationFailed(
                f"The promotion has already given {promotion.budget_used} points; its budget cannot be "
                "less than that.", errors={"limits": {"budget_points": [
                    f"Must be at least {promotion.budget_used}."]}})
        _assign(promotion, merged)
        promotion.updated_at = now
        after = document(promotion)
        if after != before:
            audit.record(actor, "promotion.update", "promotion", promotion.id, before, after, now)
    return promotion


def stop_promotion(promotion_id: int, actor: str, now: datetime | None = None) -> Promotion:
    """Stop a promotion for good: purchases after this get nothing from it. Stopping twice is a no-op."""
    now = now or clock.now()
    with transaction():
        promotion = db.session.get(Promotion, promotion_id, with_for_update=True, populate_existing=True)
        if promotion is None:
            raise NotFound(f"No promotion with id {promotion_id}.")
        if promotion.status != "stopped":
            before = document(promotion)
            promotion.status, promotion.stopped_at, promotion.updated_at = "stopped", now, now
            audit.record(actor, "promotion.stop", "promotion", promotion.id, before, document(promotion), now)
    return promotion


def get_promotion(promotion_id: int) -> Promotion:
    # Fresh: purchases move `budget_used` with UPDATE statements that leave loaded objects alone.
    promotion = db.session.get(Promotion, promotion_id, populate_existing=True)
    if promotion is None:
        raise NotFound(f"No promotion with id {promotion_id}.")
    return promotion


def promotions(status: str | None = None, limit: int = 50, cursor: str | None = None,
               now: datetime | None = None) -> tuple[Sequence[Promotion], str | None]:
    """(a page of promotions, newest first; the next page's cursor or None), by status: `ended` is an
    active promotion past its end, `active` one that has not ended (it may not have started yet)."""
    now = now or clock.now()
    query = sa.select(Promotion).order_by(Promotion.id.desc())
    not_ended = sa.or_(Promotion.ends_at.is_(None), Promotion.ends_at > now)
    if status == "ended":
        query = query.where(Promotion.status == "active", sa.not_(not_ended))
    elif status == "active":
        query = query.where(Promotion.status == "active", not_ended)
    elif status is not None:
        query = query.where(Promotion.status == status)
    if cursor:
        query = query.where(Promotion.id < decode_cursor(cursor))
    rows = db.session.scalars(query.limit(limit + 1)).all()
    return rows[:limit], (encode_cursor(rows[limit - 1].id) if len(rows) > limit else None)


def status_of(promotion: Promotion, now: datetime | None = None) -> str:
    """The status a client sees: draft, active, stopped, or ended (active, past its end)."""
    now = now or clock.now()
    if promotion.status == "active" and promotion.ends_at is not None and promotion.ends_at <= now:
        return "ended"
    return promotion.status


def promotion_stats(promotion_id: int) -> dict[str, Any]:
    promotion = get_promotion(promotion_id)
    purchases, members, granted, clawed_back, spend = db.session.execute(
        sa.select(sa.func.count(), sa.func.count(sa.distinct(PromotionGrant.member_id)),
                  sa.type_coerce(sa.func.coalesce(sa.func.sum(PromotionGrant.points), 0), Points()),
                  sa.type_coerce(sa.func.coalesce(sa.func.sum(PromotionGrant.points_clawed_back), 0), Points()),
                  sa.type_coerce(sa.func.coalesce(sa.func.sum(PromotionGrant.qualifying_amount), 0), Money()))
        .where(PromotionGrant.promotion_id == promotion.id)).one()
    budget = promotion.budget_points
    return {"promotion_id": promotion.id, "purchases": purchases, "members": members,
            "points_granted": granted, "points_clawed_back": clawed_back, "qualifying_spend": spend,
            "budget_points": budget, "budget_left": None if budget is None else budget - promotion.budget_used}


def running_promotions(limit=20, now=None):
    """The dashboard's "active promotions": active and not ended (started or about to start), the
    soonest to end first, each with the points it has given so far: [(promotion, points granted)]."""
    now = now or clock.now()
    rows = db.session.scalars(
        sa.select(Promotion).where(Promotion.status == "active",
                                   sa.or_(Promotion.ends_at.is_(None), Promotion.ends_at > now))
        .order_by(Promotion.ends_at.is_(None), Promotion.ends_at, Promotion.id).limit(limit)).all()
    granted = dict(db.session.execute(
        sa.select(PromotionGrant.promotion_id, sa.type_coerce(sa.func.sum(PromotionGrant.points), Points()))
        .where(PromotionGrant.promotion_id.in_([row.id for row in rows]))
        .group_by(PromotionGrant.promotion_id)).all()) if rows else {}
    return [(row, granted.get(row.id, ZERO)) for row in rows]


# --- documents ------------------------------------------------------------------------------------

def before_values(promotion: Promotion) -> dict[str, Any]:
    """The promotion's fields as the API takes them (what a PATCH merges its changes into)."""
    limits = {key: value for key, value in (("per_member", promotion.per_member),
                                            ("per_member_period", promotion.per_member_period),
                                            ("budget_points", promotion.budget_points)) if value is not None}
    return {"name": promotion.name, "status": promotion.status, "starts_at": promotion.starts_at,
            "ends_at": promotion.ends_at, "schedule": promotion.schedule, "scope": _scope_values(promotion.scope),
            "effect": _effect_values(promotion.effect), "limits": limits or None,
            "stacking": promotion.stacking, "priority": promotion.priority}


def document(promotion: Promotion) -> dict[str, Any]:
    """The promotion as the audit log keeps it: JSON, decimals as strings, times in ISO 8601."""
    values = before_values(promotion)
    return {"id": promotion.id, **{key: _plain(value) for key, value in values.items()},
            "budget_used": str(promotion.budget_used), "stopped_at": audit.plain(promotion.stopped_at)}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return audit.plain(value)


def _scope_values(scope: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not scope:
        return None
    return {**scope, **({"min_amount": Decimal(scope["min_amount"])} if scope.get("min_amount") is not None else {})}


def _effect_values(effect: Mapping[str, Any]) -> dict[str, Any]:
    return {key: (value if key == "type" else Decimal(value)) for key, value in effect.items()}


def _assign(promotion: Promotion, values: Mapping[str, Any]) -> None:
    limits = values.get("limits") or {}
    promotion.name, promotion.status = values["name"], values["status"]
    promotion.starts_at, promotion.ends_at = values["starts_at"], values.get("ends_at")
    promotion.schedule = values.get("schedule") or None
    promotion.scope = _plain(values.get("scope")) or None
    promotion.effect = _plain(values["effect"])
    promotion.per_member = limits.get("per_member")
    promotion.per_member_period = (limits.get("per_member_period") or "promotion") \
        if limits.get("per_member") is not None else None
    promotion.budget_points = limits.get("budget_points")
    promotion.stacking, promotion.priority = values["stacking"], values["priority"]


def _check(values: Mapping[str, Any]) -> None:
    """The rules between fields (the schema checks each field's shape)."""
    errors: dict[str, Any] = {}  # field: [problems], or a nested field's {name: [problems]}
    if values.get("ends_at") is not None and values["ends_at"] <= values["starts_at"]:
        errors["ends_at"] = ["Must be after starts_at."]
    if values.get("status") not in ("draft", "active"):
        errors["status"] = ["Must be draft or active (stop a promotion with POST /promotions/{id}/stop)."]
    schedule = values.get("schedule") or {}
    if schedule.get("from") is not None and schedule.get("from") == schedule.get("until"):
        errors["schedule"] = {"until": ["Must differ from 'from' (a window of no time never applies)."]}
    known = {tier.code for tier in tiers.ladder()}
    unknown = sorted(set((values.get("scope") or {}).get("tiers") or ()) - known)
    if unknown:
        errors["scope"] = {"tiers": [f"Unknown tier {', '.join(unknown)}; tiers are: {', '.join(sorted(known))}."]}
    limits = values.get("limits") or {}
    if limits.get("per_member_period") is not None and limits.get("per_member") is None:
        errors["limits"] = {"per_member": ["Give per_member with per_member_period: how many purchases per period."]}
    if errors:
        field, problem = next(iter(errors.items()))
        detail = problem[0] if isinstance(problem, list) else f"{next(iter(problem))}: {next(iter(problem.values()))[0]}"
        raise ValidationFailed(f"The promotion is not valid: {field}: {detail}", errors=errors)


# --- the promotions in force, as rules ----------------------------------------------------------

def active_rules() -> tuple[rules.PromotionRule, ...]:
    """The draft and active promotions, as immutable rules (kept a few seconds per process,
    loyalty/settings_cache.py: every purchase matches them in memory)."""
    return settings_cache.cached("promotions", _load_rules)


def _load_rules() -> tuple[rules.PromotionRule, ...]:
    horizon = clock.now() - LOADED_AFTER_END
    rows = db.session.scalars(sa.select(Promotion).where(
        Promotion.status.in_(("draft", "active")),
        sa.or_(Promotion.ends_at.is_(None), Promotion.ends_at > horizon)).order_by(Promotion.id)).all()
    return tuple(rules.rule_from_document(
        row.id, row.name, row.status, row.starts_at, row.ends_at, row.schedule, row.scope, row.effect,
        row.per_member, row.per_member_period, row.budget_points, row.stacking, row.priority) for row in rows)


settings_cache.watch(Promotion, "promotions")


class _Derived:
    """What each purchase would otherwise work out anew from the promotions in force: the rules by
    id, and those that depend on the member's tags or first purchase. Worked out once per loaded
    tuple of rules (a new tuple is loaded when the settings version moves)."""

    def __init__(self, loaded: tuple[rules.PromotionRule, ...]) -> None:
        self.loaded = loaded
        self.by_id = {promotion.id: promotion for promotion in loaded}
        self.by_member_facts = tuple(promotion for promotion in loaded
                                     if promotion.scope.tags or promotion.scope.first_purchase_only)


_derived = _Derived(())


def _derived_rules() -> _Derived:
    global _derived
    loaded = active_rules()
    derived = _derived
    if derived.loaded is not loaded:
        derived = _derived = _Derived(loaded)  # one assignment: a thread reading meanwhile sees either
    return derived


def needs_tags(store_id: str, channel: str | None, occurred_at: datetime, include_drafts: bool = False) -> bool:
    """Could a promotion scoped by tags apply to a purchase at this store, on this channel, at this
    time (whoever the member)? Then the purchase reads the member's tags with the account's lock
    (ledger.lock_account_and_tags); otherwise it reads none."""
    tags_scoped = [promotion for promotion in _derived_rules().by_member_facts if promotion.scope.tags]
    if not tags_scoped:
        return False
    where = rules.Basket(store_id=store_id, channel=channel or "store", amount=ZERO, items=(),
                         occurred_at=occurred_at)
    tz = settings().timezone
    return any(rules.where_in_scope(promotion, where) and rules.in_force(promotion, occurred_at, tz, include_drafts)
               for promotion in tags_scoped)


def basket_for(member: Member | None, store_id: str, channel: str | None, amount: Decimal,
               items: Iterable[Mapping[str, Any]] | None, occurred_at: datetime,
               include_drafts: bool = False, tags: frozenset[str] | None = None) -> rules.Basket:
    """The purchase as the promotions see it, before it is recorded. The member's tags are `tags`
    when the caller read them (with the account's lock, see `needs_tags`); whether this is their first purchase costs a query,
    asked only when a promotion in force for this store, channel and tier needs it (as do the tags
    when the caller has not read them)."""
    basket = _basket(store_id, channel, amount, items, occurred_at,
                     member.tier_code if member is not None else tiers.ladder()[0].code)
    if member is None:
        return basket
    open_ = _needing_member_facts(basket, include_drafts)
    first = True
    # These reads need none of the transaction's pending changes (settling the account's lots).
    with db.session.no_autoflush:
        if tags is None:
            tags = frozenset(db.session.scalars(sa.select(MemberTag.tag).where(MemberTag.member_id == member.id))) \
                if any(promotion.scope.tags for promotion in open_) else frozenset()
        if any(promotion.scope.first_purchase_only for promotion in open_):
            # Not read with the lock as the tags are: after waiting for the lock, that statement
            # would not see the purchase of a twin that held it, and both would be "first".
            first = not db.session.scalar(sa.select(sa.exists().where(Purchase.member_id == member.id)))
    return replace(basket, tags=tags, first_purchase=first)


def _basket(store_id: str, channel: str | None, amount: Decimal, items: Iterable[Mapping[str, Any]] | None,
            occurred_at: datetime, tier: str) -> rules.Basket:
    """A purchase as the pure rule sees it, before the member's tags and first purchase are known."""
    return rules.Basket(
        store_id=store_id, channel=channel or "store", amount=amount,
        items=tuple(rules.Item(sku=i["sku"], category=i.get("category"), amount=Decimal(i["amount"]))
                    for i in items or ()),
        occurred_at=occurred_at, tier=tier)


def _needing_member_facts(basket: rules.Basket, include_drafts: bool, derived: _Derived | None = None,
                          tz: str | None = None) -> list[rules.PromotionRule]:
    """The promotions in force for the basket's store, channel and tier that depend on the member's
    tags or first purchase."""
    tz = tz or settings().timezone
    return [promotion for promotion in (derived or _derived_rules()).by_member_facts
            if rules.where_in_scope(promotion, basket)
            and (not promotion.scope.tiers or basket.tier in promotion.scope.tiers)
            and rules.in_force(promotion, basket.occurred_at, tz, include_drafts)]


def plan(member_id: int | None, basket: rules.Basket, earning_rules: earning.EarningRules, lock: bool = False,
         include_drafts: bool = False) -> tuple[rules.Award, ...]:
    """The awards of `basket` for the member (None: a guest), limits and budgets applied. With `lock`
    (a real purchase, in its transaction, the member's account locked) the budgeted promotions' rows
    stay locked until the purchase commits; without, nothing is locked or written (a quote, or a
    purchase asking whether it gets anything before it is recorded)."""
    tz = settings().timezone
    matched = rules.matching(active_rules(), basket, earning_rules, tz, include_drafts)
    if not matched:
        return ()
    limited = [promotion for promotion, _, _ in matched if promotion.per_member is not None]
    budgeted = sorted(promotion.id for promotion, _, _ in matched if promotion.budget_points is not None)
    with db.session.no_autoflush:  # as in basket_for: past grants and budgets, not this purchase's changes
        used = _used(member_id, limited, basket.occurred_at, tz) if member_id is not None and limited else {}
        left = _budget_left(budgeted, lock) if budgeted else {}
    return rules.choose(matched, used, left)


def _used(member_id: int, promotions: Sequence[rules.PromotionRule], occurred_at: datetime,
          tz: str) -> dict[int, int]:
    """Grants this member had from each promotion in the period `occurred_at` falls in."""
    keys = [sa.and_(PromotionGrant.promotion_id == promotion.id,
                    PromotionGrant.period == rules.period_key(promotion, occurred_at, tz))
            for promotion in promotions]
    return dict(db.session.execute(
        sa.select(PromotionGrant.promotion_id, sa.func.count()).where(
            PromotionGrant.member_id == member_id, sa.or_(*keys)).group_by(PromotionGrant.promotion_id)).all())


def _budget_left(promotion_ids: Sequence[int], lock: bool) -> dict[int, Decimal | None]:
    query = sa.select(Promotion.id, Promotion.budget_points, Promotion.budget_used).where(
        Promotion.id.in_(promotion_ids)).order_by(Promotion.id)
    if lock:
        query = query.with_for_update()
    return {row.id: (None if row.budget_points is None else row.budget_points - row.budget_used)
            for row in db.session.execute(query)}


# --- an offline till's batch, set-based ------------------------------------------------------------

def plan_batch(store_id: str, purchases: Sequence[tuple[Member, int, Decimal, Any, datetime]],
               earning_rules: earning.EarningRules) -> list[tuple[rules.Award, ...]]:
    """`basket_for` and `plan` for the purchases of a batch (points/batch.py), each as if sent alone
    in the order given: [(member, purchase id, amount, items, occurred_at)], already inserted, with
    the members' accounts locked. The member's tags, their earlier purchases, the grants counting
    towards per-member limits and the budgets are read once for the batch (a query each, only when
    a promotion in force needs it), and the batch's own awards count as it goes: a member's second
    purchase in the batch is not a first one, and sees the limit the first used, as the next
    purchase sent alone would. The budgeted promotions' rows are locked (after the accounts, in id
    order, as a single purchase does) until the batch commits. Returns the awards, in order."""
    tz = settings().timezone
    derived = _derived_rules()
    if not derived.loaded:
        return [()] * len(purchases)
    baskets = [_basket(store_id, None, amount, items, occurred_at, member.tier_code)
               for member, _, amount, items, occurred_at in purchases]
    # Each cached read scans the session's pending objects (settings_cache.cached), hundreds in a
    # batch: the rules are read once here, not once per item.
    needing = [_needing_member_facts(basket, False, derived, tz) for basket in baskets]
    tags_of: dict[int, set[str]] = {}
    purchased_before: set[int] = set()
    with db.session.no_autoflush:
        wanted = {member.id for (member, *_), open_ in zip(purchases, needing)
                  if any(promotion.scope.tags for promotion in open_)}
        if wanted:
            for member_id, tag in db.session.execute(
                    sa.select(MemberTag.member_id, MemberTag.tag).where(MemberTag.member_id.in_(wanted))):
                tags_of.setdefault(member_id, set()).add(tag)
        wanted = {member.id for (member, *_), open_ in zip(purchases, needing)
                  if any(promotion.scope.first_purchase_only for promotion in open_)}
        if wanted:
            purchased_before = set(db.session.scalars(sa.select(Purchase.member_id).distinct().where(
                Purchase.member_id.in_(wanted),
                Purchase.id.not_in([purchase_id for _, purchase_id, *_ in purchases]))))
    matched = []
    seen: set[int] = set()  # members with a purchase earlier in the batch
    for (member, *_), basket in zip(purchases, baskets):
        first = member.id not in purchased_before and member.id not in seen
        seen.add(member.id)
        basket = replace(basket, tags=frozenset(tags_of.get(member.id, ())), first_purchase=first)
        matched.append(rules.matching(derived.loaded, basket, earning_rules, tz))
    keys = {(promotion.id, rules.period_key(promotion, basket.occurred_at, tz))
            for found, basket in zip(matched, baskets) for promotion, _, _ in found if promotion.per_member is not None}
    budgeted = sorted({promotion.id for found in matched for promotion, _, _ in found
                       if promotion.budget_points is not None})
    with db.session.no_autoflush:
        used = _used_by_members({member.id for member, *_ in purchases}, keys) if keys else {}
        left = _budget_left(budgeted, lock=True) if budgeted else {}
    plans = []
    for (member, *_), basket, found in zip(purchases, baskets, matched):
        periods = {promotion.id: rules.period_key(promotion, basket.occurred_at, tz)
                   for promotion, _, _ in found if promotion.per_member is not None}
        awards = rules.choose(found, {pid: used.get((member.id, pid, period), 0) for pid, period in periods.items()},
                              left)
        for award in awards:
            if award.promotion_id in periods:
                key = (member.id, award.promotion_id, periods[award.promotion_id])
                used[key] = used.get(key, 0) + 1
            if left.get(award.promotion_id) is not None:
                left[award.promotion_id] -= award.points
        plans.append(awards)
    return plans


def _used_by_members(member_ids: set[int], keys: set[tuple[int, str]]) -> dict[tuple[int, int, str], int]:
    """`_used` for many members at once: {(member id, promotion id, period): grants}."""
    rows = db.session.execute(
        sa.select(PromotionGrant.member_id, PromotionGrant.promotion_id, PromotionGrant.period, sa.func.count())
        .where(PromotionGrant.member_id.in_(member_ids),
               sa.or_(*(sa.and_(PromotionGrant.promotion_id == promotion_id, PromotionGrant.period == period)
                        for promotion_id, period in sorted(keys))))
        .group_by(PromotionGrant.member_id, PromotionGrant.promotion_id, PromotionGrant.period))
    return {(member_id, promotion_id, period): count for member_id, promotion_id, period, count in rows}


def grant_batch(grants: Sequence[tuple[int, int, datetime, rules.Award, int, int]], now: datetime) -> None:
    """`grant`'s rows for a batch, whose `bonus` entries and lots points/batch.py wrote with the
    purchases' own: [(purchase id, member id, occurred_at, award, entry id, lot id)]. One multi-row
    INSERT of the grants, and one conditional UPDATE per budgeted promotion for what the batch gave."""
    if not grants:
        return
    tz = settings().timezone
    by_id = _derived_rules().by_id
    db.session.execute(sa.insert(PromotionGrant), [
        dict(promotion_id=award.promotion_id, purchase_id=purchase_id, member_id=member_id,
             period=_period(by_id.get(award.promotion_id), occurred_at, tz),
             qualifying_amount=award.qualifying_amount, points=award.points, entry_id=entry_id, lot_id=lot_id,
             created_at=now)
        for purchase_id, member_id, occurred_at, award, entry_id, lot_id in grants])
    spent: dict[int, Decimal] = {}
    for *_, award, _, _ in grants:
        promotion = by_id.get(award.promotion_id)
        if promotion is not None and promotion.budget_points is not None:
            spent[award.promotion_id] = spent.get(award.promotion_id, ZERO) + award.points
    for promotion_id, points in sorted(spent.items()):
        _spend_budget(promotion_id, points)


# --- inside a purchase's and a refund's transaction ---------------------------------------------

def grant(account: Account, purchase: Purchase, awards: Iterable[rules.Award], now: datetime,
          available_at: datetime, expires_at: datetime | None) -> None:
    """Write the awards of a purchase: one `bonus` entry (and lot) each, referencing the promotion,
    and the budgets they used."""
    tz = settings().timezone
    by_id = _derived_rules().by_id
    for award in awards:
        promotion = by_id.get(award.promotion_id)
        entry, lot = ledger.credit(
            account, "bonus", award.points, f"Promotion {award.name}: purchase {purchase.receipt_no}",
            ("promotion", award.promotion_id), now, available_at=available_at, expires_at=expires_at)
        db.session.add(PromotionGrant(
            promotion_id=award.promotion_id, purchase_id=purchase.id, member_id=account.member_id,
            period=_period(promotion, purchase.occurred_at, tz),
            qualifying_amount=award.qualifying_amount, points=award.points, entry=entry, lot=lot,
            created_at=now))
        if promotion is not None and promotion.budget_points is not None:
            _spend_budget(award.promotion_id, award.points)


def _period(promotion: rules.PromotionRule | None, occurred_at: datetime, tz: str) -> str:
    """The period a grant counts in (a promotion no longer loaded, stopped meanwhile: the whole of it)."""
    return rules.period_key(promotion, occurred_at, tz) if promotion else "all"


def _spend_budget(promotion_id: int, points: Decimal) -> None:
    """Add to the counter only while it stays within the budget: under the row lock `plan` took this
    always succeeds; should anything ever go around that lock, the purchase fails rather than overspend."""
    changed = rows_changed(
        sa.update(Promotion).where(Promotion.id == promotion_id,
                                   sa.or_(Promotion.budget_points.is_(None),
                                          Promotion.budget_used + points <= Promotion.budget_points))
        .values(budget_used=Promotion.budget_used + points))
    if changed != 1:
        raise Conflict("A promotion's budget ran out while this purchase was recorded; send it again.")


def on_refund(account: Account, purchase: Purchase, refund: Refund, refunded_before: Decimal,
              now: datetime) -> Decimal:
    """Take each promotion's points of the purchase back pro rata to the money refunded, like its base
    points: from the grant's own lot first, then from available points, then as debt. Points of the
    grant that expired already count as taken back. Returns the points taken."""
    taken_total = ZERO
    grants = db.session.scalars(sa.select(PromotionGrant).where(PromotionGrant.purchase_id == purchase.id)
                                .order_by(PromotionGrant.id)).all()
    for row in grants:
        due = earning.reversal_points(row.points, purchase.amount, refunded_before, refund.amount,
                                      row.points_reversed)
        if due <= 0:
            continue
        taken = due - min(due, _expired_not_yet_counted(row))
        if taken > 0:
            ledger.claw_back(account, taken, f"Refund {refund.refund_no}: points of promotion {row.promotion_id} "
                                             f"on purchase {purchase.receipt_no}", ("refund", refund.id), now,
                             first_lot=row.lot)
        account.lifetime_earned -= due - taken  # the expired part was not earned either
        row.points_reversed += due
        row.points_clawed_back += taken
        taken_total += taken
    return taken_total


def _expired_not_yet_counted(row: PromotionGrant) -> Decimal:
    if row.lot.status != "expired":
        return ZERO
    expired = -db.session.execute(sa.select(sa.func.coalesce(sa.func.sum(Entry.points), 0)).where(
        Entry.member_id == row.member_id, Entry.type == "expire", Entry.reference_type == "lot",
        Entry.reference_id == str(row.lot_id))).scalar_one()  # a sum is one row, never None here
    return max(expired - (row.points_reversed - row.points_clawed_back), ZERO)


def purchase_awards(purchase_id: int) -> Sequence[sa.Row[tuple[int, str, Decimal]]]:
    """What promotions gave a purchase: [(promotion id, name, points)], in the order granted."""
    return db.session.execute(
        sa.select(PromotionGrant.promotion_id, Promotion.name, PromotionGrant.points)
        .join(Promotion, Promotion.id == PromotionGrant.promotion_id)
        .where(PromotionGrant.purchase_id == purchase_id).order_by(PromotionGrant.id)).all()
