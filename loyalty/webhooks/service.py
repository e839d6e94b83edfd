"""Webhooks: subscriptions (admin) and the outbox written in each change's transaction.

An event is written only if some active subscription wants its type, in the same transaction as
the change, with one delivery row per subscriber: the change and its events commit or vanish
together. The job that delivers them (`webhooks.deliver`, signed, retried with back-off, dead
after the last try) is in jobs.py.
"""
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import simplejson
import sqlalchemy as sa

from loyalty import audit, clock, settings_cache
from loyalty.database import rows_changed, transaction
from loyalty.errors import Conflict, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.json import json_default
from loyalty.webhooks import destinations
from loyalty.webhooks.models import EVENTS, Delivery, Event, Subscription, SubscriptionEvent
from loyalty.config import settings

EDITABLE = ("url", "description", "active")


# --- subscriptions (admin) ------------------------------------------------------------------------

def _check(fields: Mapping[str, Any]) -> None:
    errors: dict[str, list[str]] = {}
    if "url" in fields:
        try:
            destinations.check(fields["url"], settings().webhook_allow_private)
        except destinations.Refused as refused:
            errors["url"] = [refused.message]
    if "events" in fields:
        unknown = sorted(set(fields["events"]) - set(EVENTS))
        if unknown or not fields["events"]:
            errors["events"] = [f"Choose one or more of: {', '.join(EVENTS)}."]
    if "secret" in fields and len(fields["secret"]) < 16:
        errors["secret"] = ["At least 16 characters (a random string both sides keep)."]
    if errors:
        field = next(iter(errors))
        raise ValidationFailed(f"The {field} is not valid: {errors[field][0]}", errors=errors)


def _document(subscription: Subscription) -> dict[str, Any]:
    """What the audit log keeps of a subscription: never its secret."""
    return {"url": subscription.url, "description": subscription.description,
            "events": subscription.events, "active": subscription.active}


def create_subscription(fields: Mapping[str, Any], actor: str, now: datetime | None = None) -> Subscription:
    now = now or clock.now()
    _check(fields)
    with transaction():
        subscription = Subscription(url=fields["url"], description=fields.get("description", ""),
                                    secret=fields["secret"], active=fields.get("active", True),
                                    created_at=now, updated_at=now)
        subscription.event_rows = [SubscriptionEvent(event=e) for e in sorted(set(fields["events"]))]
        db.session.add(subscription)
        db.session.flush()
        audit.record(actor, "webhook.create", "webhook", subscription.id, None, _document(subscription), now)
    return subscription


def update_subscription(subscription_id: int, changes: Mapping[str, Any], actor: str,
                        now: datetime | None = None) -> Subscription:
    now = now or clock.now()
    _check(changes)
    with transaction():
        subscription = _subscription(subscription_id, lock=True)
        before = _document(subscription)
        for key in EDITABLE:
            if key in changes:
                setattr(subscription, key, changes[key])
        if "events" in changes:
            wanted = set(changes["events"])
            subscription.event_rows = [row for row in subscription.event_rows if row.event in wanted] + [
                SubscriptionEvent(event=e) for e in sorted(wanted - set(subscription.events))]
        if "secret" in changes:
            subscription.secret = changes["secret"]
        subscription.updated_at = now
        after = _document(subscription)
        if "secret" in changes:
            after["secret"] = "changed"
        audit.record(actor, "webhook.update", "webhook", subscription.id, before, after, now)
    return subscription


def delete_subscription(subscription_id: int, actor: str, now: datetime | None = None) -> Subscription:
    """The subscription stops; deliveries not yet made are cancelled. Its history stays readable."""
    now = now or clock.now()
    with transaction():
        subscription = _subscription(subscription_id, lock=True)
        before = _document(subscription)
        subscription.active, subscription.deleted_at, subscription.updated_at = False, now, now
        db.session.execute(sa.update(Delivery).where(Delivery.subscription_id == subscription.id,
                                                     Delivery.status == "pending")
                           .values(status="cancelled", next_attempt_at=None)
                           .execution_options(synchronize_session=False))
        audit.record(actor, "webhook.delete", "webhook", subscription.id, before, None, now)
    return subscription


def subscriptions(limit: int = 50, after_id: int | None = None) -> tuple[Sequence[Subscription], int | None]:
    """The subscriptions not deleted, oldest first; keyset-paginated on the id: (page, last id or None)."""
    query = sa.select(Subscription).where(Subscription.deleted_at.is_(None)).order_by(Subscription.id)
    if after_id:
        query = query.where(Subscription.id > after_id)
    rows = db.session.scalars(query.limit(limit + 1)).all()
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def get_subscription(subscription_id: int) -> Subscription:
    return _subscription(subscription_id)


def _subscription(subscription_id: int, lock: bool = False) -> Subscription:
    subscription = db.session.get(Subscription, subscription_id, with_for_update=lock or None)
    if subscription is None or subscription.deleted_at is not None:
        raise NotFound(f"No webhook subscription with id {subscription_id}.")
    return subscription


def subscription_stats(subscription_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """{subscription id: {status: count}} for the listing."""
    rows = db.session.execute(sa.select(Delivery.subscription_id, Delivery.status, sa.func.count())
                              .where(Delivery.subscription_id.in_(subscription_ids))
                              .group_by(Delivery.subscription_id, Delivery.status)).all()
    stats = {i: {"pending": 0, "delivered": 0, "dead": 0, "cancelled": 0} for i in subscription_ids}
    for subscription_id, status, count in rows:
        stats[subscription_id][status] = count
    return stats


def deliveries(subscription_id: int, status: str | None = None, limit: int = 50,
               before_id: int | None = None) -> tuple[Sequence[Delivery], int | None]:
    """A subscription's deliveries newest first, with their attempts; keyset-paginated on the id."""
    _subscription(subscription_id)
    query = sa.select(Delivery).where(Delivery.subscription_id == subscription_id).order_by(Delivery.id.desc())
    if status:
        query = query.where(Delivery.status == status)
    if before_id:
        query = query.where(Delivery.id < before_id)
    rows = db.session.scalars(query.limit(limit + 1)).all()
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)


def replay(delivery_id: int, actor: str, now: datetime | None = None) -> Delivery:
    """Send a dead (or delivered) delivery again from the first try, as soon as the job runs."""
    now = now or clock.now()
    with transaction():
        delivery = db.session.get(Delivery, delivery_id, with_for_update={"of": Delivery},
                                  populate_existing=True)
        if delivery is None:
            raise NotFound(f"No webhook delivery with id {delivery_id}.")
        if delivery.status == "pending":
            raise Conflict("This delivery is still pending; the job will try it again at "
                           f"{delivery.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC.")
        if delivery.status == "cancelled":
            raise Conflict("This delivery was cancelled with its subscription; it cannot be replayed.")
        audit.record(actor, "webhook.replay", "webhook_delivery", delivery.id,
                     {"status": delivery.status, "attempts": delivery.attempts}, {"status": "pending"}, now)
        delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, now
        delivery.delivered_at = None
    return delivery


def replay_dead(subscription_id: int, actor: str, now: datetime | None = None) -> int:
    """Every dead delivery of a subscription becomes pending again (one UPDATE). Returns how many."""
    now = now or clock.now()
    with transaction():
        _subscription(subscription_id, lock=True)
        count = rows_changed(
            sa.update(Delivery).where(Delivery.subscription_id == subscription_id, Delivery.status == "dead")
            .values(status="pending", attempts=0, next_attempt_at=now))
        audit.record(actor, "webhook.replay_dead", "webhook", subscription_id, None, {"replayed": count}, now)
    return count


# --- the outbox -------------------------------------------------------------------------------------

def subscribers(event_type: str) -> tuple[int, ...]:
    """Ids of the active subscriptions that want `event_type`. Every purchase asks, so the whole map
    is kept per process (loyalty/settings_cache.py): a purchase does not pay a round trip to learn
    that nobody listens, and a change of subscriptions reaches every process's next request."""
    return settings_cache.cached("webhook_subscribers", _read_subscribers).get(event_type, ())


def _read_subscribers() -> dict[str, tuple[int, ...]]:
    wanted: dict[str, list[int]] = {}
    for event, subscription_id in db.session.execute(
            sa.select(SubscriptionEvent.event, SubscriptionEvent.subscription_id)
            .join(Subscription, Subscription.id == SubscriptionEvent.subscription_id)
            .where(Subscription.active.is_(True), Subscription.deleted_at.is_(None))
            .order_by(SubscriptionEvent.event, SubscriptionEvent.subscription_id)):
        wanted.setdefault(event, []).append(subscription_id)
    return {event: tuple(ids) for event, ids in wanted.items()}


settings_cache.watch(Subscription, "webhook_subscribers")
settings_cache.watch(SubscriptionEvent, "webhook_subscribers")


def emit(event_type: str, data: Mapping[str, Any], now: datetime) -> None:
    """Inside the change's transaction: the event and its deliveries, if anyone listens."""
    emit_many(event_type, [data], now)


def emit_many(event_type: str, datas: Sequence[Mapping[str, Any]], now: datetime) -> int:
    """Many events of one type (a job's batch): two multi-row INSERTs, no query per event."""
    assert event_type in EVENTS, event_type
    if not datas:
        return 0
    targets = subscribers(event_type)
    if not targets:
        return 0
    events: list[dict[str, Any]] = [{"id": str(uuid.uuid4()), "type": event_type, "created_at": now} for _ in datas]
    for event, data in zip(events, datas):
        event["body"] = body_of(event["id"], event_type, now, data)
    db.session.execute(sa.insert(Event), events)
    db.session.execute(sa.insert(Delivery), [
        {"event_id": event["id"], "subscription_id": target, "status": "pending", "attempts": 0,
         "next_attempt_at": now, "created_at": now}
        for event in events for target in targets])
    return len(events)


def body_of(event_id: str, event_type: str, created_at: datetime, data: Mapping[str, Any]) -> str:
    """The JSON a receiver gets: numbers exact (points are decimals, never floats)."""
    return simplejson.dumps({"id": event_id, "type": event_type, "created_at": created_at.isoformat(),
                             "data": data}, use_decimal=True, ensure_ascii=False, sort_keys=True,
                            separators=(",", ":"), default=json_default)
