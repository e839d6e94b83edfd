"""The store's day: what its tills did on one local day, for the shift reconciliation, in total
and by API key (each till has its own key). A few GROUP BY queries, one per kind of record.

Each record counts on the day of the instant it happened at the till: a purchase on its
`occurred_at` (an offline till's purchase counts on the day it was made, not the day it was
uploaded), a refund, payment or hold on its creation, a reversal on `reversed_at`, a voucher on
`used_at`. Days are local days in `settings().timezone`, from local midnight to local midnight.
"""
from collections.abc import Iterable, Mapping, Sequence
from datetime import date as date_type, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import load_only

from loyalty import clock
from loyalty.auth import ApiKey
from loyalty.config import settings
from loyalty.database import Money, Points
from loyalty.errors import ValidationFailed
from loyalty.extensions import db
from loyalty.points.models import PointsHold, PointsPayment, Purchase, Refund
from loyalty.rewards.models import Reward, Voucher

ZERO = Decimal("0.00")
FIGURES = ("purchases", "refunds", "points_payments", "reversals")


def parse_day(text: str) -> date_type | None:
    try:
        return date_type.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def store_day(store_id: str, day_text: str, now: datetime | None = None) -> dict[str, Any]:
    """The figures of `store_id` on local day `day_text` (YYYY-MM-DD)."""
    now = now or clock.now()
    day = parse_day(day_text)
    if day is None:
        raise ValidationFailed(f"{day_text!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-11-29.",
                               errors={"date": ["Not a valid date (YYYY-MM-DD)."]})
    tz, currency = settings().timezone, settings().currency
    start, end = clock.start_of_local_day(day, tz), clock.end_of_local_day(day, tz)

    def between(column: Any) -> sa.ColumnElement[bool]:
        return sa.and_(column >= start, column < end)

    def total(column: Any, type_: sa.types.TypeEngine[Any]) -> sa.ColumnElement[Any]:
        return sa.type_coerce(sa.func.coalesce(sa.func.sum(column), 0), type_)

    by_key: dict[int | None, dict[str, dict[str, Any]]] = {}  # key id: {figure: {field: value}}

    def gather(name: str, key_column: Any, query: sa.Select[Any], fields: Sequence[str]) -> None:
        for row in db.session.execute(query.add_columns(key_column).group_by(key_column)):
            figures = dict(zip(fields, row))
            by_key.setdefault(row[-1], {})[name] = figures

    _purchases(store_id, between(Purchase.occurred_at), by_key)
    gather("refunds", Refund.api_key_id,  # a refund's points: its base points and its promotions' (its answer's)
           sa.select(sa.func.count(), total(Refund.amount, Money()),
                     total(Refund.points_reversed + Refund.promotion_points, Points()))
           .join(Purchase, Purchase.id == Refund.purchase_id)
           .where(Purchase.store_id == store_id, between(Refund.created_at)),
           ("count", "amount", "points"))
    gather("points_payments", PointsPayment.api_key_id,
           sa.select(sa.func.count(), total(PointsPayment.points, Points()), total(PointsPayment.money_amount, Money()))
           .where(PointsPayment.store_id == store_id, between(PointsPayment.created_at)),
           ("count", "points", "money"))
    gather("reversals", PointsPayment.reversal_api_key_id,
           sa.select(sa.func.count(), total(PointsPayment.points, Points()), total(PointsPayment.money_amount, Money()))
           .where(PointsPayment.store_id == store_id, PointsPayment.status == "reversed",
                  between(PointsPayment.reversed_at)),
           ("count", "points", "money"))
    vouchers: dict[int | None, dict[int, dict[str, Any]]] = {}  # key id: {reward id: line}
    for reward_id, name, key_id, count in db.session.execute(
            sa.select(Voucher.reward_id, Reward.name, Voucher.used_api_key_id, sa.func.count())
            .join(Reward, Reward.id == Voucher.reward_id)
            .where(Voucher.used_store_id == store_id, Voucher.status == "used", between(Voucher.used_at))
            .group_by(Voucher.reward_id, Reward.name, Voucher.used_api_key_id)):
        vouchers.setdefault(key_id, {}).setdefault(reward_id, {"reward_id": reward_id, "name": name, "count": 0})
        vouchers[key_id][reward_id]["count"] += count
    holds: dict[int | None, tuple[int, Decimal]] = {}  # key id: (count, points)
    for key_id, count, points in db.session.execute(
            sa.select(PointsHold.api_key_id, sa.func.count(), total(PointsHold.points, Points()))
            .where(PointsHold.store_id == store_id, PointsHold.status == "held", PointsHold.expires_at > now,
                   between(PointsHold.created_at)).group_by(PointsHold.api_key_id)):
        holds[key_id] = (count, points)

    key_ids = set(by_key) | set(vouchers) | set(holds)
    names: dict[int | None, str]  # by key id; None (no key) has no name
    names = {key_id: name for key_id, name in db.session.execute(sa.select(ApiKey.id, ApiKey.name).where(
        ApiKey.id.in_([key_id for key_id in key_ids if key_id is not None])))} if key_ids else {}
    keys = [_figures(by_key.get(key_id, {}), vouchers.get(key_id, {}), holds.get(key_id), currency)
            | {"key_id": key_id, "key_name": names.get(key_id)}
            for key_id in sorted(key_ids, key=lambda k: (k is None, k or 0))]
    every_voucher: dict[int, dict[str, Any]] = {}
    for per_key in vouchers.values():
        for reward_id, line in per_key.items():
            every_voucher.setdefault(reward_id, {**line, "count": 0})["count"] += line["count"]
    every_hold = (sum(h[0] for h in holds.values()), sum((h[1] for h in holds.values()), ZERO))
    return {"store_id": store_id, "date": day.isoformat(), "timezone": tz, "from_": start, "until": end,
            **_figures(_sum(by_key.values()), every_voucher, every_hold, currency), "by_key": keys}


def _purchases(store_id: str, on_the_day: sa.ColumnElement[bool],
               by_key: dict[int | None, dict[str, dict[str, Any]]]) -> None:
    """The day's purchases by key: count, amount and the points each purchase's answer gave
    (`Purchase.total_points`: base, tier, its promotions and a referral's welcome reward, line by line
    as credited). The lines are JSON, so they are added up here, over the day's rows of one store."""
    for purchase in db.session.scalars(
            sa.select(Purchase).options(load_only(Purchase.api_key_id, Purchase.amount, Purchase.points_earned,
                                                  Purchase.breakdown, raiseload=True))
            .where(Purchase.store_id == store_id, on_the_day)):
        figures = by_key.setdefault(purchase.api_key_id, {}).setdefault(
            "purchases", {"count": 0, "amount": ZERO, "points": ZERO})
        figures["count"] += 1
        figures["amount"] += purchase.amount
        figures["points"] += purchase.total_points


def _sum(per_key: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    totals: dict[str, dict[str, Any]] = {}
    for figures in per_key:
        for name, values in figures.items():
            into = totals.setdefault(name, {})
            for field, value in values.items():
                into[field] = into.get(field, 0) + value
    return totals


def _figures(figures: Mapping[str, Mapping[str, Any]], vouchers: Mapping[int, Mapping[str, Any]],
             holds: tuple[int, Decimal] | None, currency: str) -> dict[str, Any]:
    def money(value: Decimal | None) -> dict[str, Any]:
        return {"amount": value or ZERO, "currency": currency}

    purchases = figures.get("purchases", {})
    refunds = figures.get("refunds", {})
    payments = figures.get("points_payments", {})
    reversals = figures.get("reversals", {})
    return {
        "purchases": {"count": purchases.get("count", 0), "amount": purchases.get("amount", ZERO),
                      "currency": currency, "points": purchases.get("points", ZERO)},
        "refunds": {"count": refunds.get("count", 0), "amount": refunds.get("amount", ZERO),
                    "currency": currency, "points": refunds.get("points", ZERO)},
        "points_payments": {"count": payments.get("count", 0), "points": payments.get("points", ZERO),
                            "money_value": money(payments.get("money"))},
        "reversals": {"count": reversals.get("count", 0), "points": reversals.get("points", ZERO),
                      "money_value": money(reversals.get("money"))},
        "vouchers_used": sorted(vouchers.values(), key=lambda line: line["reward_id"]),
        "holds_open": holds[0] if holds else 0,
        "holds_open_points": holds[1] if holds else ZERO,
    }
