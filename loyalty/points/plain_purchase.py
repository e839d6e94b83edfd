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
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql

from loyalty import settings_cache
from loyalty.database import PreparedSelect, json_array_text
from loyalty.errors import NotFound
from loyalty.extensions import db
from loyalty.members import lookup
from loyalty.members.models import Member, MemberIdentity
from loyalty.points import ledger, rules
from loyalty.points.models import Account, Entry, Lot, Purchase, balance_of, points_total
from loyalty.segments.models import MemberTag
from loyalty.tiers import service as tiers

ENTRY_TYPE = "earn_purchase"
ZERO = Decimal("0.00")


@dataclass
class LockedAccount:
    """A member's account as `lock` read it, locked: its balances, and `member`, what the purchase and
    its answer need of the member (MemberSchema's attributes and `referred_by_id`). Plain values:
    loading the ORM's Account, Member and identities cost about as much CPU as the rest of a plain
    purchase's statements together."""

    member_id: int
    available: Decimal
    pending: Decimal
    held: Decimal
    debt: Decimal
    lifetime_earned: Decimal
    member: Any = None

    @property
    def balance(self) -> Decimal:
        return balance_of(self)  # the same rule as the mapped Account's


class RecordedPurchase(SimpleNamespace):
    """A purchase as the one statement recorded it, for its answer (PurchaseResultSchema), its event
    and a tier upgrade: every column of its row as written (`breakdown` as stored), and `lines` (the
    breakdown with Decimal points, as Purchase.lines) and `lot` (its `.status`)."""

    @property
    def total_points(self) -> Decimal:
        return points_total(self.lines)  # the same sum as the mapped Purchase's


@dataclass(frozen=True)
class Credited:
    """The purchase as recorded, and the tier window's figures after it: (spend, activities) for
    `tiers.upgrade_if_qualified`."""

    purchase: RecordedPurchase
    window: tuple[Decimal, int]


def lock(member_id: int, now: datetime) -> tuple[LockedAccount, frozenset[str]] | None:
    """Lock the member's account (and member) row as `ledger.lock_account` does, in one statement run on
    the driver's connection that also reads what the answer shows of the member, whether lots fall due,
    the member's tags (for promotions scoped by them: a subquery costs less than asking first whether
    any is in force) and the settings version (settings_cache): (account, tags).

    None on SQLite, or when the session holds the ORM's objects of the member (`_holds_objects`), or
    (the lock taken all the same) when something is due to be settled first (lots falling due, open
    points holds): that is the ORM's work, `ledger.lock_account` then does it.
    NotFound for an unknown member."""
    session = db.session()
    if session.get_bind().dialect.name != "postgresql" or _holds_objects(session, member_id):
        return None
    session.flush()  # the statement runs on the driver's connection: it sees what is flushed only
    rows = _LOCK.rows(member_id=member_id, now=now)
    if not rows:
        raise NotFound(f"No member with id {member_id}.")
    first = rows[0]
    settings_cache.observe(first.settings_version)  # read in this transaction: cached settings answer to it
    if first.has_due or first.held > 0:
        return None
    account = LockedAccount(member_id=member_id, available=first.available, pending=first.pending,
                            held=first.held, debt=first.debt, lifetime_earned=first.lifetime_earned)
    account.member = lookup.member_view(rows, account)
    account.member.referred_by_id = first.referred_by_id
    return account, frozenset(json.loads(first.tags)) if first.tags else frozenset()


def _holds_objects(session: orm.Session, member_id: int) -> bool:
    """Does the session hold the ORM's Account or Member of this member? A request's session does not;
    a job's or a test's may, and then the ORM's lock refreshes them (`ledger.lock_account`) as before."""
    return any(session.identity_map.get(orm.util.identity_key(mapped, member_id)) is not None
               for mapped in (Account, Member))


def applies(account: Account | LockedAccount, points: Decimal) -> bool:
    """Could this purchase go the one-statement way, if no referral is pending and no promotion awards
    it anything (the caller asks those after, as they may cost reads)? See the module's docstring."""
    return (points > 0 and account.debt == 0 and ledger.fits(account, points)
            and db.session.get_bind().dialect.name == "postgresql")


def credit(account: Account | LockedAccount, purchase: dict[str, Any], lines: list[dict[str, Any]],
           description: str, expires_at: datetime | None, window_start: datetime, now: datetime) -> Credited | None:
    """Record `purchase` (the purchases row's values, its breakdown `lines` with Decimal points) and
    credit its `points_earned` to the locked `account` as `ledger.credit` would: one lot, pending until
    its `available_at`, an `earn_purchase` entry, the balances. None, writing nothing, when its store and
    receipt were recorded before. `account` carries the balances after it."""
    points = purchase["points_earned"]
    pending = purchase["available_at"] > now
    status = ledger.new_lot_status(pending)
    available, pending_points, lifetime = ledger.balances_after_credit(account, points, pending)
    if isinstance(account, Account):
        db.session.flush()  # what settling the account changed goes first
    breakdown = rules.breakdown_json(lines)
    row = _STATEMENT.first(
        **purchase, breakdown=breakdown, points=points,
        description=description[:200], expires_at=expires_at, status=status,
        balance_after=available + pending_points + account.held, available=available, pending=pending_points,
        lifetime_earned=lifetime, now=now, window_start=window_start)
    if row is None:
        return None
    written = {"available": available, "pending": pending_points, "lifetime_earned": lifetime}
    if isinstance(account, Account):  # as written: nothing left for the ORM to flush
        for key, value in {**written, "updated_at": now}.items():
            orm.attributes.set_committed_value(account, key, value)
    else:
        for key, value in written.items():
            setattr(account, key, value)
    recorded = RecordedPurchase(**purchase, breakdown=breakdown, id=row.id, lot_id=row.lot_id, refunded_amount=ZERO,
                                points_reversed=ZERO, lines=lines, lot=SimpleNamespace(status=status))
    counted = purchase["amount"] if purchase["occurred_at"] >= window_start else ZERO
    return Credited(recorded, (row.spend + counted, row.activities))


def _lock_statement() -> PreparedSelect:
    has_due = sa.exists().where(Lot.member_id == Account.member_id, ledger.falls_due(sa.bindparam("now")))
    # The tags as of the statement's start, as ledger._LOCK_ACCOUNT_AND_TAGS reads them.
    tags = sa.select(json_array_text(MemberTag.tag)).where(MemberTag.member_id == Member.id).scalar_subquery()
    return PreparedSelect(
        sa.select(*(getattr(Member, name) for name in lookup.READ_MEMBER_COLUMNS), Member.referred_by_id,
                  Account.available, Account.pending, Account.held, Account.debt, Account.lifetime_earned,
                  *lookup.IDENTITY_COLUMNS, has_due.label("has_due"), settings_cache.VERSION, tags.label("tags"))
        .join(Account, Account.member_id == Member.id)
        .outerjoin(MemberIdentity, MemberIdentity.member_id == Member.id)
        .where(Member.id == sa.bindparam("member_id")).order_by(MemberIdentity.id)
        # As ledger._LOCK_ACCOUNT: the account and the member, FOR NO KEY UPDATE.
        .with_for_update(key_share=True, of=[Account.__table__, Member.__table__]), writes=True)


_LOCK = _lock_statement()


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
