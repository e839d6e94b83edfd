"""Earning rules as pure functions: no app, no database. Tested in tests/unit."""
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from loyalty import clock

CENT = Decimal("0.01")
EXPIRY_POLICIES = ("never", "days_after_available", "end_of_month", "end_of_year")
CAP_PERIODS = ("day", "week", "month", "year")

# Bounds on what marketing may set (PUT /earning-rules answers 422 beyond them). Each is far above
# any real programme (DESIGN.md's default is 1 point per yuan, 0.5 point per sign-in, 100 points to
# pay 1 yuan) and low enough that no arithmetic on a valid purchase can overflow: the largest
# amount (1e8) x MAX_POINTS_PER_UNIT x the largest tier multiplier (10) is 1e11 points, far inside
# a BIGINT of hundredths (9.2e16 points) and a Decimal context of 28 digits.
MAX_POINTS_PER_UNIT = Decimal("100")  # a hundred times the default: beyond it, a typo (1e9)
MAX_ACTIVITY_POINTS = Decimal("10000")  # one sign-in or review is never worth a big purchase's points
MAX_ACTIVITY_CAP = 1000  # rewarded events of one type per period: more is no cap at all
MAX_PENDING_DAYS = 365  # a return window longer than a year holds points nobody can use
MAX_EXPIRY_DAYS = 3650  # ten years; "never" is its own policy
MAX_EXCLUDED_CODES = 500  # excluded categories or SKUs, each list
# The till rate: at least 1 point pays 1.00 (a point is worth at most one currency unit, against
# 0.01 by default, so a mistyped rate cannot turn 10 points into 1 000.00); at most 10 000 points
# pay 1.00 (100 points a cent: payments stay whole cents for ordinary point counts).
MIN_PAYMENT_POINTS_PER_UNIT = Decimal("1")
MAX_PAYMENT_POINTS_PER_UNIT = Decimal("10000")


@dataclass(frozen=True)
class ActivityType:
    type: str
    points: Decimal
    cap: int | None = None  # rewarded events per period; None = no cap
    cap_period: str | None = None
    description: str = ""


@dataclass(frozen=True)
class EarningRules:
    points_per_unit: Decimal = Decimal("1")
    min_amount: Decimal = Decimal("0.00")
    excluded_categories: tuple[str, ...] = ()
    excluded_skus: tuple[str, ...] = ()
    pending_days: int = 0
    expiry_policy: str = "days_after_available"
    expiry_days: int = 365
    payment_points_per_unit: Decimal = Decimal("100")
    activities: tuple["ActivityType", ...] = field(default_factory=lambda: DEFAULT_ACTIVITIES)

    def activity(self, type_name: str) -> ActivityType | None:
        return next((a for a in self.activities if a.type == type_name), None)

    def to_document(self) -> dict[str, Any]:
        """A JSON-safe dict: decimals as strings so nothing passes through a float."""
        doc = asdict(self)
        for key in ("points_per_unit", "min_amount", "payment_points_per_unit"):
            doc[key] = str(doc[key])
        doc["excluded_categories"] = list(self.excluded_categories)
        doc["excluded_skus"] = list(self.excluded_skus)
        doc["activities"] = [dict(asdict(a), points=str(a.points)) for a in self.activities]
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> "EarningRules":
        return cls(
            points_per_unit=Decimal(str(doc["points_per_unit"])),
            min_amount=Decimal(str(doc["min_amount"])),
            excluded_categories=tuple(doc.get("excluded_categories", ())),
            excluded_skus=tuple(doc.get("excluded_skus", ())),
            pending_days=int(doc["pending_days"]),
            expiry_policy=doc["expiry_policy"],
            expiry_days=int(doc.get("expiry_days") or 0),
            payment_points_per_unit=Decimal(str(doc["payment_points_per_unit"])),
            activities=tuple(
                ActivityType(
                    type=a["type"], points=Decimal(str(a["points"])), cap=a.get("cap"),
                    cap_period=a.get("cap_period"), description=a.get("description", ""),
                )
                for a in doc.get("activities", ())
            ),
        )


DEFAULT_ACTIVITIES: tuple[ActivityType, ...] = (
    ActivityType("sign_in", Decimal("0.5"), cap=1, cap_period="day", description="Daily sign-in"),
    ActivityType("share", Decimal("0.5"), cap=3, cap_period="day", description="Share to a friend"),
    ActivityType("review", Decimal("2"), cap=5, cap_period="month", description="Product review"),
)


def floor_points(value: Decimal | int | str) -> Decimal:
    """Points are rounded down to the hundredth: a member never gets a fraction we did not earn."""
    return Decimal(value).quantize(CENT, rounding=ROUND_DOWN)


def eligible_amount(amount: Decimal, items: Sequence[Mapping[str, Any]] | None, rules: EarningRules) -> Decimal:
    """The part of a purchase that earns: the amount less items in excluded categories or SKUs.

    Codes compare case-folded: a till sending `TOBACCO` or `Tobacco` must not earn on what
    marketing excluded as `tobacco`."""
    if not items:
        return amount
    skus, categories = folded(rules.excluded_skus), folded(rules.excluded_categories)
    excluded = sum(
        (Decimal(item["amount"]) for item in items
         if _fold(item.get("sku")) in skus or _fold(item.get("category")) in categories),
        Decimal("0"),
    )
    return max(amount - excluded, Decimal("0")).quantize(CENT)


def folded(codes: Iterable[str]) -> frozenset[str]:
    """A set of category or SKU codes compared case-insensitively (str.casefold: ß is ss)."""
    return frozenset(_fold(code) for code in codes)


def _fold(code: Any) -> Any:
    return code.casefold() if isinstance(code, str) else code


def purchase_points(amount: Decimal, items: Sequence[Mapping[str, Any]] | None, rules: EarningRules,
                    multiplier: Decimal = Decimal("1")) -> tuple[Decimal, Decimal]:
    """(eligible amount, points) for a purchase. Below the minimum amount nothing is earned."""
    if amount < rules.min_amount:
        return Decimal("0.00"), Decimal("0.00")
    eligible = eligible_amount(amount, items, rules)
    return eligible, floor_points(eligible * rules.points_per_unit * multiplier)


def reversal_points(points_earned: Decimal, amount: Decimal, refunded_before: Decimal, refund_amount: Decimal,
                    reversed_before: Decimal) -> Decimal:
    """Points to claw back for one refund, pro rata to the money refunded.

    Computed on the cumulative refunded amount, so several partial refunds add up to exactly the
    points earned when the whole amount is refunded, never more.
    """
    if amount <= 0:
        return Decimal("0.00")
    refunded_total = refunded_before + refund_amount
    if refunded_total >= amount:
        due_total = points_earned
    else:
        due_total = floor_points(points_earned * refunded_total / amount)
    return max(due_total - reversed_before, Decimal("0.00"))


def available_at(occurred_at: datetime, rules: EarningRules) -> datetime:
    return occurred_at + timedelta(days=rules.pending_days)


def expires_at(available: datetime, earned_at: datetime, rules: EarningRules, tz_name: str) -> datetime | None:
    """When a lot expires: an exclusive UTC bound at the end of a local day, or None for never."""
    policy = rules.expiry_policy
    if policy == "never":
        return None
    if policy == "days_after_available":
        last_day = clock.local_date(available, tz_name) + timedelta(days=rules.expiry_days)
        return clock.end_of_local_day(last_day, tz_name)
    # The period of earning, but never one that has ended before the points are available: a
    # till syncing late, a backdated sign-in or a return window must not credit expired points.
    earned = clock.local_date(max(earned_at, available), tz_name)
    if policy == "end_of_month":
        first_of_next = date(earned.year + earned.month // 12, earned.month % 12 + 1, 1)
        return clock.start_of_local_day(first_of_next, tz_name)
    if policy == "end_of_year":
        return clock.start_of_local_day(date(earned.year + 1, 1, 1), tz_name)
    raise ValueError(f"unknown expiry policy {policy!r}")


def cap_period_key(occurred_at: datetime, period: str | None, tz_name: str) -> str:
    """The label of the cap window an event falls in, in local time: 2026-11-23, 2026-W48, 2026-11."""
    day = clock.local_date(occurred_at, tz_name)
    if period == "day" or period is None:
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{day.year}-{day.month:02d}"
    if period == "year":
        return str(day.year)
    raise ValueError(f"unknown cap period {period!r}")


def payment_money_value(points: Decimal, rules: EarningRules) -> Decimal | None:
    """The money a number of points pays, or None when it is not a whole number of cents."""
    value = points / rules.payment_points_per_unit
    if value != value.quantize(CENT):
        return None
    return value.quantize(CENT)


def breakdown_json(lines: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A purchase's breakdown lines as stored (purchases.breakdown): points as decimal strings."""
    return [{**line, "points": str(line["points"])} for line in lines]
