"""The ledger's nightly jobs, set-based: pending points become available, points past their expiry
expire, and members are reminded of points about to expire.

They do to every account at once what `ledger.settle` does to one account when it is written to,
with the same results (the tests run both ways and compare): released points pay a debt first,
then what is past its expiry expires with an `expire` entry per lot. SQL over members in id
ranges, one transaction per range; each range first locks the accounts it will change, so a
purchase for one of those members waits for the batch (and then sees its result) instead of
settling the same lots twice. Idempotent: a second run finds nothing due. Restartable: a run
killed half-way has committed whole ranges only, and the next run does the rest.
"""
import json
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalty import clock
from loyalty.database import UTCDateTime, transaction
from loyalty.extensions import db
from loyalty.jobs.batching import BATCH, day_cutoff, id_ranges
from loyalty.jobs.models import Notification
from loyalty.points import ledger
from loyalty.points.models import Lot
from loyalty.webhooks import service as webhooks
from loyalty.config import settings

EXPIRY_DESCRIPTION = "Points expired"


def _t(sql):
    """Raw SQL whose :cutoff and :now are aware datetimes (stored as the models store them)."""
    return sa.text(sql).bindparams(*(sa.bindparam(name, type_=UTCDateTime())
                                     for name in ("cutoff", "now") if f":{name}" in sql))


def _lock_accounts(low, high, due_condition, params):
    """Lock (PostgreSQL) the accounts of the range that have something due, lowest id first."""
    if db.session.get_bind().dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE holds the whole database already
    db.session.execute(_t(
        f"SELECT a.member_id FROM accounts a WHERE a.member_id BETWEEN :low AND :high AND EXISTS "
        f"(SELECT 1 FROM lots l WHERE l.member_id = a.member_id AND {due_condition}) "
        f"ORDER BY a.member_id FOR UPDATE"), params)


def _index_due(table, *columns):
    """Index a range's temporary table on the columns the UPDATEs below look its rows up by (a
    correlated subquery per lot or account), so that a lookup is not a scan of the whole table,
    and give PostgreSQL its statistics (autovacuum never analyses temporary tables)."""
    for column in columns:
        db.session.execute(sa.text(f"CREATE INDEX {table}_{column} ON {table} ({column})"))
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text(f"ANALYZE {table}"))


PENDING_DUE = "l.status = 'pending' AND l.available_at <= :cutoff"
EXPIRY_DUE = "l.status = 'available' AND l.remaining > 0 AND l.expires_at <= :cutoff"


def release_range(low, high, cutoff, now):
    """Pending lots whose time has come become available; each pays the account's debt first, in
    the order the lots became available (as ledger.settle does)."""
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


def expire_range(low, high, cutoff, now):
    """Lots past their expiry give up what remains of them, earliest expiry first, one `expire`
    entry per lot with the balance after it."""
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


def release_pending(as_of, progress=None, now=None, batch=BATCH):
    now = now or clock.now()
    cutoff = day_cutoff(as_of, now)
    lots = members = 0
    for low, high in id_ranges(batch):
        with transaction():
            count, touched = release_range(low, high, cutoff, now)
        lots, members = lots + count, members + touched
        if progress:
            progress(high - low + 1)
    return {"lots_released": lots, "members": members, "rows": lots}


def expire_points(as_of, progress=None, now=None, batch=BATCH):
    """Release what has become available first (a lot may have become available and expired since
    the last run, and released points pay debts before anything expires), then expire."""
    now = now or clock.now()
    cutoff = day_cutoff(as_of, now)
    released = expired = members = 0
    for low, high in id_ranges(batch):
        with transaction():
            count, _ = release_range(low, high, cutoff, now)
            gone, touched = expire_range(low, high, cutoff, now)
        released, expired, members = released + count, expired + gone, members + touched
        if progress:
            progress(high - low + 1)
    return {"lots_expired": expired, "lots_released": released, "members": members,
            "rows": expired + released}


def expiry_reminders(as_of, progress=None, now=None, days=None):
    """One notification per member and expiry date for points expiring within `days` (default
    LOYALTY_EXPIRY_REMINDER_DAYS, 30) after local day `as_of`: "N points expire on D". A second
    run finds them queued already (unique member + kind + expiry) and adds nothing."""
    now = now or clock.now()
    days = days if days is not None else settings().expiry_reminder_days
    tz = settings().timezone
    start = clock.end_of_local_day(as_of, tz)
    until = clock.end_of_local_day(as_of + timedelta(days=days), tz)
    total = 0
    # Lots expire at a handful of instants (local midnights): each one's key and texts, once.
    expiries = {}

    def expiry(expires_at):
        if expires_at not in expiries:
            last_day = str(_last_day(expires_at, tz))
            expiries[expires_at] = (f"expires:{last_day}", expires_at.isoformat(), last_day)
        return expiries[expires_at]

    for low, high in id_ranges(BATCH):
        with transaction():
            rows = db.session.execute(
                sa.select(Lot.member_id, Lot.expires_at, sa.func.sum(Lot.remaining))
                .where(Lot.member_id.between(low, high), Lot.status == "available", Lot.remaining > 0,
                       Lot.expires_at > start, Lot.expires_at <= until)
                .group_by(Lot.member_id, Lot.expires_at)).all()
            if rows:
                # Those queued by an earlier run (most of them, night after night) are not sent again.
                queued = set(db.session.execute(
                    sa.select(Notification.member_id, Notification.dedupe_key).where(
                        Notification.member_id.between(low, high), Notification.kind == "points_expiring",
                        Notification.dedupe_key.in_({expiry(expires_at)[0] for _, expires_at, _ in rows}))).all())
                fresh = []
                for member_id, expires_at, points in rows:
                    key, expires_text, last_day = expiry(expires_at)
                    if (member_id, key) not in queued:
                        fresh.append((member_id, key, {"points": str(points), "expires_at": expires_text,
                                                       "last_day": last_day}))
                if fresh:
                    total += _queue_reminders(fresh, now)
                if webhooks.subscribers("points.expiring"):  # those this run queued, not older ones
                    webhooks.emit_many("points.expiring", [
                        {"member_id": member_id, **payload} for member_id, payload in db.session.execute(
                            sa.select(Notification.member_id, Notification.payload).where(
                                Notification.member_id.between(low, high), Notification.kind == "points_expiring",
                                Notification.created_at == now).order_by(Notification.id))], now)
        if progress:
            progress(high - low + 1)
    return {"reminders": total, "rows": total}


def _last_day(expires_at, tz):
    """Lots expire at the end of a local day (an exclusive bound): the last day they can be used."""
    return clock.local_date(expires_at - timedelta(microseconds=1), tz)


def _queue_reminders(fresh, now):
    """Queue (member_id, dedupe_key, payload) reminders with multi-row INSERTs. One queued
    meanwhile is skipped by the database (unique member + kind + expiry day) and not returned, so
    nothing is queued or counted twice. Returns how many were queued."""
    table = Notification.__table__
    if db.session.get_bind().dialect.name == "postgresql":
        # The range's rows as one JSON array, unpacked by the server: a multi-row VALUES would make
        # psycopg expand a placeholder per value in Python, and an array parameter per column is
        # adapted element by element. Each payload is written as the JSON column type writes it
        # (json.dumps), and a `json` element keeps that text as it is.
        given = sa.func.json_array_elements(sa.cast(sa.bindparam("rows", type_=sa.Text), sa.JSON)) \
            .table_valued("value").render_derived(name="given")
        rows = sa.select(sa.cast(given.c.value.op("->>")(0), sa.BigInteger), sa.literal("points_expiring"),
                         given.c.value.op("->>")(1), given.c.value.op("->", return_type=sa.JSON)(2),
                         sa.literal(now, UTCDateTime()))
        statement = (postgresql.insert(table).from_select(["member_id", "kind", "dedupe_key", "payload", "created_at"], rows)
                     .on_conflict_do_nothing().returning(table.c.id))
        queued = db.session.execute(statement, {"rows": json.dumps(fresh)})
    else:
        # RETURNING makes SQLAlchemy send them as multi-row INSERTs ("insertmanyvalues").
        queued = db.session.execute(sqlite.insert(table).on_conflict_do_nothing().returning(table.c.id), [
            {"member_id": member_id, "kind": "points_expiring", "dedupe_key": key, "payload": payload,
             "created_at": now} for member_id, key, payload in fresh])
    return len(queued.all())


HOLDS_BATCH = 5000


def release_holds(as_of=None, progress=None, now=None, batch=HOLDS_BATCH):
    """Holds past their expiry give their points back to the lots they came from (what is past its
    own expiry then is simply due, for `points.expire` or the member's next write), in batches of
    holds, one transaction each. A member with a debt has it paid from what came back, as
    ledger.settle does. Idempotent: a released hold is no longer `held`; restartable: a batch is
    whole or not at all. Runs every minute."""
    now = now or clock.now()
    holds = members = 0
    while True:
        with transaction():
            count, touched = release_holds_batch(now, batch)
        holds, members = holds + count, members + touched
        if progress and touched:
            progress(touched)
        if count < batch:
            break
    return {"holds_released": holds, "members": members, "rows": holds}


HOLD_DUE = "h.status = 'held' AND h.expires_at <= :now"


def release_holds_batch(now, batch):
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
        ledger.lock_account(member_id, now)
    return count, touched
