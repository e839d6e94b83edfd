"""The ledger's nightly jobs, set-based: pending points become available, points past their expiry
expire, and members are reminded of points about to expire.

They do to every account at once what `ledger.settle` does to one account when it is written to:
the set-based form of that rule (`ledger.release_range`, `ledger.expire_range`) lives beside it in
ledger.py. Members in id ranges, one transaction per range. Idempotent: a second run finds nothing
due. Restartable: a run killed half-way has committed whole ranges only, and the next run does the
rest.
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
from loyalty.points.ledger import expire_range, release_holds_range, release_range
from loyalty.points.models import Lot
from loyalty.webhooks import service as webhooks
from loyalty.config import settings


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
            count, touched = release_holds_range(now, batch)
        holds, members = holds + count, members + touched
        if progress and touched:
            progress(touched)
        if count < batch:
            break
    return {"holds_released": holds, "members": members, "rows": holds}
