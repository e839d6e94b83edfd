"""Marketing's view of the members: segments (lifecycle stage, value segment, tier, tag), tags,
and the programme's figures (members by tier and stage, the points liability, the flows of the
last 30 days). Every report is a few aggregate queries, never a query per member."""
import csv
import io
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from loyalty import audit, clock
from loyalty.database import Money, Points, transaction
from loyalty.errors import NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members import privacy
from loyalty.members.lookup import member_or_404
from loyalty.members.models import Member
from loyalty.points.models import Account, Entry, Lot, Purchase
from loyalty.points.settings import current_rules
from loyalty.referrals.service import active_campaign, campaign_stats
from loyalty.segments import figures
from loyalty.segments.models import MemberTag
from loyalty.tiers.service import ladder
from loyalty.config import settings

STAGES = ("potential", "new", "active", "dormant", "churned")
VALUE_SEGMENTS = ("high_value", "potential", "low_value", "at_risk")
TAG = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,39}$")
CSV_PAGE = 1000
CSV_COLUMNS = ("member_no", "name", "phone", "tier", "lifecycle_stage", "value_segment",
               "available_points", "spend_12_months", "last_purchase_at")


# --- tags -----------------------------------------------------------------------------------------

def _clean_tags(tags: Iterable[str]) -> list[str]:
    cleaned = sorted({tag.strip().lower() for tag in tags})
    bad = [tag for tag in cleaned if not TAG.match(tag)]
    if bad or not cleaned:
        raise ValidationFailed("Tags are 1 to 40 lower-case letters, digits, '-', '_', '.' or ':'; "
                               f"not {bad[0]!r}." if bad else "Name at least one tag.",
                               errors={"tags": ["Invalid tag."]})
    return cleaned


def add_tags(member_id: int, tags: Iterable[str], actor: str, now: datetime | None = None) -> list[str]:
    now = now or clock.now()
    tags = _clean_tags(tags)
    with transaction():
        privacy.refuse_if_erased(member_or_404(member_id, lock=True))
        have = set(member_tags(member_id))
        for tag in tags:
            if tag not in have:
                db.session.add(MemberTag(member_id=member_id, tag=tag, created_at=now))
        if set(tags) - have:
            audit.record(actor, "member.tags.add", "member", member_id, sorted(have), sorted(have | set(tags)), now)
    return member_tags(member_id)


def remove_tags(member_id: int, tags: Iterable[str], actor: str, now: datetime | None = None) -> list[str]:
    now = now or clock.now()
    tags = _clean_tags(tags)
    with transaction():
        member_or_404(member_id, lock=True)
        have = set(member_tags(member_id))
        db.session.execute(sa.delete(MemberTag).where(MemberTag.member_id == member_id, MemberTag.tag.in_(tags)))
        if have & set(tags):
            audit.record(actor, "member.tags.remove", "member", member_id, sorted(have), sorted(have - set(tags)), now)
    return member_tags(member_id)


def member_tags(member_id: int) -> list[str]:
    return list(db.session.scalars(sa.select(MemberTag.tag).where(MemberTag.member_id == member_id)
                                   .order_by(MemberTag.tag)))




# --- segments -------------------------------------------------------------------------------------

def segment_condition(name: str) -> sa.ColumnElement[bool]:
    """The WHERE of a segment name: `high_value`, `at_risk`, `new`, ... (API.md), or
    `stage:<stage>`, `segment:<segment>`, `tier:<code>`, `tag:<tag>`."""
    kind, _, value = name.partition(":")
    if kind == "tag":
        value = value.strip().lower()  # tags are stored lower-case: tag:VIP finds "vip"
    if not value:
        kind, value = ("segment", name) if name in VALUE_SEGMENTS else ("stage", name)
    if kind == "stage" and value in STAGES:
        return Member.lifecycle_stage == value
    if kind == "segment" and value in VALUE_SEGMENTS:
        return Member.value_segment == value
    if kind == "tier" and value in _tier_codes():
        return Member.tier_code == value
    if kind == "tag" and TAG.match(value):
        return sa.exists().where(MemberTag.member_id == Member.id, MemberTag.tag == value)
    names = ", ".join(VALUE_SEGMENTS + STAGES[1:])
    tier_codes = ", ".join(_tier_codes())
    raise NotFound(f"No segment {name!r}. Segments: {names}; or stage:<stage>, segment:<segment>, "
                   f"tier:<code> ({tier_codes}), tag:<tag>.")


def _tier_codes() -> list[str]:
    """The ladder's codes, lowest first (the ladder's one read model: immutable rules, so a long
    CSV stream that expunges its session cannot spoil them)."""
    return [tier.code for tier in ladder()]


def segment_page(name: str, limit: int = 50, after_id: int | None = None) -> tuple[
        Sequence[Member], dict[int, tuple[Any, Any]], int | None]:
    """A page of the segment's members by id, with the figures the CSV shows."""
    query = (sa.select(Member).where(segment_condition(name), Member.status == "active")
             .order_by(Member.id).limit(limit + 1))
    if after_id:
        query = query.where(Member.id > after_id)
    members = db.session.scalars(query).all()
    more = len(members) > limit
    members = members[:limit]
    return members, _figures([m.id for m in members]), (members[-1].id if more else None)


def _figures(member_ids: list[int]) -> dict[int, tuple[Any, Any]]:
    """{member id: (12-month spend, last purchase)} for a page of members: one GROUP BY."""
    if not member_ids:
        return {}
    year_ago = clock.now() - timedelta(days=365)
    spend = sa.type_coerce(sa.func.sum(sa.case(
        (Purchase.occurred_at >= year_ago, Purchase.amount - Purchase.refunded_amount), else_=0)), Money())
    rows = db.session.execute(sa.select(Purchase.member_id, spend, sa.func.max(Purchase.occurred_at))
                              .where(Purchase.member_id.in_(member_ids)).group_by(Purchase.member_id)).all()
    return {member_id: (total, last) for member_id, total, last in rows}


def mask_phone(phone: str | None) -> str:
    """+8613812345678 -> +86138****5678: enough to recognise, not enough to call."""
    if not phone:
        return ""
    return phone[:-8] + "****" + phone[-4:] if len(phone) > 8 else "****"


def csv_rows(name: str) -> Iterator[str]:
    """The segment as CSV text, a page of members at a time (a generator: streamed, not built)."""
    segment_condition(name)  # an unknown segment is a 404 before the first byte
    yield _csv_line(CSV_COLUMNS)
    after = None
    while True:
        members, figures, after = segment_page(name, CSV_PAGE, after)
        for member in members:
            spend, last = figures.get(member.id, (Decimal("0.00"), None))
            yield _csv_line((member.member_no, _inert(member.name), mask_phone(member.phone), member.tier_code,
                             member.lifecycle_stage or "", member.value_segment or "",
                             str(member.account.available if member.account else Decimal("0.00")),
                             f"{spend or Decimal('0.00'):.2f}", last.strftime("%Y-%m-%dT%H:%M:%SZ") if last else ""))
        db.session.expunge_all()
        if after is None:
            return


def _csv_line(values: Iterable[Any]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue()


def _inert(value: Any) -> Any:
    """Free text a spreadsheet will not run: a name starting with = + - @ (a member may call
    themselves "=HYPERLINK(...)") gets a leading apostrophe."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


# --- reports --------------------------------------------------------------------------------------

def overview(now: datetime | None = None) -> dict[str, Any]:
    now = now or clock.now()
    by_tier = {code: 0 for code in _tier_codes()}  # the ladder's order, empty tiers as 0
    by_stage: dict[str, int] = {}
    by_segment: dict[str, int] = {}
    # Running sums (segments/figures.py): a few hundred rows, not every member, account, lot and entry.
    for tier, stage, segment, count in figures.member_counts():
        by_tier[tier] = by_tier.get(tier, 0) + count
        by_stage[stage or "unknown"] = by_stage.get(stage or "unknown", 0) + count
        by_segment[segment or "none"] = by_segment.get(segment or "none", 0) + count
    available, pending, held, debt = figures.balances()
    expiring = sum((points for _, points in figures.open_lots_by_expiry(
        ("available",), after=now, until=now + timedelta(days=30))), Decimal("0.00"))
    flows = figures.entry_points_by_type(now - timedelta(days=30), now)
    rules = current_rules()
    outstanding = available + pending + held  # held points are still the members' until captured
    campaign = active_campaign(now)
    zero = Decimal("0.00")
    return {
        "members": {"total": sum(by_tier.values()), "by_tier": by_tier, "by_lifecycle_stage": by_stage,
                    "by_value_segment": by_segment},
        "points": {
            "outstanding": outstanding, "available": available, "pending": pending, "held": held, "debt": debt,
            "outstanding_money_value": {
                "amount": (outstanding / rules.payment_points_per_unit).quantize(Decimal("0.01")),
                "currency": settings().currency},
            "expiring_30_days": expiring,
        },
        "last_30_days": {
            "earned": flows.get("earn_purchase", zero) + flows.get("earn_activity", zero) + flows.get("bonus", zero),
            "redeemed": -flows.get("redeem", zero), "paid": -flows.get("payment", zero),
            "expired": -flows.get("expire", zero), "reversed": flows.get("reverse", zero),
            "adjusted": flows.get("adjust", zero), "imported": flows.get("import", zero),
        },
        "referrals": campaign_stats(campaign.id) if campaign else None,
        "as_of": now,
    }


def liability(now: datetime | None = None) -> dict[str, Any]:
    """Outstanding points by the month (local) they expire in; `never` for points that do not."""
    now = now or clock.now()
    tz = settings().timezone
    rows = figures.open_lots_by_expiry()
    months: OrderedDict[str, Decimal] = OrderedDict()
    never = Decimal("0.00")
    for expires_at, points in rows:
        if expires_at is None:
            never += points
            continue
        month = clock.local_date(expires_at - timedelta(microseconds=1), tz).strftime("%Y-%m")
        months[month] = months.get(month, Decimal("0.00")) + points
    return {"items": [{"month": month, "points": points} for month, points in months.items()],
            "never_expires": never, "total": sum(months.values(), never), "as_of": now}


def daily_flows(days=30, now=None):
    """Points earned and burned per local day for the last `days` days (today included), oldest
    first, from the entries' running sums by hour (segments/figures.py), each day from its local
    midnight to the next (so the deployment's time zone decides the day, on SQLite and PostgreSQL
    alike; a zone off the whole hour reads its days' part-hours from the entries).

    Earned: purchase and activity points and bonuses. Burned: redeemed, paid at the till, expired
    (as positive numbers)."""
    now = now or clock.now()
    tz = settings().timezone
    today = clock.local_date(now, tz)
    first = today - timedelta(days=days - 1)
    starts = [clock.start_of_local_day(first + timedelta(days=n), tz) for n in range(days + 1)]
    zero = Decimal("0.00")
    out = []
    for n in range(days):
        sums = figures.entry_points_by_type(starts[n], starts[n + 1], end_included=False)
        out.append({"day": (first + timedelta(days=n)).isoformat(),
                    "earned": sum((sums.get(type_, zero) for type_ in EARNED), zero),
                    "burned": -sum((sums.get(type_, zero) for type_ in BURNED), zero)})
    return out


EARNED, BURNED = ("earn_purchase", "earn_activity", "bonus"), ("redeem", "payment", "expire")


def segment_counts():
    """Every segment marketing can pick with its member count: lifecycle stages, value segments,
    tiers (the ladder's order) and tags; a few GROUP BYs."""
    active = Member.status == "active"
    stages = dict(db.session.execute(sa.select(Member.lifecycle_stage, sa.func.count()).where(active)
                                     .group_by(Member.lifecycle_stage)).all())
    segments = dict(db.session.execute(sa.select(Member.value_segment, sa.func.count()).where(active)
                                       .group_by(Member.value_segment)).all())
    tiers = dict(db.session.execute(sa.select(Member.tier_code, sa.func.count()).where(active)
                                    .group_by(Member.tier_code)).all())
    tags = db.session.execute(sa.select(MemberTag.tag, sa.func.count()).join(Member, Member.id == MemberTag.member_id)
                              .where(active).group_by(MemberTag.tag).order_by(MemberTag.tag)).all()
    return {
        "stages": [(stage, stages.get(stage, 0)) for stage in STAGES],
        "value_segments": [(segment, segments.get(segment, 0)) for segment in VALUE_SEGMENTS],
        "tiers": [(code, tiers.get(code, 0)) for code in _tier_codes()],
        "tags": [(tag, count) for tag, count in tags],
    }
