"""The programme's figures kept as running sums, so the overview and the liability read a few
hundred rows instead of every member, account, open lot and entry (issue 20: 2.4 s and 1.8 s at
1 M members).

Each figures table is a list of changes: database triggers (migration 0020) add a row for every
statement that changes what a member, account, lot or ledger entry contributes (the new
contribution less the old one), whatever code path wrote it: purchases, batches, refunds, payments,
holds, the jobs, imports, bulk awards, merges, erasure. A figure is the sum of its table's rows in
one statement, hence exact and in one snapshot. The `reports.fold` job collapses the rows into one
per key so the tables stay small: it deletes the rows it sees and inserts their sums in the same
transaction, so a row a concurrent writer commits meanwhile is either folded or left as it was,
never lost nor counted twice.

What each row adds (the one place these rules are written, besides the triggers themselves):

- `report_member_counts`: 1 per active member, by (tier, lifecycle stage, value segment);
- `report_balances`: each account's available points (not below 0), pending, held and debt;
- `report_lots`: each available or pending lot's remaining points, by (expires_at, status);
- `report_entry_hours`: each ledger entry's points, by (UTC hour of created_at, type).
"""
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.database import BigId, Points, UTCDateTime
from loyalty.extensions import Model, db
from loyalty.members.models import Member
from loyalty.points.models import Account, Entry, Lot

ZERO = Decimal("0.00")
HOUR = timedelta(hours=1)


class MemberCountChange(Model):
    __tablename__ = "report_member_counts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tier_code: Mapped[str | None] = mapped_column(sa.String(20))
    lifecycle_stage: Mapped[str | None] = mapped_column(sa.String(20))
    value_segment: Mapped[str | None] = mapped_column(sa.String(20))
    members: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)


class BalanceChange(Model):
    __tablename__ = "report_balances"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    available = mapped_column(Points(), nullable=False)  # not below 0: a member's debt is not the others'
    pending = mapped_column(Points(), nullable=False)
    held = mapped_column(Points(), nullable=False)
    debt = mapped_column(Points(), nullable=False)


class LotChange(Model):
    __tablename__ = "report_lots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    expires_at = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(sa.String(10))
    remaining = mapped_column(Points(), nullable=False)


class EntryHourChange(Model):
    __tablename__ = "report_entry_hours"
    __table_args__ = (sa.Index("ix_report_entry_hours_hour", "hour"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    hour = mapped_column(UTCDateTime, nullable=False)  # the UTC hour the entries were created in
    type: Mapped[str] = mapped_column(sa.String(20))
    points = mapped_column(Points(), nullable=False)


# The figures tables: their key columns and summed columns.
TABLES: Sequence[tuple[type[Model], tuple[str, ...], tuple[str, ...]]] = (
    (MemberCountChange, ("tier_code", "lifecycle_stage", "value_segment"), ("members",)),
    (BalanceChange, (), ("available", "pending", "held", "debt")),
    (LotChange, ("expires_at", "status"), ("remaining",)),
    (EntryHourChange, ("hour", "type"), ("points",)),
)


def fold() -> dict[str, int]:
    """Collapse each figures table to one row per key (the caller's transaction): the rows of a key
    that has several (or sums to nothing) are deleted by id and their sum inserted, so the sums the
    reports read do not move. Only the fold deletes and no one updates these rows, so the rows read
    are exactly the rows deleted; a row committed meanwhile is not among them and stays as it is.
    A key's single row is left alone: a run rewrites only what changed since the last one."""
    counts = {}
    for model, keys, values in TABLES:
        table = cast(sa.Table, model.__table__)
        # The keys to fold, found by the database (a run reads those rows only, not the table).
        due = sa.select(*(table.c[k] for k in keys)).group_by(*(table.c[k] for k in keys)).having(sa.or_(
            sa.func.count() > 1, *(sa.func.sum(table.c[v]) == 0 for v in values[:1]))).subquery()
        on = sa.and_(sa.true(), *((table.c[k] == due.c[k]) if not table.c[k].nullable
                                  else table.c[k].is_not_distinct_from(due.c[k]) for k in keys))
        groups: dict[tuple[Any, ...], tuple[list[int], list[Any]]] = {}
        for row in db.session.execute(sa.select(table.c.id, *(table.c[k] for k in keys + values))
                                      .select_from(table.join(due, on) if keys else table)):
            ids, sums = groups.setdefault(tuple(row[1:1 + len(keys)]), ([], [0] * len(values)))
            ids.append(row[0])
            for n, value in enumerate(row[1 + len(keys):]):
                sums[n] += value
        gone: list[int] = []
        rows = []
        for key, (ids, sums) in groups.items():
            if len(ids) > 1 or not any(sums):
                gone += ids
                if any(sums):
                    rows.append(dict(zip(keys + values, key + tuple(sums))))
        for chunk in range(0, len(gone), 1000):
            db.session.execute(sa.delete(table).where(table.c.id.in_(gone[chunk:chunk + 1000])))
        if rows:
            db.session.execute(sa.insert(table), rows)
        counts[table.name] = len(gone)
    return counts


# --- reads ----------------------------------------------------------------------------------------

def member_counts() -> list[Any]:
    """(tier, stage, segment, active members), groups with members only."""
    t = MemberCountChange
    total = sa.func.sum(t.members)
    return list(db.session.execute(
        sa.select(t.tier_code, t.lifecycle_stage, t.value_segment, total)
        .group_by(t.tier_code, t.lifecycle_stage, t.value_segment).having(total != 0)))


def balances() -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(available not below 0, pending, held, debt) over every account."""
    t = BalanceChange

    def total(column: Any) -> sa.ColumnElement[Any]:
        return sa.type_coerce(sa.func.coalesce(sa.func.sum(column), 0), Points())

    row = db.session.execute(sa.select(total(t.available), total(t.pending), total(t.held), total(t.debt))).one()
    return row[0], row[1], row[2], row[3]


def open_lots_by_expiry(statuses: Sequence[str] = ("available", "pending"), after: datetime | None = None,
                        until: datetime | None = None) -> list[tuple[datetime | None, Decimal]]:
    """(expires_at, remaining points) of the lots in `statuses`, by expiry instant, those ending in
    (after, until] when given; None is "never expires"."""
    t = LotChange
    total = sa.type_coerce(sa.func.sum(t.remaining), Points())
    query = sa.select(t.expires_at, total).where(t.status.in_(statuses)).group_by(t.expires_at) \
        .having(sa.func.sum(t.remaining) != 0).order_by(t.expires_at)
    if after is not None:
        query = query.where(t.expires_at > after)
    if until is not None:
        query = query.where(t.expires_at <= until)
    return [(expires_at, points) for expires_at, points in db.session.execute(query)]


def entry_points_by_type(start: datetime, end: datetime, end_included: bool = True) -> Mapping[str, Decimal]:
    """{entry type: points} of the entries created from `start` to `end` (`end` itself too unless
    `end_included` is false): the whole hours from the sums, the part-hours at either end from the
    entries themselves (a small range of the created_at index), in one statement."""
    first_hour = _hour_ceiling(start)
    last_hour = end.replace(minute=0, second=0, microsecond=0)  # the hour `end` is in: read raw
    before_end = Entry.created_at <= end if end_included else Entry.created_at < end
    t = EntryHourChange
    if first_hour >= last_hour:  # less than an hour apart, or within one hour: all raw
        parts = [sa.select(Entry.type, Entry.points.label("points")).where(Entry.created_at >= start, before_end)]
    else:
        parts = [sa.select(t.type, t.points.label("points")).where(t.hour >= first_hour, t.hour < last_hour),
                 sa.select(Entry.type, Entry.points.label("points"))
                 .where(Entry.created_at >= start, Entry.created_at < first_hour),
                 sa.select(Entry.type, Entry.points.label("points")).where(Entry.created_at >= last_hour, before_end)]
    both = sa.union_all(*parts).subquery()
    return dict(db.session.execute(
        sa.select(both.c.type, sa.type_coerce(sa.func.sum(both.c.points), Points())).group_by(both.c.type)).all())


def _hour_ceiling(instant: datetime) -> datetime:
    floor = instant.replace(minute=0, second=0, microsecond=0)
    return floor if floor == instant else floor + HOUR


# --- the check ------------------------------------------------------------------------------------

def disagreements() -> list[str]:
    """Where the running sums and the rows they sum disagree (`loyalty ledger verify`), each as a
    sentence; empty when every figure agrees. Whole-table scans, as the rest of verify: the sums are
    only worth trusting if something checks them against the rows now and then."""
    def total(column: Any) -> Any:
        return sa.type_coerce(sa.func.coalesce(sa.func.sum(column), 0), Points())

    found = []
    counted = {(tier, stage, segment): count for tier, stage, segment, count in member_counts()}
    actual = {(tier, stage, segment): count for tier, stage, segment, count in db.session.execute(
        sa.select(Member.tier_code, Member.lifecycle_stage, Member.value_segment, sa.func.count())
        .where(Member.status == "active").group_by(Member.tier_code, Member.lifecycle_stage, Member.value_segment))}
    for key in sorted(set(counted) | set(actual), key=repr):
        if counted.get(key, 0) != actual.get(key, 0):
            found.append(f"active members of tier, stage and segment {key}: {counted.get(key, 0)} in the running "
                         f"sums, {actual.get(key, 0)} in members")
    plain = db.session.execute(sa.select(
        total(sa.case((Account.available > 0, Account.available), else_=0)), total(Account.pending),
        total(Account.held), total(Account.debt))).one()
    for name, summed, real in zip(("available", "pending", "held", "debt"), balances(), plain):
        if summed != real:
            found.append(f"{name} points of all accounts: {summed} in the running sums, {real} in accounts")
    lots = {status: points for status, points in db.session.execute(
        sa.select(LotChange.status, total(LotChange.remaining)).group_by(LotChange.status))}
    real_lots = {status: points for status, points in db.session.execute(
        sa.select(Lot.status, total(Lot.remaining)).where(Lot.status.in_(("available", "pending")))
        .group_by(Lot.status))}
    for status in sorted(set(lots) | set(real_lots)):
        if lots.get(status, ZERO) != real_lots.get(status, ZERO):
            found.append(f"remaining points of {status} lots: {lots.get(status, ZERO)} in the running sums, "
                         f"{real_lots.get(status, ZERO)} in lots")
    entries = {type_: points for type_, points in db.session.execute(
        sa.select(EntryHourChange.type, total(EntryHourChange.points)).group_by(EntryHourChange.type))}
    real_entries = {type_: points for type_, points in db.session.execute(
        sa.select(Entry.type, total(Entry.points)).group_by(Entry.type))}
    for type_ in sorted(set(entries) | set(real_entries)):
        if entries.get(type_, ZERO) != real_entries.get(type_, ZERO):
            found.append(f"points of {type_} entries: {entries.get(type_, ZERO)} in the running sums, "
                         f"{real_entries.get(type_, ZERO)} in the ledger")
    return found
