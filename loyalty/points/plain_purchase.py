"""A plain purchase credited in one statement (PostgreSQL): the commonest write of all (issue 20).

`credit_purchase` (points/service.py) locks the member's account, works out the points in Python,
then records the purchase. Through the ORM that was six statements after the lock (INSERT purchase,
INSERT entry, UPDATE account, INSERT lot, UPDATE purchase, the tier window's SELECT), each a round
trip, and the unit of work's flush was about a third of a credit's CPU. For a plain purchase it is
one statement here, with data-modifying CTEs:

    WITH p AS (INSERT INTO purchases ... lot_id = nextval(lots' sequence) ON CONFLICT DO NOTHING
               RETURNING id, lot_id),
         e AS (INSERT INTO ledger_entries ... reference_id = p.id FROM p RETURNING id),
         l AS (INSERT INTO lots (id = p.lot_id, entry_id = e.id ...) FROM p, e),
         a AS (UPDATE accounts SET ... WHERE member_id = :member_id AND EXISTS (SELECT FROM p))
    SELECT p.id, p.lot_id, e.id, <the tier window's spend>, <its activities> FROM p JOIN e ON true

No row back: the store and receipt were recorded before (a replay, or a mistake), and nothing was
written but the lot id drawn (sequences have gaps anyway). The lot's id is drawn before the lot is
written so the purchase names it at once (the foreign key is checked at the statement's end, when
both rows exist). The window's sums see the database as the statement started, without this
purchase: the caller adds it.

Plain means: on PostgreSQL, points to credit, no debt to pay from them, no promotion awarding
anything, no referral pending that the purchase could settle (a member's first purchase after joining
with one) and the account not taken past its ceiling. Anything else goes the ORM way, which does it all; the two write the same
rows (tests/service/test_plain_purchase.py compares them column by column). Webhooks and a tier
upgrade are the callers' as ever: they cost statements only when there is a subscriber or a move.
"""
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql

from loyalty.database import PreparedSelect
from loyalty.extensions import db
from loyalty.points import ledger
from loyalty.points.models import Account, Entry, Lot, Purchase
from loyalty.tiers import service as tiers

ENTRY_TYPE = "earn_purchase"
ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Credited:
    """The purchase as recorded (a transient object, for the answer) and the tier window's figures
    after it: (spend, activities) for `tiers.upgrade_if_qualified`."""

    purchase: Purchase
    window: tuple[Decimal, int]


def applies(account: Account, points: Decimal) -> bool:
    """Could this purchase go the one-statement way, if no referral is pending and no promotion awards
    it anything (the caller asks those after, as they may cost reads)? See the module's docstring."""
    return (points > 0 and account.debt == 0 and ledger.fits(account, points)
            and db.session.get_bind().dialect.name == "postgresql")


def credit(account: Account, purchase: dict[str, Any], description: str, expires_at: datetime | None,
           window_start: datetime, now: datetime) -> Credited | None:
    """Record `purchase` (the purchases row's values, breakdown included) and credit its
    `points_earned` to the locked `account` as `ledger.credit` would: one lot, pending until its
    `available_at`, an `earn_purchase` entry, the balances. None, writing nothing, when its store and
    receipt were recorded before. `account` (and its member) carry the balances after it, as loaded."""
    points = purchase["points_earned"]
    pending = purchase["available_at"] > now
    status = "pending" if pending else "available"
    available, pending_points, lifetime = ledger.balances_after_credit(account, points, pending)
    db.session.flush()  # what settling the account changed (rarely anything) goes first
    row = _STATEMENT.first(
        **purchase, points=points, description=description[:200], expires_at=expires_at,
        status=status, balance_after=available + pending_points + account.held,
        available=available, pending=pending_points, lifetime_earned=lifetime, now=now, window_start=window_start)
    if row is None:
        return None
    for key, value in (("available", available), ("pending", pending_points), ("lifetime_earned", lifetime),
                       ("updated_at", now)):
        orm.attributes.set_committed_value(account, key, value)  # as written: nothing left to flush
    lot = Lot(id=row.lot_id, member_id=account.member_id, entry_id=row.entry_id, points=points, remaining=points,
              status=status, available_at=purchase["available_at"], expires_at=expires_at, created_at=now)
    recorded = Purchase(id=row.id, lot_id=row.lot_id, refunded_amount=ZERO, points_reversed=ZERO, lot=lot,
                        **purchase)
    counted = purchase["amount"] if purchase["occurred_at"] >= window_start else ZERO
    return Credited(recorded, (row.spend + counted, row.activities))


def _statement() -> PreparedSelect:
    P, E, L, A = (cast(sa.Table, model.__table__) for model in (Purchase, Entry, Lot, Account))

    def bind(column: Any, name: str | None = None) -> sa.BindParameter[Any]:
        return sa.bindparam(name or column.key, type_=column.type)

    member_id = bind(P.c.member_id)
    purchase_columns = ("member_id", "store_id", "receipt_no", "amount", "eligible_amount", "currency",
                        "points_earned", "available_at", "items", "channel", "breakdown", "api_key_id",
                        "occurred_at", "created_at")
    p = (postgresql.insert(P)
         .values({**{name: bind(P.c[name]) for name in purchase_columns}, "member_id": member_id,
                  "created_at": bind(P.c.created_at, "now"), "lot_id": sa.func.nextval("lots_id_seq")})
         .on_conflict_do_nothing(index_elements=["store_id", "receipt_no"])
         .returning(P.c.id, P.c.lot_id).cte("p"))
    e = (sa.insert(E).from_select(
        ["member_id", "type", "points", "balance_after", "description", "reference_type", "reference_id",
         "expires_at", "created_at"],
        sa.select(member_id, sa.literal(ENTRY_TYPE), bind(E.c.points), bind(E.c.balance_after),
                  bind(E.c.description), sa.literal("purchase"), sa.cast(p.c.id, E.c.reference_id.type),
                  bind(E.c.expires_at), bind(E.c.created_at, "now")).select_from(p))
         .returning(E.c.id).cte("e"))
    lot = (sa.insert(L).from_select(
        ["id", "member_id", "entry_id", "points", "remaining", "status", "available_at", "expires_at", "created_at"],
        sa.select(p.c.lot_id, member_id, e.c.id, bind(L.c.points), bind(L.c.points), bind(L.c.status),
                  bind(L.c.available_at), bind(L.c.expires_at), bind(L.c.created_at, "now"))
        .select_from(p).join(e, sa.true()))
           .returning(L.c.id).cte("l"))
    account = (sa.update(A)
               .values(available=bind(A.c.available), pending=bind(A.c.pending),
                       lifetime_earned=bind(A.c.lifetime_earned), updated_at=bind(A.c.updated_at, "now"))
               .where(A.c.member_id == member_id, sa.exists(sa.select(p.c.id)))
               .returning(A.c.member_id).cte("a"))
    spend, activities = tiers.window_sums(member_id, sa.bindparam("window_start", type_=P.c.occurred_at.type))
    return PreparedSelect(
        sa.select(p.c.id, p.c.lot_id, e.c.id.label("entry_id"), spend.label("spend"), activities.label("activities"))
        .select_from(p).join(e, sa.true()).add_cte(lot, account), writes=True)


_STATEMENT = _statement()
