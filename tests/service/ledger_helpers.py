"""What the ledger's service tests read and set: balances, entries, lots, rules, and the check
that DESIGN.md's invariants hold. Data is still built through the services (tests/factories.py)."""
from dataclasses import replace
from datetime import datetime, timezone

import sqlalchemy as sa

from loyalty.extensions import db
from loyalty.points import service
from loyalty.points.models import Account, Entry, Lot
from loyalty.points.verify import broken_accounts
from tests.factories import D

T0 = datetime(2026, 3, 10, 4, 0, tzinfo=timezone.utc)  # 12:00 on 2026-03-10 in Shanghai


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def use_rules(**changes):
    """Change the stored earning rules the way marketing would."""
    return service.update_rules(replace(service.current_rules(), **changes), actor="test", now=T0)


def balances(member_id):
    """(available, pending, lifetime_earned, debt) as the member's account row holds them now
    (read without settling, so tests see exactly what the last write left)."""
    account = db.session.get(Account, member_id, populate_existing=True)
    return account.available, account.pending, account.lifetime_earned, account.debt


def entries(member_id):
    """The member's entries oldest first, as (type, signed points)."""
    rows, _ = service.history(member_id, limit=200)
    return [(entry.type, entry.points) for entry in reversed(rows)]


def lots(member_id):
    """The member's lots in the order they were credited, as (status, points, remaining)."""
    return [(lot.status, lot.points, lot.remaining) for lot in lot_rows(member_id)]


def lot_rows(member_id):
    return db.session.scalars(sa.select(Lot).where(Lot.member_id == member_id).order_by(Lot.id)).all()


def entry_count():
    return db.session.scalar(sa.select(sa.func.count()).select_from(Entry))


def assert_ledger_ok():
    assert broken_accounts() == []


__all__ = ["D", "T0", "utc", "use_rules", "balances", "entries", "lots", "lot_rows", "entry_count",
           "assert_ledger_ok"]
