"""Check DESIGN.md's ledger invariants for every account, in a few set-based queries."""
from dataclasses import dataclass

import sqlalchemy as sa

from loyalty.extensions import db
from loyalty.points.models import Account, Entry, HoldAllocation, Lot, PointsHold


@dataclass(frozen=True)
class BrokenAccount:
    member_id: int
    problem: str


def broken_accounts(limit=1000):
    """Accounts whose cached balances disagree with their lots and entries, with what is wrong."""
    lots = (
        sa.select(
            Lot.member_id,
            sa.func.sum(sa.case((Lot.status == "available", Lot.remaining), else_=0)).label("available"),
            sa.func.sum(sa.case((Lot.status == "pending", Lot.remaining), else_=0)).label("pending"),
        ).group_by(Lot.member_id).subquery()
    )
    entries = (
        sa.select(Entry.member_id, sa.func.sum(Entry.points).label("total"),
                  sa.func.max(Entry.id).label("last_id"))
        .group_by(Entry.member_id).subquery()
    )
    # Points of open holds, per member and per hold (each open hold's allocations make its points).
    holds = (
        sa.select(PointsHold.member_id, sa.func.sum(HoldAllocation.points).label("held"),
                  sa.func.count(sa.distinct(PointsHold.id)).label("holds"))
        .join(HoldAllocation, HoldAllocation.hold_id == PointsHold.id)
        .where(PointsHold.status == "held").group_by(PointsHold.member_id).subquery()
    )
    short_holds = (
        sa.select(PointsHold.member_id).outerjoin(HoldAllocation, HoldAllocation.hold_id == PointsHold.id)
        .where(PointsHold.status == "held").group_by(PointsHold.id, PointsHold.member_id, PointsHold.points)
        .having(sa.func.coalesce(sa.func.sum(HoldAllocation.points), 0) != PointsHold.points)
    )
    last_entry = sa.orm.aliased(Entry)
    lot_available = sa.func.coalesce(lots.c.available, 0)
    lot_pending = sa.func.coalesce(lots.c.pending, 0)
    entry_total = sa.func.coalesce(entries.c.total, 0)
    hold_total = sa.func.coalesce(holds.c.held, 0)
    checks = [
        (Account.available != lot_available - Account.debt,
         "available is not the remaining points of available lots less debt"),
        (Account.pending != lot_pending, "pending is not the remaining points of pending lots"),
        (entry_total != Account.available + Account.pending + Account.held,
         "the entries do not add up to available plus pending plus held"),
        (sa.and_(last_entry.id.is_not(None),
                 last_entry.balance_after != Account.available + Account.pending + Account.held),
         "the last entry's balance_after is not the balance"),
        (Account.held != hold_total, "held is not the points allocated to open holds"),
        (Account.member_id.in_(short_holds), "an open hold's allocations do not make its points"),
        (sa.and_(Account.debt > 0, lot_available > 0), "debt is owed while available lots remain"),
    ]
    rows = db.session.execute(
        sa.select(Account.member_id, *[sa.case((condition, 1), else_=0) for condition, _ in checks])
        .outerjoin(lots, lots.c.member_id == Account.member_id)
        .outerjoin(entries, entries.c.member_id == Account.member_id)
        .outerjoin(holds, holds.c.member_id == Account.member_id)
        .outerjoin(last_entry, last_entry.id == entries.c.last_id)
        .where(sa.or_(*[condition for condition, _ in checks]))
        .order_by(Account.member_id).limit(limit)
    ).all()
    broken = []
    for row in rows:
        for flag, (_, problem) in zip(row[1:], checks):
            if flag:
                broken.append(BrokenAccount(row.member_id, problem))
    orphans = db.session.execute(
        sa.select(Lot.member_id).where(~sa.exists().where(Account.member_id == Lot.member_id))
        .distinct().limit(limit)
    ).scalars().all()
    broken.extend(BrokenAccount(member_id, "lots without an account") for member_id in orphans)
    return broken
