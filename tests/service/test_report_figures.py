"""The overview and the liability read running sums kept by triggers (loyalty/segments/figures.py,
migration 0020). Hypothesis drives members through every kind of write that moves those sums
(purchases, batches, refunds, payments and their reversals, adjustments, holds placed, captured and
released, the pending, expiry, hold and lifecycle jobs, tier changes, merges, erasure), folding the
sums at random moments, and after the run the overview, the liability and the console's daily
flows must equal a plain recompute over the members, accounts, lots and entries themselves, figure
for figure, at several instants, in time zones on and off the whole hour."""
import os
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import current_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty import clock
from loyalty.config import settings as app_settings
from loyalty.database import Points
from loyalty.errors import LoyaltyError
from loyalty.extensions import db
from loyalty.members import merge, privacy
from loyalty.members.models import Member
from loyalty.points import batch, holds
from loyalty.points import jobs as points_jobs
from loyalty.points import service as points
from loyalty.points.models import Account, Entry, Lot, Purchase
from loyalty.points.rules import EarningRules
from loyalty.segments import figures
from loyalty.segments import jobs as segment_jobs
from loyalty.segments import service as segments
from loyalty.tiers import service as tiers
from tests import factories
from tests.conftest import fresh_programme

D = Decimal
ZERO = D("0.00")
T0 = datetime(2026, 3, 29, 20, 0, tzinfo=timezone.utc)
EXAMPLES = int(os.environ.get("REPORT_FIGURES_EXAMPLES", "25"))
REFUSED = LoyaltyError  # a refused write (too few points, a closed hold or member...) changes nothing


# --- the plain recompute: the reports' figures straight from the rows -------------------------

def total(column):
    return sa.type_coerce(sa.func.coalesce(sa.func.sum(column), 0), Points())


def plain_overview_figures(now):
    counts = sorted(((tier, stage, segment, count) for tier, stage, segment, count in db.session.execute(
        sa.select(Member.tier_code, Member.lifecycle_stage, Member.value_segment, sa.func.count())
        .where(Member.status == "active")
        .group_by(Member.tier_code, Member.lifecycle_stage, Member.value_segment))), key=repr)
    available, pending, held, debt = db.session.execute(sa.select(
        total(sa.case((Account.available > 0, Account.available), else_=0)), total(Account.pending),
        total(Account.held), total(Account.debt))).one()
    expiring = db.session.scalar(sa.select(total(Lot.remaining)).where(
        Lot.status == "available", Lot.remaining > 0, Lot.expires_at > now, Lot.expires_at <= now + timedelta(days=30)))
    flows = dict(db.session.execute(
        sa.select(Entry.type, sa.type_coerce(sa.func.sum(Entry.points), Points()))
        .where(Entry.created_at >= now - timedelta(days=30), Entry.created_at <= now).group_by(Entry.type)).all())
    return counts, (available, pending, held, debt), expiring, flows


def plain_liability(now):
    rows = db.session.execute(
        sa.select(Lot.expires_at, sa.type_coerce(sa.func.sum(Lot.remaining), Points()))
        .where(Lot.status.in_(("available", "pending")), Lot.remaining > 0)
        .group_by(Lot.expires_at).order_by(Lot.expires_at)).all()
    months, never = OrderedDict(), ZERO
    for expires_at, points_ in rows:
        if expires_at is None:
            never += points_
            continue
        month = clock.local_date(expires_at - timedelta(microseconds=1), app_settings().timezone).strftime("%Y-%m")
        months[month] = months.get(month, ZERO) + points_
    return {"items": [{"month": m, "points": p} for m, p in months.items()], "never_expires": never,
            "total": sum(months.values(), never), "as_of": now}


def plain_daily_flows(now, days=30):
    tz = app_settings().timezone
    first = clock.local_date(now, tz) - timedelta(days=days - 1)
    out = []
    for n in range(days):
        start = clock.start_of_local_day(first + timedelta(days=n), tz)
        end = clock.start_of_local_day(first + timedelta(days=n + 1), tz)
        sums = dict(db.session.execute(sa.select(Entry.type, sa.type_coerce(sa.func.sum(Entry.points), Points()))
                                       .where(Entry.created_at >= start, Entry.created_at < end)
                                       .group_by(Entry.type)).all())
        out.append({"day": (first + timedelta(days=n)).isoformat(),
                    "earned": sum((sums.get(t, ZERO) for t in ("earn_purchase", "earn_activity", "bonus")), ZERO),
                    "burned": -sum((sums.get(t, ZERO) for t in ("redeem", "payment", "expire")), ZERO)})
    return out


def fast_overview_figures(now):
    counts = sorted(figures.member_counts(), key=repr)
    counts = [tuple(row) for row in counts]
    expiring = sum((p for _, p in figures.open_lots_by_expiry(("available",), now, now + timedelta(days=30))), ZERO)
    flows = {type_: p for type_, p in figures.entry_points_by_type(now - timedelta(days=30), now).items()}
    return counts, figures.balances(), expiring, flows


def assert_same_figures(now):
    fast, plain = fast_overview_figures(now), plain_overview_figures(now)
    assert fast[0] == [tuple(row) for row in plain[0]]
    assert fast[1:3] == plain[1:3]
    assert {k: v for k, v in fast[3].items() if v} == {k: v for k, v in plain[3].items() if v}
    assert segments.liability(now=now) == plain_liability(now)
    assert segments.daily_flows(now=now) == plain_daily_flows(now)
    overview = segments.overview(now=now)
    assert overview["points"]["expiring_30_days"] == plain[2]
    assert overview["members"]["total"] == sum(row[3] for row in plain[0])


@pytest.fixture(autouse=True)
def context(ctx):
    yield


# --- the run ----------------------------------------------------------------------------------

MEMBER = st.integers(0, 3)
OPERATIONS = st.one_of(
    st.tuples(st.just("buy"), MEMBER, st.integers(1, 50_000), st.integers(0, 20)),
    st.tuples(st.just("batch"), MEMBER, st.integers(1, 50_000), st.integers(0, 20)),
    st.tuples(st.just("refund"), st.integers(0, 30), st.integers(1, 100)),
    st.tuples(st.just("pay"), MEMBER, st.integers(1, 400)),
    st.tuples(st.just("reverse_payment"), st.integers(0, 30)),
    st.tuples(st.just("adjust"), MEMBER, st.integers(-30_000, 30_000)),
    st.tuples(st.just("hold"), MEMBER, st.integers(1, 300)),
    st.tuples(st.just("capture"), st.integers(0, 30)),
    st.tuples(st.just("release"), st.integers(0, 30)),
    st.tuples(st.just("tier"), MEMBER, st.sampled_from(["ordinary", "silver", "gold", "diamond"])),
    st.tuples(st.just("merge"), MEMBER, MEMBER),
    st.tuples(st.just("erase"), MEMBER),
    st.tuples(st.just("jobs")),
    st.tuples(st.just("fold")),
    st.tuples(st.just("wait"), st.integers(1, 72)),
)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=30), probes=st.lists(st.integers(-40, 40), max_size=3),
       zone=st.sampled_from(["Asia/Shanghai", "Asia/Kolkata", "America/St_Johns"]))  # +8, +5:30, -3:30/-2:30
def test_the_running_sums_equal_a_plain_recompute_after_any_writes(operations, probes, zone):
    db.session.remove()  # a failed example may leave its reads' transaction open
    fresh_programme()
    config = current_app.config
    before, config["LOYALTY_TIMEZONE"] = config["LOYALTY_TIMEZONE"], zone
    try:
        run(operations, probes)
    finally:
        config["LOYALTY_TIMEZONE"] = before


def run(operations, probes):
    points.update_rules(replace(EarningRules(), pending_days=1, expiry_policy="days_after_available",
                                expiry_days=3), actor="test", now=T0)
    now = T0
    members = [factories.member(now=now).id for _ in range(4)]
    for member in members:  # available at once, so payments and holds go through from the start
        points.adjust_points(member, D(300), "opening", actor="test", now=now)
    purchases, payments, held = [], [], []
    for n, operation in enumerate(operations):
        kind, *args = operation
        now += timedelta(minutes=7)
        try:
            if kind == "buy":
                member, cents, back = args
                occurred = now - timedelta(hours=back)
                purchases.append(points.credit_purchase(members[member], "S1", f"R{n}", D(cents) / 100,
                                                        occurred_at=occurred, now=now).record.id)
            elif kind == "batch":
                member, cents, back = args
                batch.credit_batch("S1", [{"receipt_no": f"B{n}", "member_id": members[member],
                                           "amount": D(cents) / 100, "occurred_at": now - timedelta(hours=back)}],
                                   now=now)
            elif kind == "refund" and purchases:
                purchase = db.session.get(Purchase, purchases[args[0] % len(purchases)])
                refundable = purchase.amount - purchase.refunded_amount
                amount = (refundable * args[1] / 100).quantize(D("0.01"))
                if amount > 0:
                    points.refund_purchase(purchase.id, "S1", f"F{n}", amount, now=now)
            elif kind == "pay":
                payments.append(points.pay_with_points(members[args[0]], "S1", f"P{n}", D(args[1]),
                                                       now=now).record.id)
            elif kind == "reverse_payment" and payments:
                points.reverse_payment(payments[args[0] % len(payments)], "S1", now=now)
            elif kind == "adjust" and args[1]:
                points.adjust_points(members[args[0]], D(args[1]) / 100, "test", actor="test", now=now)
            elif kind == "hold":
                held.append(holds.place_hold(members[args[0]], "S1", f"H{n}", D(args[1]), ttl_seconds=3600,
                                             now=now).record.id)
            elif kind == "capture" and held:
                holds.capture_hold(held[args[0] % len(held)], "S1", f"C{n}", now=now)
            elif kind == "release" and held:
                holds.release_hold(held[args[0] % len(held)], "S1", now=now)
            elif kind == "tier":
                tiers.set_member_tier(members[args[0]], args[1], "test", "test", now=now)
            elif kind == "merge" and args[0] != args[1]:
                merge.merge_members(members[args[0]], members[args[1]], actor="test", now=now)
            elif kind == "erase":
                privacy.erase_member(members[args[0]], "asked", actor="test", now=now)
            elif kind == "jobs":
                day = clock.local_date(now, app_settings().timezone)
                points_jobs.release_pending(day, now=now)
                points_jobs.expire_points(day, now=now)
                points_jobs.release_holds(day, now=now)
                segment_jobs.lifecycle(day, now=now)
            elif kind == "fold":
                segment_jobs.fold_figures()
            elif kind == "wait":
                now += timedelta(hours=args[0])
        except REFUSED:
            db.session.rollback()
        db.session.remove()

    for offset in [0] + probes:
        assert_same_figures(now + timedelta(hours=offset))
    segment_jobs.fold_figures()
    db.session.remove()
    assert_same_figures(now)
    db.session.remove()  # the next example empties the tables from another connection


def test_the_fold_job_runs_from_the_command_line_leaves_one_row_per_key_and_changes_no_figure(app, runner):
    member = factories.member(now=T0).id
    for n in range(3):
        points.credit_purchase(member, "S1", f"R{n}", D("10.00"), now=T0 + timedelta(minutes=n))
    db.session.remove()
    before = (segments.overview(now=T0 + timedelta(hours=2)), segments.liability(now=T0 + timedelta(hours=2)))
    db.session.remove()

    result = runner.invoke(args=["jobs", "run", "reports.fold_figures"])

    assert result.exit_code == 0, result.output
    after = (segments.overview(now=T0 + timedelta(hours=2)), segments.liability(now=T0 + timedelta(hours=2)))
    assert after == before
    assert before[0]["points"]["pending"] + before[0]["points"]["available"] == D("30.00")
    for model, keys, _ in figures.TABLES:
        rows = db.session.execute(sa.select(*(getattr(model, key) for key in keys), sa.func.count())
                                  .group_by(*(getattr(model, key) for key in keys))).all()
        assert all(row[-1] == 1 for row in rows), model.__tablename__
