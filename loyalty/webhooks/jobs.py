"""Webhook delivery, the job (`webhooks.deliver`, every minute): each due delivery's body is POSTed,
signed with HMAC-SHA256 of the body under the subscription's secret, outside any transaction, then
the attempt is recorded in a transaction of its own. A 2xx answer delivers it; anything else (an
error status, a timeout, a refused connection, a redirect, a destination that is not public: see
destinations.py) schedules a retry after a back-off that doubles each time (at most 6 hours); after
LOYALTY_WEBHOOK_MAX_ATTEMPTS tries the delivery is dead, and an admin may replay it (service.py).
Delivery is at least once: a receiver that answers late may see an event twice, and tells by its id.
"""
import hashlib
import hmac
import logging
import time
from datetime import timedelta

import sqlalchemy as sa

from loyalty import clock
from loyalty.config import settings
from loyalty.database import transaction
from loyalty.extensions import db
from loyalty.webhooks import sender
from loyalty.webhooks.models import Attempt, Delivery, Event, Subscription

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Loyalty-Signature"
MAX_BACKOFF = timedelta(hours=6)


def signature(secret, body: bytes):
    """`sha256=` and the hex HMAC-SHA256 of the body under the secret (what receivers compare)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def due_count(now=None):
    now = now or clock.now()
    return db.session.scalar(sa.select(sa.func.count()).select_from(Delivery).join(Subscription)
                             .where(*_due(now)))


def _due(now):
    return (Delivery.status == "pending", Delivery.next_attempt_at <= now, Subscription.active.is_(True),
            Subscription.deleted_at.is_(None))


def deliver_due(as_of=None, progress=None, now=None, send=None):
    """Try every delivery due now, oldest first, in batches: read a batch, then for each delivery
    POST its body with no transaction open and record the attempt and its outcome in a transaction
    of its own. Whatever goes wrong with one delivery (a URL stored before the rules, a name that
    now resolves to a private address, an exception from the HTTP client) is that delivery's failed
    attempt; the others are sent and recorded all the same, and an outcome once committed is never
    lost to a later failure (so nothing is sent twice for it). A delivery that fails is due later,
    so one run tries each at most once. `as_of` is unused (deliveries are due by the clock); `send`
    replaces the HTTP call in tests."""
    config = settings()
    send = send or _post
    totals = {"delivered": 0, "failed": 0, "dead": 0, "rows": 0}
    after = 0
    while True:
        started = now or clock.now()
        batch = db.session.execute(
            sa.select(Delivery.id, Delivery.attempts, Event.id, Event.type, Event.body, Subscription.url,
                      Subscription.secret)
            .join(Event, Event.id == Delivery.event_id).join(Subscription, Subscription.id == Delivery.subscription_id)
            .where(*_due(started), Delivery.id > after).order_by(Delivery.id)
            .limit(config.webhook_batch)).all()
        db.session.rollback()  # no transaction stays open while we wait for receivers
        if not batch:
            return totals
        for row in batch:
            _record([_attempt(row, send, config, now)], config, totals)
            if progress:
                progress(1)
        after = batch[-1][0]


def _attempt(row, send, config, now):
    """(delivery id, attempts so far, attempted at, status code, error, duration in ms): never raises."""
    delivery_id, attempts, event_id, event_type, body, url, secret = row
    attempted_at = now or clock.now()
    began = time.monotonic()
    try:
        payload = body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": "loyalty-webhooks/1",
                   "X-Loyalty-Event": event_type, "X-Loyalty-Event-Id": event_id,
                   "X-Loyalty-Delivery": str(delivery_id), SIGNATURE_HEADER: signature(secret, payload)}
        status_code, error = send(url, payload, headers, config.webhook_timeout_seconds)
    except Exception:  # noqa: BLE001 - one delivery's failure is recorded on it, never the job's
        log.exception("webhook delivery %s failed unexpectedly", delivery_id)
        status_code, error = None, "the delivery failed unexpectedly; the error is in the service's log"
    return (delivery_id, attempts, attempted_at, status_code, error[:500] if error else None,
            int((time.monotonic() - began) * 1000))


def _record(results, config, totals):
    max_attempts = config.webhook_max_attempts
    backoff = timedelta(seconds=config.webhook_backoff_seconds)
    with transaction():
        db.session.execute(sa.insert(Attempt), [
            {"delivery_id": delivery_id, "attempted_at": at, "status_code": code, "error": error,
             "duration_ms": duration}
            for delivery_id, _, at, code, error, duration in results])
        for delivery_id, attempts, at, code, error, _ in results:
            tries = attempts + 1
            ok = code is not None and 200 <= code < 300
            if ok:
                values = {"status": "delivered", "delivered_at": at, "next_attempt_at": None}
                totals["delivered"] += 1
            elif tries >= max_attempts:
                values = {"status": "dead", "next_attempt_at": None}
                totals["dead"] += 1
            else:
                values = {"next_attempt_at": at + min(backoff * 2 ** (tries - 1), MAX_BACKOFF)}
                totals["failed"] += 1
            # Only if nobody (an admin's replay) changed it while we were sending.
            db.session.execute(
                sa.update(Delivery).where(Delivery.id == delivery_id, Delivery.status == "pending",
                                          Delivery.attempts == attempts)
                .values(attempts=tries, last_status_code=code, last_error=error, **values)
                .execution_options(synchronize_session=False))
            totals["rows"] += 1


def _post(url, body, headers, timeout):
    """(status code or None, error in our words or None): see sender.post."""
    return sender.post(url, body, headers, timeout, settings().webhook_allow_private)
