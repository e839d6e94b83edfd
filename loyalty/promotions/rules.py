"""Which promotions apply to a basket, and what each gives: pure functions over immutable values
(no app, no database; tested in tests/unit). The purchase and `POST /promotions/simulate` both
come here through points.service.quote_purchase, so what a till is told and what it credits cannot
disagree.

A promotion's points come on top of the earning rules:
- `multiplier` v: the base points of what qualifies, (v - 1) times more: 2 doubles them. Base
  points are those of the earning rules before the tier multiplier (which applies to base points only);
- `bonus` p: p points for a qualifying purchase;
- `per_amount` p per a: p points per a of qualifying amount, pro rata, rounded down to 0.01.

The qualifying amount is the part of the purchase that earns (earning rules' exclusions applied),
or, when the scope names categories or SKUs, the part of it in items that match them.
"""
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from loyalty.points import rules as earning

ZERO = Decimal("0.00")
EFFECTS = ("multiplier", "bonus", "per_amount")
PERIODS = ("day", "week", "month", "promotion")
STACKING = ("stack", "exclusive")
MAX_MULTIPLIER = Decimal("10")


@dataclass(frozen=True)
class Schedule:
    days_of_week: tuple[int, ...] = ()  # 1 = Monday .. 7 = Sunday; empty: every day
    start: time | None = None  # local time, inclusive
    until: time | None = None  # local time, exclusive; before `start`: the window crosses midnight


@dataclass(frozen=True)
class Scope:
    stores: frozenset = frozenset()
    channels: frozenset = frozenset()  # case-folded
    tiers: frozenset = frozenset()
    tags: frozenset = frozenset()
    categories: frozenset = frozenset()  # case-folded
    skus: frozenset = frozenset()  # case-folded
    min_amount: Decimal | None = None
    first_purchase_only: bool = False

    @property
    def by_items(self):
        return bool(self.categories or self.skus)


@dataclass(frozen=True)
class Effect:
    type: str
    value: Decimal = Decimal("1")  # multiplier
    points: Decimal = ZERO  # bonus, per_amount
    per: Decimal = Decimal("1")  # per_amount


@dataclass(frozen=True)
class PromotionRule:
    id: int
    name: str
    status: str  # draft | active (stopped ones are never loaded)
    starts_at: datetime
    ends_at: datetime | None
    schedule: Schedule | None
    scope: Scope
    effect: Effect
    per_member: int | None = None
    per_member_period: str | None = None
    budget_points: Decimal | None = None
    stacking: str = "stack"
    priority: int = 0


@dataclass(frozen=True)
class Item:
    sku: str
    category: str | None
    amount: Decimal


@dataclass(frozen=True)
class Basket:
    """A purchase as the promotions see it."""

    store_id: str
    channel: str | None
    amount: Decimal
    items: tuple[Item, ...]
    occurred_at: datetime
    tier: str | None = None
    tags: frozenset = frozenset()
    first_purchase: bool = True


@dataclass(frozen=True)
class Award:
    promotion_id: int
    name: str
    points: Decimal
    qualifying_amount: Decimal


# --- time -----------------------------------------------------------------------------------------

def in_force(promotion: PromotionRule, at: datetime, tz_name: str, include_drafts=False):
    """Is the promotion on at instant `at`: its status, its dates, its weekly schedule in local time?"""
    if promotion.status != "active" and not (include_drafts and promotion.status == "draft"):
        return False
    if at < promotion.starts_at or (promotion.ends_at is not None and at >= promotion.ends_at):
        return False
    return promotion.schedule is None or on_schedule(promotion.schedule, at, tz_name)


def on_schedule(schedule: Schedule, at: datetime, tz_name: str):
    """A window from `start` until `until` on the given days, in local time. A window that crosses
    midnight (22:00 until 02:00) belongs to the day it starts: Friday's runs into Saturday night."""
    local = at.astimezone(ZoneInfo(tz_name))
    clock, day = local.time().replace(tzinfo=None), local.isoweekday()
    start, until = schedule.start or time.min, schedule.until
    if until is not None and until <= start:  # crosses midnight
        if clock >= start:
            window_day = day
        elif clock < until:
            window_day = (local.date() - timedelta(days=1)).isoweekday()
        else:
            return False
    else:
        if clock < start or (until is not None and clock >= until):
            return False
        window_day = day
    return not schedule.days_of_week or window_day in schedule.days_of_week


# --- scope ----------------------------------------------------------------------------------------

def fold(code):
    return code.casefold() if isinstance(code, str) else code


def qualifying_amount(promotion: PromotionRule, basket: Basket, rules: earning.EarningRules):
    """The part of the basket that counts for this promotion (0.00 when none does)."""
    scope = promotion.scope
    if not scope.by_items:
        return earning.eligible_amount(basket.amount, _item_dicts(basket.items), rules)
    excluded_skus, excluded_categories = earning.folded(rules.excluded_skus), earning.folded(rules.excluded_categories)
    total = ZERO
    for item in basket.items:
        sku, category = fold(item.sku), fold(item.category)
        if sku in excluded_skus or category in excluded_categories:
            continue  # what earns no points earns no promotion either
        if (not scope.skus or sku in scope.skus) and (not scope.categories or category in scope.categories):
            total += item.amount
    return min(total, basket.amount).quantize(earning.CENT)


def in_scope(promotion: PromotionRule, basket: Basket):
    """The keys of the scope that do not depend on the amount: ANDed between keys, ORed inside one."""
    scope = promotion.scope
    return (where_in_scope(promotion, basket)
            and (not scope.tiers or basket.tier in scope.tiers)
            and (not scope.tags or bool(scope.tags & basket.tags))
            and (not scope.first_purchase_only or basket.first_purchase))


def where_in_scope(promotion: PromotionRule, basket: Basket):
    """The keys of the scope that the till knows before it knows the member: store and channel."""
    scope = promotion.scope
    return ((not scope.stores or basket.store_id in scope.stores)
            and (not scope.channels or fold(basket.channel) in scope.channels))


# --- points ---------------------------------------------------------------------------------------

def gross_points(promotion: PromotionRule, qualifying: Decimal, rules: earning.EarningRules):
    """What the promotion gives on `qualifying`, before limits and budget."""
    effect = promotion.effect
    if qualifying <= 0:
        return ZERO
    if effect.type == "multiplier":
        base = earning.floor_points(qualifying * rules.points_per_unit)
        return max(earning.floor_points(base * (effect.value - 1)), ZERO)
    if effect.type == "bonus":
        return effect.points.quantize(earning.CENT)
    if effect.type == "per_amount":
        return earning.floor_points(qualifying * effect.points / effect.per)
    raise ValueError(f"unknown effect {effect.type!r}")


def matching(promotions, basket: Basket, rules: earning.EarningRules, tz_name: str, include_drafts=False):
    """[(promotion, qualifying amount, points)] of the promotions in force for the basket, in scope,
    over their minimum, giving something; before per-member limits, budgets and stacking."""
    if basket.amount < rules.min_amount:
        return []  # below the programme's minimum a purchase earns nothing, promotions included
    found = []
    for promotion in promotions:
        if not in_force(promotion, basket.occurred_at, tz_name, include_drafts) or not in_scope(promotion, basket):
            continue
        qualifying = qualifying_amount(promotion, basket, rules)
        minimum = promotion.scope.min_amount
        if qualifying <= 0 or (minimum is not None and qualifying < minimum):
            continue
        points = gross_points(promotion, qualifying, rules)
        if points > 0:
            found.append((promotion, qualifying, points))
    return found


def choose(matched, used=None, budget_left=None):
    """The awards, from `matching`'s answer: a promotion whose per-member limit is used up
    (`used`: promotion id -> grants in the member's current period) gives nothing; one with a budget
    gives at most what is left of it (`budget_left`: promotion id -> points). Then stacking: if an
    exclusive promotion gives anything, the one with the highest priority (then the most points,
    then the oldest) applies alone; otherwise every stacking promotion adds up."""
    used, budget_left = used or {}, budget_left or {}
    awards = []
    for promotion, qualifying, points in matched:
        if promotion.per_member is not None and used.get(promotion.id, 0) >= promotion.per_member:
            continue
        if promotion.budget_points is not None:
            points = min(points, max(budget_left.get(promotion.id, promotion.budget_points), ZERO))
        if points > 0:
            awards.append((promotion, Award(promotion.id, promotion.name, points, qualifying)))
    exclusive = [pair for pair in awards if pair[0].stacking == "exclusive"]
    if exclusive:
        _, best = max(exclusive, key=lambda pair: (pair[0].priority, pair[1].points, -pair[0].id))
        return (best,)
    ordered = sorted(awards, key=lambda pair: (-pair[0].priority, pair[0].id))
    return tuple(award for _, award in ordered)


def decide(promotions, basket, rules, tz_name, used=None, budget_left=None, include_drafts=False):
    """`matching` then `choose`: the awards of a basket."""
    return choose(matching(promotions, basket, rules, tz_name, include_drafts), used, budget_left)


def period_key(promotion: PromotionRule, occurred_at: datetime, tz_name: str):
    """The window a grant counts in for the per-member limit: the local day, ISO week, month, or the
    whole promotion."""
    period = promotion.per_member_period or "promotion"
    if period == "promotion":
        return "all"
    return earning.cap_period_key(occurred_at, period, tz_name)


def _item_dicts(items):
    return [{"sku": item.sku, "category": item.category, "amount": item.amount} for item in items] or None


# --- documents ------------------------------------------------------------------------------------

def rule_from_document(id_, name, status, starts_at, ends_at, schedule, scope, effect, per_member,
                       per_member_period, budget_points, stacking, priority):
    """A PromotionRule from the stored columns (JSON documents with decimals as strings)."""
    schedule_rule = None
    if schedule:
        schedule_rule = Schedule(days_of_week=tuple(schedule.get("days_of_week") or ()),
                                 start=_time(schedule.get("from")), until=_time(schedule.get("until")))
    scope = scope or {}
    scope_rule = Scope(
        stores=frozenset(scope.get("stores") or ()),
        channels=frozenset(fold(c) for c in scope.get("channels") or ()),
        tiers=frozenset(scope.get("tiers") or ()),
        tags=frozenset(scope.get("tags") or ()),
        categories=frozenset(fold(c) for c in scope.get("categories") or ()),
        skus=frozenset(fold(s) for s in scope.get("skus") or ()),
        min_amount=None if scope.get("min_amount") is None else Decimal(scope["min_amount"]),
        first_purchase_only=bool(scope.get("first_purchase_only")))
    effect_rule = Effect(type=effect["type"],
                         **{key: Decimal(effect[key]) for key in ("value", "points", "per") if key in effect})
    return PromotionRule(id=id_, name=name, status=status, starts_at=starts_at, ends_at=ends_at,
                         schedule=schedule_rule, scope=scope_rule, effect=effect_rule, per_member=per_member,
                         per_member_period=per_member_period, budget_points=budget_points,
                         stacking=stacking, priority=priority)


def _time(text):
    if not text:
        return None
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))
