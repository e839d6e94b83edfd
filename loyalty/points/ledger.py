"""The ledger's mechanics on one locked account. Every balance change in the system goes through
these functions, inside the caller's transaction (or their set-based forms: an offline batch's
credits, points/batch.py, and a plain purchase's one statement, points/plain_purchase.py, each
tested to write what these would); they keep the invariants of DESIGN.md:

    available == sum(remaining of available lots) - debt
    pending   == sum(remaining of pending lots)
    held      == sum(points allocated to open holds)
    sum(entries) == available + pending + held

Held points are taken out of their lots' `remaining` (into hold allocations) rather than marked
on the lots: everything that spends, pays, claws back or expires reads `remaining` only, so none
of it can touch held points, and none of it needed to change.
"""
import json
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import orm

from loyalty.database import Points, UTCDateTime, json_array_text
from loyalty.errors import InsufficientPoints, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members.models import Member
from loyalty.points.models import Account, Entry, HoldAllocation, Lot, LotAllocation, PointsHold
from loyalty.segments.models import MemberTag
from loyalty.webhooks import service as webhooks

ZERO = Decimal("0.00")
# The most points an account may hold or have earned: about a thousandth of what its BIGINT columns of
# hundredths can store (9.2e16 points), so no balance, sum or later credit can overflow into a
# database error. No real member comes near it (a largest purchase earns at most 1e11 points).
MAX_ACCOUNT_POINTS = Decimal("1e14")
EXPIRY_DESCRIPTION = "Points expired"
SPEND_ORDER = (sa.nulls_last(Lot.expires_at.asc()), Lot.id.asc())  # earliest expiry first
# What an entry is about: ("purchase", its id), ("lot", ...), ...; None for an adjustment's own.
Reference = tuple[str, Any] | None


class Balances(Protocol):
    """An account's balances as the credit helpers below read them: the mapped Account, or a plain
    purchase's LockedAccount (points/plain_purchase.py, which imports this module)."""

    member_id: int
    available: Decimal
    pending: Decimal
    lifetime_earned: Decimal

    @property
    def balance(self) -> Decimal: ...


def lock_account(member_id: int, now: datetime) -> Account:
    """Lock the member's account row for this transaction, then bring it up to `now`.

    PostgreSQL takes row locks (FOR NO KEY UPDATE of the account and the member, `_LOCK_ACCOUNT`);
    SQLite already holds the database's write lock from BEGIN IMMEDIATE. Every check that follows
    sees a balance no one else can change.
    """
    return _lock_account(_LOCK_ACCOUNT, member_id, now)[0]


def lock_account_and_tags(member_id: int, now: datetime) -> tuple[Account, frozenset[str]]:
    """`lock_account`, and the member's tags read in the same round trip: (account, frozenset of
    tags). For a purchase that a tag-scoped promotion may apply to, which would otherwise cost a
    query of its own."""
    account, tags = _lock_account(_LOCK_ACCOUNT_AND_TAGS, member_id, now)
    return account, frozenset(json.loads(tags)) if tags else frozenset()


def _lock_account(statement: sa.Executable, member_id: int, now: datetime) -> tuple[Any, ...]:
    row = db.session.execute(statement, {"member_id": member_id, "now": now}).unique().one_or_none()
    if row is None:
        raise NotFound(f"No member with id {member_id}.")
    account, has_due, *extra = row
    orm.attributes.set_committed_value(account.member, "account", account)  # no second load
    # Due holds first: what they give back may be past its expiry, which settling then expires.
    released = release_due_holds(account, now) if account.held > 0 else False
    settle(account, now, lots_due=has_due or released)
    return account, *extra


def lock_accounts(member_ids: Iterable[int], now: datetime) -> dict[int, Account]:
    """Lock many members' accounts at once, in id order (as every writer of several does, so no two
    wait for each other), and bring each up to `now`. One statement for the locks; only the
    accounts with something due cost more. Returns {member_id: account}; an unknown id is absent."""
    rows = db.session.execute(_LOCK_ACCOUNTS, {"member_ids": sorted(set(member_ids)), "now": now}).unique().all()
    accounts = {}
    for account, has_due in rows:
        orm.attributes.set_committed_value(account.member, "account", account)
        released = release_due_holds(account, now) if account.held > 0 else False
        if has_due or released:
            settle(account, now)
        accounts[account.member_id] = account
    return accounts


def settle(account: Account, now: datetime, lots_due: bool = True) -> None:
    """Bring the account up to `now` as if it had been watched all along: release pending lots
    whose time has come (each pays any debt the moment it is released), expire lots past their
    expiry, then pay what debt is left from what is still available.

    `release_range` and `expire_range` below are the same rule, set-based: the nightly jobs run
    them for everyone. Doing it here as well means a write never spends an expired point or misses
    one that became available a minute ago, and when an account is settled never changes what it
    ends up holding.
    """
    due = db.session.scalars(
        sa.select(Lot).where(Lot.member_id == account.member_id, falls_due(now)).order_by(Lot.id)
    ).all() if lots_due else []
    for lot in sorted((lot for lot in due if lot.status == "pending"), key=lambda lot: lot.available_at):
        lot.status = "available"
        account.pending -= lot.remaining
        account.available += lot.remaining
        _pay_debt_from(account, lot)
    for lot in sorted(due, key=lambda lot: lot.expires_at or now):
        if lot.expires_at is not None and lot.expires_at <= now and lot.remaining > 0:
            expire_lot(account, lot, now)
    if account.debt > 0:
        pay_debt(account, now)
    if due:
        account.updated_at = now


def has_due_lots(member_id: int, now: datetime) -> bool:
    """Would settling this member's account change anything now? One indexed EXISTS query."""
    return bool(db.session.scalar(sa.select(sa.exists().where(Lot.member_id == member_id, falls_due(now)))))


def arrived(now: Any) -> sa.ColumnElement[bool]:
    """Pending lots whose time has come: settling makes them available."""
    return sa.and_(Lot.status == "pending", Lot.available_at <= now)


def past_expiry(now: Any) -> sa.ColumnElement[bool]:
    """Lots settling would expire: available ones past their expiry, and pending ones that arrive
    already past it (released, then expired at once)."""
    return sa.and_(Lot.remaining > 0, Lot.expires_at <= now, sa.or_(Lot.status == "available", arrived(now)))


def falls_due(now: Any) -> sa.ColumnElement[bool]:
    """Lots whose time has come: pending ones now available, available ones now expired. `settle`'s
    rule as SQL conditions (with `arrived` and `past_expiry`): the read of a member's points counts
    them as settled without writing (points/service.py)."""
    return sa.or_(arrived(now), sa.and_(Lot.status == "available", Lot.remaining > 0, Lot.expires_at <= now))


# --- settle, set-based ------------------------------------------------------------------------------
# The same rule as `settle`, for every account of a range of member ids at once (the nightly jobs,
# points/jobs.py, one transaction per range): raw SQL with window functions, no query per member.
# Each range first locks (PostgreSQL) the accounts it will change, so a purchase for one of those
# members waits for the batch and then sees its result, instead of settling the same lots twice.
# The one step of `settle` left out, paying a debt from lots that were available already, never
# has anything to do: a debt is never owed while available points remain (verify.py checks it).
# tests/service/test_ledger_sql.py checks on generated lots and dates that both forms agree.

def _t(sql: str) -> sa.TextClause:
    """Raw SQL whose :cutoff and :now are aware datetimes (stored as the models store them)."""
    return sa.text(sql).bindparams(*(sa.bindparam(name, type_=UTCDateTime())
                                     for name in ("cutoff", "now") if f":{name}" in sql))


def _lock_accounts(low: int, high: int, due_condition: str, params: dict[str, Any]) -> None:
    """Lock (PostgreSQL) the accounts of the range that have something due, lowest id first."""
    if db.session.get_bind().dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE holds the whole database already
    db.session.execute(_t(
        f"SELECT a.member_id FROM accounts a WHERE a.member_id BETWEEN :low AND :high AND EXISTS "
        f"(SELECT 1 FROM lots l WHERE l.member_id = a.member_id AND {due_condition}) "
        f"ORDER BY a.member_id FOR UPDATE"), params)


def _index_due(table: str, *columns: str) -> None:
    """Index a range's temporary table on the columns the UPDATEs below look its rows up by (a
    correlated subquery per lot or account), so that a lookup is not a scan of the whole table,
    and give PostgreSQL its statistics (autovacuum never analyses temporary tables)."""
    for column in columns:
        db.session.execute(sa.text(f"CREATE INDEX {table}_{column} ON {table} ({column})"))
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text(f"ANALYZE {table}"))


# `_due`, in the raw SQL below (lots aliased `l`), one condition per step.
PENDING_DUE = "l.status = 'pending' AND l.available_at <= :cutoff"
EXPIRY_DUE = "l.status = 'available' AND l.remaining > 0 AND l.expires_at <= :cutoff"


def release_range(low: int, high: int, cutoff: datetime, now: datetime) -> sa.Row[Any]:
    """`settle`'s first step for the members with ids `low`..`high`: pending lots whose time has
    come become available; each pays the account's debt first, in the order the lots became
    available. Returns (lots released, members touched)."""
    params = {"low": low, "high": high, "cutoff": cutoff, "now": now}
    _lock_accounts(low, high, PENDING_DUE, params)
    db.session.execute(sa.text("DROP TABLE IF EXISTS release_due"))
    db.session.execute(_t(f"""
        CREATE TEMPORARY TABLE release_due AS
        SELECT lot_id, member_id, remaining,
               CASE WHEN debt - before_it <= 0 THEN 0
                    WHEN debt - before_it >= remaining THEN remaining
                    ELSE debt - before_it END AS paid
        FROM (SELECT l.id AS lot_id, l.member_id, l.remaining, a.debt,
                     COALESCE(SUM(l.remaining) OVER (PARTITION BY l.member_id ORDER BY l.available_at, l.id
                                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                     AS before_it
              FROM lots l JOIN accounts a ON a.member_id = l.member_id
              WHERE l.member_id BETWEEN :low AND :high AND {PENDING_DUE}) AS due"""), params)
    _index_due("release_due", "lot_id", "member_id")
    db.session.execute(sa.text(
        "UPDATE lots SET status = 'available', remaining = remaining - "
        "(SELECT paid FROM release_due d WHERE d.lot_id = lots.id) "
        "WHERE id IN (SELECT lot_id FROM release_due)"))
    db.session.execute(_t(
        "UPDATE accounts SET pending = pending - (SELECT SUM(remaining) FROM release_due d "
        "WHERE d.member_id = accounts.member_id), "
        "available = available + (SELECT SUM(remaining) FROM release_due d WHERE d.member_id = accounts.member_id), "
        "debt = debt - (SELECT SUM(paid) FROM release_due d WHERE d.member_id = accounts.member_id), "
        "updated_at = :now WHERE member_id IN (SELECT member_id FROM release_due)"), params)
    released = db.session.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT member_id) FROM release_due")).one()
    db.session.execute(sa.text("DROP TABLE release_due"))
    return released


def expire_range(low: int, high: int, cutoff: datetime, now: datetime) -> sa.Row[Any]:
    """`settle`'s second step for the members with ids `low`..`high` (after `release_range`): lots
    past their expiry give up what remains of them, earliest expiry first, one `expire` entry per
    lot with the balance after it. Returns (lots expired, members touched)."""
    params = {"low": low, "high": high, "cutoff": cutoff, "now": now, "description": EXPIRY_DESCRIPTION}
    _lock_accounts(low, high, EXPIRY_DUE, params)
    db.session.execute(sa.text("DROP TABLE IF EXISTS expire_due"))
    db.session.execute(_t(f"""
        CREATE TEMPORARY TABLE expire_due AS
        SELECT l.id AS lot_id, l.member_id, l.remaining,
               a.available + a.pending + a.held - SUM(l.remaining) OVER (
                   PARTITION BY l.member_id ORDER BY l.expires_at, l.id ROWS UNBOUNDED PRECEDING)
               AS balance_after
        FROM lots l JOIN accounts a ON a.member_id = l.member_id
        WHERE l.member_id BETWEEN :low AND :high AND {EXPIRY_DUE}"""), params)
    _index_due("expire_due", "lot_id", "member_id")
    db.session.execute(_t(
        "INSERT INTO ledger_entries (member_id, type, points, balance_after, description, reference_type, "
        "reference_id, expires_at, created_at) "
        "SELECT member_id, 'expire', -remaining, balance_after, :description, 'lot', CAST(lot_id AS VARCHAR(40)), "
        "NULL, :now FROM expire_due ORDER BY member_id, balance_after DESC"), params)
    db.session.execute(sa.text(
        "UPDATE lots SET remaining = 0, status = 'expired' WHERE id IN (SELECT lot_id FROM expire_due)"))
    db.session.execute(_t(
        "UPDATE accounts SET available = available - (SELECT SUM(remaining) FROM expire_due d "
        "WHERE d.member_id = accounts.member_id), updated_at = :now "
        "WHERE member_id IN (SELECT member_id FROM expire_due)"), params)
    expired = db.session.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT member_id) FROM expire_due")).one()
    db.session.execute(sa.text("DROP TABLE expire_due"))
    return expired


# Holds past their expiry, in the raw SQL below (holds aliased `h`).
HOLD_DUE = "h.status = 'held' AND h.expires_at <= :now"


def release_holds_range(now: datetime, batch: int) -> tuple[int, int]:
    """The set-based form of `release_due_holds`: up to `batch` holds past their expiry, of any
    members, give their points back to the lots they came from; debtors among those members then
    settle as one account does. (count of holds, count of members)."""
    params = {"now": now, "batch": batch}
    if db.session.get_bind().dialect.name == "postgresql":
        # The same order as every write (account first, then its holds), so that a till capturing
        # one of these holds either finishes first (and the hold is no longer due) or waits.
        db.session.execute(_t(
            f"SELECT a.member_id FROM accounts a WHERE a.member_id IN (SELECT h.member_id FROM points_holds h "
            f"WHERE {HOLD_DUE} ORDER BY h.member_id, h.id LIMIT :batch) ORDER BY a.member_id FOR UPDATE"), params)
    db.session.execute(sa.text("DROP TABLE IF EXISTS holds_due"))
    db.session.execute(_t(
        f"CREATE TEMPORARY TABLE holds_due AS SELECT h.id AS hold_id, h.member_id, h.points FROM points_holds h "
        f"WHERE {HOLD_DUE} ORDER BY h.member_id, h.id LIMIT :batch"), params)
    _index_due("holds_due", "hold_id", "member_id")
    db.session.execute(sa.text(
        "UPDATE lots SET remaining = remaining + (SELECT SUM(ha.points) FROM hold_allocations ha "
        "JOIN holds_due d ON d.hold_id = ha.hold_id WHERE ha.lot_id = lots.id) "
        "WHERE id IN (SELECT ha.lot_id FROM hold_allocations ha JOIN holds_due d ON d.hold_id = ha.hold_id)"))
    db.session.execute(_t(
        "UPDATE accounts SET held = held - (SELECT SUM(points) FROM holds_due d WHERE d.member_id = accounts.member_id), "
        "available = available + (SELECT SUM(points) FROM holds_due d WHERE d.member_id = accounts.member_id), "
        "updated_at = :now WHERE member_id IN (SELECT member_id FROM holds_due)"), params)
    db.session.execute(_t(
        "UPDATE points_holds SET status = 'expired', closed_at = :now WHERE id IN (SELECT hold_id FROM holds_due)"),
        params)
    count, touched = db.session.execute(
        sa.text("SELECT COUNT(*), COUNT(DISTINCT member_id) FROM holds_due")).one()
    debtors = db.session.scalars(sa.text(
        "SELECT a.member_id FROM accounts a WHERE a.debt > 0 AND a.member_id IN (SELECT member_id FROM holds_due) "
        "ORDER BY a.member_id")).all()
    db.session.execute(sa.text("DROP TABLE holds_due"))
    if debtors:
        db.session.expire_all()  # the statements above bypassed the session's copies of these rows
    for member_id in debtors:  # rare: a refund took back spent points while some were held
        lock_account(member_id, now)
    return count, touched


# The member comes along, locked too, with its channel identities: every answer shows it, and an
# upgrade changes it. (Locked rather than merely joined: after waiting for a lock, PostgreSQL
# re-reads only the rows it locks, so an unlocked member row could be one a twin has since
# upgraded.) FOR NO KEY UPDATE: no key of either row changes, and it does not conflict with the
# KEY SHARE locks PostgreSQL takes to check foreign keys that point at them.
# Whether any lot is due comes in the same round trip, so that the common case (nothing due) costs
# no query for lots. (Should PostgreSQL have waited for the lock, this answer is as of the
# statement's start: lots a twin settled are simply found settled; the twin's own lots are new,
# not yet due.)
# Built once, with bind parameters: every write runs it, and a statement built anew per request
# costs more CPU than its round trip (SQLAlchemy builds and hashes it again each time).
_LOCK_ACCOUNT = (
    sa.select(Account, sa.exists().where(Lot.member_id == Account.member_id, falls_due(sa.bindparam("now"))))
    .join(Account.member).where(Account.member_id == sa.bindparam("member_id"))
    .options(orm.contains_eager(Account.member).joinedload(Member.identities))
    .with_for_update(key_share=True, of=[Account, Member])
    .execution_options(populate_existing=True)
)


# The tags come as of the statement's start (should PostgreSQL wait for the lock, a tag added
# meanwhile is not seen: as if the purchase had come first).
_LOCK_ACCOUNT_AND_TAGS = _LOCK_ACCOUNT.add_columns(
    sa.select(json_array_text(MemberTag.tag)).where(MemberTag.member_id == Account.member_id).scalar_subquery())


# Many accounts (an offline till's batch): the same locks as _LOCK_ACCOUNT, lowest id first.
_LOCK_ACCOUNTS = (
    sa.select(Account, sa.exists().where(Lot.member_id == Account.member_id, falls_due(sa.bindparam("now"))))
    .join(Account.member).where(Account.member_id.in_(sa.bindparam("member_ids", expanding=True)))
    .order_by(Account.member_id)
    .options(orm.contains_eager(Account.member))
    .with_for_update(key_share=True, of=[Account, Member])
    .execution_options(populate_existing=True)
)


def expire_lot(account: Account, lot: Lot, now: datetime) -> Entry:
    points = lot.remaining
    lot.remaining = ZERO
    lot.status = "expired"
    account.available -= points
    # The same words as expire_range's: an entry reads the same either way.
    return add_entry(account, "expire", -points, EXPIRY_DESCRIPTION, ("lot", lot.id), now)


def pay_debt(account: Account, now: datetime) -> None:
    """Debt is paid from available lots, earliest expiry first. No entry: the balance is unchanged."""
    for lot in _open_lots(account.member_id):
        if account.debt == 0:
            break
        _pay_debt_from(account, lot)


def add_entry(account: Account, type_: str, points: Decimal | int, description: str, reference: Reference,
              now: datetime, expires_at: datetime | None = None) -> Entry:
    """An entry of `points` (0 for a record alone: a merge's) with the account's balance after it."""
    reference_type, reference_id = reference if reference else (None, None)
    account.updated_at = now
    entry = Entry(
        member_id=account.member_id, type=type_, points=points,
        balance_after=account.balance, description=description[:200],
        reference_type=reference_type, reference_id=None if reference_id is None else str(reference_id),
        expires_at=expires_at, created_at=now,
    )
    db.session.add(entry)
    return entry


def credit(account: Account, type_: str, points: Decimal, description: str, reference: Reference, now: datetime, *,
           available_at: datetime | None = None, expires_at: datetime | None = None,
           earned: bool = True) -> tuple[Entry, Lot]:
    """Add points as a new lot. Pending until `available_at`; debt is paid from it first."""
    if not fits(account, points):
        raise ValidationFailed(
            f"This credit of {points} points would take the member's points past "
            f"{MAX_ACCOUNT_POINTS:,.0f}, the most an account holds; check the amount.",
            errors={"points": [f"The account would exceed {MAX_ACCOUNT_POINTS:,.0f} points."]})
    available_at = available_at or now
    pending = available_at > now
    account.available, account.pending, account.lifetime_earned = balances_after_credit(
        account, points, pending, earned)
    entry = add_entry(account, type_, points, description, reference, now, expires_at=expires_at)
    lot = Lot(member_id=account.member_id, entry=entry, points=points, remaining=points,
              status=new_lot_status(pending), available_at=available_at,
              expires_at=expires_at, created_at=now)
    db.session.add(lot)
    if not pending:
        _pay_debt_from(account, lot)
    webhooks.emit("points.credited", credited_event(account, type_, points, pending, available_at, expires_at,
                                                    description, reference), now)
    return entry, lot


def fits(account: Balances, points: Decimal) -> bool:
    """Does the account stay within MAX_ACCOUNT_POINTS after crediting `points`?"""
    return max(account.balance, account.lifetime_earned) + points <= MAX_ACCOUNT_POINTS


def new_lot_status(pending: bool) -> str:
    """A new lot's status: `pending` until its available_at has come, else `available` at once (every
    way of crediting: `credit` here, the offline batch, the one-statement purchase)."""
    return "pending" if pending else "available"


def balances_after_credit(account: Balances, points: Decimal, pending: bool,
                          earned: bool = True) -> tuple[Decimal, Decimal, Decimal]:
    """(available, pending, lifetime_earned) of the account once `points` are credited: a pending
    lot's points are pending, the rest available (before any debt is paid from them)."""
    return (account.available + (ZERO if pending else points), account.pending + (points if pending else ZERO),
            account.lifetime_earned + (points if earned else ZERO))


def credited_event(account: Balances, type_: str, points: Decimal, pending: bool, available_at: datetime,
                   expires_at: datetime | None, description: str, reference: Reference) -> dict[str, Any]:
    """The `points.credited` event's data for a credit just made to `account` (its balances after it)."""
    return {
        "member_id": account.member_id, "entry_type": type_, "points": points, "pending": pending,
        "available_at": available_at, "expires_at": expires_at, "description": description,
        "reference": {"type": reference[0], "id": str(reference[1])} if reference else None,
        "balance": {"available": account.available, "pending": account.pending}}


def credit_many(due_sql: str, params: dict[str, Any], type_: str, description: str, reference: tuple[str, Any],
                now: datetime, *, expires_at: datetime | None = None, earned: bool = True) -> int:
    """`credit`, set-based, for many accounts at once (a nightly job's range): each member that the
    raw SQL `due_sql` selects, as rows of (member_id, points), with its bind `params`, gets an entry
    and a lot of those points, available at once, that pay the account's debt first. The entry's
    type, description and `reference` are the same for every member, so the caller's selection
    leaves out those who have them already (that is what makes a second run change nothing). Like
    `credit`, it leaves out a member the credit would take past MAX_ACCOUNT_POINTS. Inside the
    caller's transaction; locks the accounts (PostgreSQL) lowest id first; one statement per table,
    no query per member. Returns how many members were credited."""
    reference_type, reference_id = reference
    params = {**params, "type": type_, "description": description[:200], "reference_type": reference_type,
              "reference_id": str(reference_id), "now": now, "expires": expires_at, "most": MAX_ACCOUNT_POINTS}
    when, amount = UTCDateTime(), Points()
    binds = {"now": when, "expires": when, "most": amount}

    def statement(sql: str) -> sa.TextClause:
        return sa.text(sql).bindparams(*(sa.bindparam(name, type_=type_of) for name, type_of in binds.items()
                                         if f":{name}" in sql))

    due = f"FROM ({due_sql}) d JOIN accounts a ON a.member_id = d.member_id"
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(statement(f"SELECT a.member_id {due} ORDER BY a.member_id FOR UPDATE OF a"), params)
    db.session.execute(sa.text("DROP TABLE IF EXISTS credit_due"))
    db.session.execute(statement(
        f"CREATE TEMPORARY TABLE credit_due AS SELECT d.member_id, d.points, "
        f"CASE WHEN a.debt < d.points THEN a.debt ELSE d.points END AS paid, "
        f"a.available + a.pending + a.held + d.points AS balance_after {due} "
        f"WHERE a.available + a.pending + d.points <= :most AND a.lifetime_earned + d.points <= :most"), params)
    # Looked up by member for every account and lot below (correlated subqueries): indexed, and with
    # statistics (autovacuum never analyses a temporary table), or each lookup scans the whole range
    # (a bulk award of 50 000 members took 150 s without it, 7.5 s with it).
    _index_due("credit_due", "member_id")
    entries = ("INSERT INTO ledger_entries (member_id, type, points, balance_after, description, reference_type, "
               "reference_id, expires_at, created_at) SELECT member_id, :type, points, balance_after, :description, "
               ":reference_type, :reference_id, :expires, :now FROM credit_due")
    lots = "INSERT INTO lots (member_id, entry_id, points, remaining, status, available_at, expires_at, created_at) "
    if db.session.get_bind().dialect.name == "postgresql":
        # The lots take their entry's id from the INSERT's own RETURNING: one statement, and no join back
        # to the entries table (at 1 M members that join was a quarter of the award).
        db.session.execute(statement(
            f"WITH e AS ({entries} RETURNING id, member_id) {lots}SELECT e.member_id, e.id, d.points, "
            "d.points - d.paid, 'available', :now, :expires, :now FROM e JOIN credit_due d ON d.member_id = e.member_id"),
            params)
    else:
        db.session.execute(statement(entries), params)
        db.session.execute(statement(
            f"{lots}SELECT d.member_id, e.id, d.points, d.points - d.paid, 'available', :now, :expires, "
            ":now FROM credit_due d JOIN ledger_entries e ON e.member_id = d.member_id AND e.type = :type "
            "AND e.reference_type = :reference_type AND e.reference_id = :reference_id AND e.created_at = :now"),
            params)
    # One join with the due rows (UPDATE ... FROM), not three correlated lookups per account.
    earned_sql = "lifetime_earned = accounts.lifetime_earned + d.points, " if earned else ""
    db.session.execute(statement(
        f"UPDATE accounts SET available = accounts.available + d.points, {earned_sql}"
        "debt = accounts.debt - d.paid, updated_at = :now FROM credit_due d WHERE d.member_id = accounts.member_id"),
        params)
    credited = db.session.scalar(sa.text("SELECT COUNT(*) FROM credit_due"))
    if webhooks.subscribers("points.credited"):
        webhooks.emit_many("points.credited", [
            {"member_id": member_id, "entry_type": type_, "points": points, "pending": False,
             "available_at": now, "expires_at": expires_at, "description": description,
             "reference": {"type": reference_type, "id": str(reference_id)},
             "balance": {"available": available, "pending": pending}}
            for member_id, points, available, pending in db.session.execute(sa.text(
                "SELECT d.member_id, d.points, a.available, a.pending FROM credit_due d "
                "JOIN accounts a ON a.member_id = d.member_id ORDER BY d.member_id").columns(
                sa.column("member_id", sa.BigInteger), sa.column("points", Points()),
                sa.column("available", Points()), sa.column("pending", Points())))], now)
    db.session.execute(sa.text("DROP TABLE credit_due"))
    return credited


def debit(account: Account, type_: str, points: Decimal, description: str, reference: Reference,
          now: datetime) -> Entry:
    """Spend available points, earliest-expiring lots first. Never below zero, never against debt."""
    if account.available < points:
        raise InsufficientPoints(
            f"The member has {max(account.available, ZERO)} points available; {points} are needed.",
            available=max(account.available, ZERO), needed=points,
        )
    account.available -= points
    account.updated_at = now
    entry = add_entry(account, type_, -points, description, reference, now)
    _take_from_lots(account.member_id, points, entry)
    return entry


def claw_back(account: Account, points: Decimal, description: str, reference: Reference, now: datetime,
              first_lot: Lot | None = None, type_: str = "reverse", unearned: bool = True) -> Entry:
    """Take back points: those of a refunded purchase, or an admin's negative adjustment.

    They come from `first_lot` (the purchase's own lot, pending or not) first, then from
    available lots; what was already spent becomes debt, which later credits pay first.
    `unearned` points also leave `lifetime_earned`."""
    left = points
    taken_pending = ZERO
    if first_lot is not None and first_lot.remaining > 0 and first_lot.status in ("pending", "available"):
        taken = min(left, first_lot.remaining)
        first_lot.remaining -= taken
        left -= taken
        if first_lot.status == "pending":
            taken_pending = taken
    taken_available = points - left - taken_pending
    if left > 0:
        for lot in _open_lots(account.member_id):
            taken = min(lot.remaining, left)
            lot.remaining -= taken
            left -= taken
            taken_available += taken
            if left == 0:
                break
    account.debt += left
    account.pending -= taken_pending
    account.available -= taken_available + left
    if unearned:
        account.lifetime_earned -= points
    account.updated_at = now
    return add_entry(account, type_, -points, description, reference, now)


def restore(account: Account, debit_entry: Entry, description: str, reference: Reference, now: datetime,
            points: Decimal | None = None) -> Entry:
    """Undo a debit: its points go back to the lots they came from, with those lots' expiry.

    With `points`, only that many come back (part of a redemption is cancelled): to the lots the
    debit took from last, which are the latest to expire. Points returned to a lot that has
    expired meanwhile expire again at once (with an entry). One restore per debit."""
    allocations = db.session.execute(
        sa.select(LotAllocation, Lot).join(Lot, Lot.id == LotAllocation.lot_id)
        .where(LotAllocation.entry_id == debit_entry.id).order_by(LotAllocation.id.desc())
    ).all()
    total = sum((allocation.points for allocation, _ in allocations), ZERO)
    left = total if points is None else min(points, total)
    account.available += left
    entry = add_entry(account, "reverse", left, description, reference, now)
    for allocation, lot in allocations:
        back = min(allocation.points, left)
        if back <= 0:
            break
        lot.remaining += back
        left -= back
        if lot.status == "expired":
            lot.status = "available"
    settle(account, now)
    return entry


def _pay_debt_from(account: Account, lot: Lot) -> None:
    """Points that become available pay the debt first. No entry: the balance is unchanged."""
    paid = min(lot.remaining, account.debt)
    lot.remaining -= paid
    account.debt -= paid


def _open_lots(member_id: int) -> sa.ScalarResult[Lot]:
    return db.session.scalars(
        sa.select(Lot).where(Lot.member_id == member_id, Lot.status == "available", Lot.remaining > 0)
        .order_by(*SPEND_ORDER)
    )


def _take_from_lots(member_id: int, points: Decimal, entry: Entry) -> None:
    left = points
    for lot in _open_lots(member_id):
        taken = min(lot.remaining, left)
        lot.remaining -= taken
        left -= taken
        db.session.add(LotAllocation(entry=entry, lot_id=lot.id, points=taken))
        if left == 0:
            return
    # The account said the points were there; the lots disagree. Never paper over that.
    raise RuntimeError(f"ledger inconsistency: member {member_id} lots short by {left}")


# --- holds ------------------------------------------------------------------------------------------

def hold(account: Account, hold_row: PointsHold, now: datetime) -> None:
    """Reserve `hold_row.points` of the account's available points, earliest expiry first: they
    leave `available` and their lots' `remaining` for the hold's allocations. No entry: the
    member still owns them."""
    points = hold_row.points
    if account.available < points:
        raise InsufficientPoints(
            f"The member has {max(account.available, ZERO)} points available; {points} are needed.",
            available=max(account.available, ZERO), needed=points,
        )
    account.available -= points
    account.held += points
    account.updated_at = now
    left = points
    for lot in _open_lots(account.member_id):
        taken = min(lot.remaining, left)
        lot.remaining -= taken
        left -= taken
        db.session.add(HoldAllocation(hold_id=hold_row.id, lot_id=lot.id, points=taken))
        if left == 0:
            return
    raise RuntimeError(f"ledger inconsistency: member {account.member_id} lots short by {left}")


def release_hold(account: Account, hold_row: PointsHold, status: str, now: datetime) -> None:
    """Give a hold's points back to the lots they came from (a lot whose expiry passed meanwhile
    expires now, with its entry); the hold ends `released` or `expired`."""
    _return_allocations(account, hold_row, ZERO, None, now)
    hold_row.status, hold_row.closed_at = status, now
    settle(account, now)


def capture_hold(account: Account, hold_row: PointsHold, points: Decimal, description: str, reference: Reference,
                 now: datetime) -> Entry:
    """Turn `points` of a hold into a debit entry (a payment) taken from the hold's own lots,
    recorded as lot allocations so that `restore` can reverse it like any payment; the rest goes
    back to the lots. Returns the entry."""
    entry = add_entry(account, "payment", -points, description, reference, now)
    _return_allocations(account, hold_row, points, entry, now)
    entry.balance_after = account.balance  # the balance once the hold is gone
    hold_row.status, hold_row.captured_points, hold_row.closed_at = "captured", points, now
    settle(account, now)
    return entry


def release_due_holds(account: Account, now: datetime) -> bool:
    """Holds of this (locked) account past their expiry give their points back. Were there any?"""
    due = db.session.scalars(
        sa.select(PointsHold).where(PointsHold.member_id == account.member_id, PointsHold.status == "held",
                                    PointsHold.expires_at <= now).order_by(PointsHold.id)
        .execution_options(populate_existing=True)).all()
    for row in due:
        _return_allocations(account, row, ZERO, None, now)
        row.status, row.closed_at = "expired", now
    return bool(due)


def _return_allocations(account: Account, hold_row: PointsHold, captured: Decimal, entry: Entry | None,
                        now: datetime) -> None:
    """The first `captured` points of the hold's allocations go to `entry` (as lot allocations);
    the rest return to their lots and to `available`."""
    allocations = db.session.execute(
        sa.select(HoldAllocation, Lot).join(Lot, Lot.id == HoldAllocation.lot_id)
        .where(HoldAllocation.hold_id == hold_row.id).order_by(HoldAllocation.id)).all()
    to_capture = captured
    for allocation, lot in allocations:
        taken = min(allocation.points, to_capture)
        to_capture -= taken
        if taken > 0:
            db.session.add(LotAllocation(entry=entry, lot_id=lot.id, points=taken))
        back = allocation.points - taken
        if back > 0:
            lot.remaining += back
            if lot.status == "expired":
                lot.status = "available"  # settle expires it again, with an entry
    account.held -= hold_row.points
    account.available += hold_row.points - captured
    account.updated_at = now
