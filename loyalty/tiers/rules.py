"""Which tier a member's window qualifies for, and what is still needed: pure functions.

Each rule the nightly recompute applies to everyone at once has its SQL twin here, beside it, under
the same name with `_sql` (`met_by_sql`, `tier_for_sql`, `target_rank_sql`): expressions built
from the recompute's columns, which run nothing themselves. tests/service/test_tier_rules_sql.py
checks on generated ladders and windows that each pair gives the same answers.
"""
import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from loyalty.database import Money

ZERO_MONEY = Decimal("0.00")
MODES = ("all", "any")
# Bounds on the benefits marketing may set (PUT /tiers/{code} answers 422 beyond them). The default
# ladder tops out at 2x and 100 birthday points; 10x keeps a purchase's points (amount x points per
# unit x multiplier, see points.rules.MAX_POINTS_PER_UNIT) far from any overflow, and a birthday
# gift of 100 000 points (1 000.00 at the default till rate) is more than any programme gives.
MAX_EARN_MULTIPLIER = Decimal("10")
MAX_BIRTHDAY_POINTS = Decimal("100000")


@dataclass(frozen=True)
class TierRule:
    code: str
    rank: int
    spend: Decimal = ZERO_MONEY  # qualifying spend over the window
    activities: int = 0  # activity count over the window
    mode: str = "all"  # "all": both thresholds; "any": either one
    earn_multiplier: Decimal = Decimal("1")
    name: str = ""
    birthday_points: Decimal = Decimal("0")
    service_level: str = ""
    perks: tuple[str, ...] = field(default=(), compare=False)

    def met_by(self, spend: Decimal, activities: int) -> bool:
        """Does a window of `spend` and `activities` meet this tier's qualification? Mode "all":
        both thresholds; mode "any": either threshold above 0 (a 0 is not a way in), or both if
        neither is. `met_by_sql` is the same rule on SQL expressions (the recompute's columns)."""
        spend_met, activities_met = spend >= self.spend, activities >= self.activities
        if self.mode == "any" and (self.spend > 0 or self.activities > 0):
            return (self.spend > 0 and spend_met) or (self.activities > 0 and activities_met)
        return spend_met and activities_met

    def met_by_sql(self, spend: Any, activities: Any) -> sa.ColumnElement[bool]:
        spend_met = spend >= sa.literal(self.spend, Money())
        activities_met = activities >= self.activities
        if self.mode == "any" and (self.spend > 0 or self.activities > 0):
            ways = ([spend_met] if self.spend > 0 else []) + ([activities_met] if self.activities > 0 else [])
            return sa.or_(*ways)
        return sa.and_(spend_met, activities_met)


# The programme's default ladder (DESIGN.md): spend over the window. Marketing can add activity
# thresholds (interaction frequency) with mode "all" (both) or "any" (either).
DEFAULT_LADDER = (
    TierRule("ordinary", 0, Decimal("0.00"), 0, "all", Decimal("1"), "普通", Decimal("0"),
             "Standard service", ()),
    TierRule("silver", 1, Decimal("3000.00"), 0, "all", Decimal("1.2"), "白银", Decimal("20"),
             "Priority queue at the service desk", ("free gift wrapping",)),
    TierRule("gold", 2, Decimal("10000.00"), 0, "all", Decimal("1.5"), "黄金", Decimal("50"),
             "After-sales answered within 4 hours", ("free gift wrapping", "free delivery")),
    TierRule("diamond", 3, Decimal("30000.00"), 0, "all", Decimal("2"), "钻石", Decimal("100"),
             "After-sales answered within 1 hour",
             ("free gift wrapping", "free delivery", "dedicated adviser")),
)


# The SQL twins take and answer SQLAlchemy expressions (columns, literals); `Any` in their signatures.
Sql = Any


def ranked(tiers: Iterable[TierRule]) -> list[TierRule]:
    return sorted(tiers, key=lambda tier: tier.rank)


def tier_for(spend: Decimal, activities: int, tiers: Iterable[TierRule]) -> TierRule:
    """The highest-ranked tier whose qualification the window meets (the lowest tier always).
    `tier_for_sql` is the same rule in SQL, answering the tier's position on the ladder (0 = the
    lowest), so that "down one tier" is position - 1 whatever the ranks."""
    ordered = ranked(tiers)
    best = ordered[0]
    for tier in ordered[1:]:
        if tier.met_by(spend, activities):
            best = tier
    return best


def tier_for_sql(spend: Sql, activities: Sql, tiers: Iterable[TierRule]) -> Sql:
    ordered = ranked(tiers)
    return sa.case(*[(tier.met_by_sql(spend, activities), position)
                     for position, tier in reversed(list(enumerate(ordered))) if position > 0], else_=0)


def position_sql(code: Sql, tiers: Iterable[TierRule]) -> Sql:
    """The position on the ladder (0 = the lowest) of the tier a `code` column names; 0 if none."""
    return sa.case({tier.code: position for position, tier in enumerate(ranked(tiers))}, value=code, else_=0)


def code_sql(position: Sql, tiers: Iterable[TierRule]) -> Sql:
    """The code of the tier at a `position` column (the inverse of `position_sql`)."""
    return sa.case({position_: tier.code for position_, tier in enumerate(ranked(tiers))}, value=position)


def next_tier(current_code: str | None, tiers: Iterable[TierRule]) -> TierRule | None:
    ordered = ranked(tiers)
    codes = [tier.code for tier in ordered]
    position = codes.index(current_code) if current_code in codes else 0
    return ordered[position + 1] if position + 1 < len(ordered) else None


def shortfall(tier: TierRule, spend: Decimal,
              activities: int) -> tuple[Decimal | None, int | None]:
    """What is still missing to meet `tier`: (spend needed, activities needed); zeros once met.

    With mode "any" either figure alone would do, so both are reported as alternatives."""
    if tier.met_by(spend, activities):
        return ZERO_MONEY, 0
    spend_needed: Decimal | None = max(tier.spend - spend, ZERO_MONEY)
    activities_needed: int | None = max(tier.activities - activities, 0)
    if tier.mode == "any":  # a threshold of 0 is not one of the ways in
        spend_needed = spend_needed if tier.spend > 0 else None
        activities_needed = activities_needed if tier.activities > 0 else None
    return spend_needed, activities_needed


def target_rank(current: int, qualified: int, protected: bool, max_drop: int, floor: int = 0) -> int:
    """The recompute's rule: up to what the window earns at once; down only when the tier is no
    longer protected, by at most `max_drop` ranks per recompute, and never below `floor` (the
    tier an admin guaranteed, while the guarantee lasts). `target_rank_sql` is the same rule on
    SQL expressions (positions on the ladder, `protected` a condition)."""
    if qualified >= current or protected:
        return max(qualified, current)
    return max(qualified, current - max_drop, min(floor, current))


def target_rank_sql(current: Sql, qualified: Sql, protected: Sql, max_drop: Sql, floor: Sql = 0) -> Sql:
    dropped = _greatest(qualified, current - max_drop, sa.case((floor < current, floor), else_=current))
    return sa.case((qualified >= current, qualified), (protected, current), else_=dropped)


def _greatest(*values: Sql) -> Sql:
    """GREATEST() of a few expressions, written as CASE so SQLite and PostgreSQL agree."""
    result = values[0]
    for value in values[1:]:
        result = sa.case((value > result, value), else_=result)
    return result


def validate_ladder(tiers: Sequence[TierRule]) -> list[str]:
    """Problems with a tier ladder, as sentences: ranks unique, thresholds rising, multipliers ≥ 1."""
    problems = []
    ordered = ranked(tiers)
    ranks = [tier.rank for tier in ordered]
    if len(set(ranks)) != len(ranks):
        problems.append("Two tiers share a rank; each tier needs its own.")
    lowest = ordered[0]
    if lowest.spend != 0 or lowest.activities != 0:
        problems.append(f"The {lowest.code} tier is where every member starts: its spend and "
                        "activities must both be 0.")
    for lower, higher in zip(ordered[1:], ordered[2:]):
        # A threshold of 0 means the tier does not ask for that figure.
        pairs = [(low, high) for low, high in ((lower.spend, higher.spend),
                                               (lower.activities, higher.activities)) if high > 0]
        if any(0 < high < low for low, high in pairs):
            problems.append(f"The {higher.code} thresholds must not be below the {lower.code} ones.")
        elif not any(high > low for low, high in pairs):
            problems.append(f"The {higher.code} thresholds must be above the {lower.code} ones.")
    for tier in ordered[1:]:
        if tier.spend == 0 and tier.activities == 0:
            problems.append(f"The {tier.code} tier needs a spend or an activity threshold above 0.")
    for lower, higher in zip(ordered, ordered[1:]):
        if higher.earn_multiplier < lower.earn_multiplier:
            problems.append(f"The {higher.code} earn multiplier must not be below the {lower.code} one.")
    for tier in ordered:
        if tier.earn_multiplier < 1:
            problems.append(f"The {tier.code} earn multiplier must be at least 1.")
        if tier.earn_multiplier > MAX_EARN_MULTIPLIER:
            problems.append(f"The {tier.code} earn multiplier must be at most {MAX_EARN_MULTIPLIER}.")
        if not 0 <= tier.birthday_points <= MAX_BIRTHDAY_POINTS:
            problems.append(f"The {tier.code} birthday points must be 0 to {MAX_BIRTHDAY_POINTS}.")
        if tier.mode not in MODES:
            problems.append(f"The {tier.code} qualification mode must be 'all' or 'any'.")
    return problems


def months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (the month's last day if it is shorter)."""
    month_index = day.year * 12 + day.month - 1 - months
    year, month = divmod(month_index, 12)
    month += 1
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))


def months_after(day: date, months: int) -> date:
    return months_before(day, -months)
