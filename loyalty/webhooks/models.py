"""Webhooks: who wants to hear of what, the outbox of events, and the deliveries with their attempts."""
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from loyalty.database import BigId, UTCDateTime
from loyalty.extensions import Model

EVENTS = ("member.created", "points.credited", "points.expiring", "tier.changed", "referral.rewarded",
          "voucher.used")


class Subscription(Model):
    """An endpoint of another system. `secret` signs each body (HMAC-SHA256); it is shown to
    nobody after it is set. A paused subscription keeps its deliveries until it is resumed; a
    deleted one cancels them."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(sa.String(500))
    description: Mapped[str] = mapped_column(sa.String(200), default="", server_default="")
    secret: Mapped[str] = mapped_column(sa.String(200))
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())
    deleted_at = mapped_column(UTCDateTime)
    created_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)
    event_rows = relationship("SubscriptionEvent", cascade="all, delete-orphan", lazy="selectin",
                              order_by="SubscriptionEvent.event")

    @property
    def events(self):
        return [row.event for row in self.event_rows]


class SubscriptionEvent(Model):
    """One row per event a subscription wants, so an event finds its subscribers with a join."""

    __tablename__ = "webhook_subscription_events"
    __table_args__ = (sa.Index("ix_webhook_subscription_events_event", "event", "subscription_id"),)

    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("webhook_subscriptions.id"), primary_key=True)
    event: Mapped[str] = mapped_column(sa.String(40), primary_key=True)


class Event(Model):
    """The outbox: written in the transaction of the change it tells of, so it exists exactly when
    the change does. Written only when some subscription wants its type. `body` is the exact JSON
    every delivery sends (and signs), so a retry or a replay sends the same bytes."""

    __tablename__ = "webhook_events"
    __table_args__ = (sa.Index("ix_webhook_events_created", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)  # a UUID, also in the body
    type: Mapped[str] = mapped_column(sa.String(40))
    body: Mapped[str] = mapped_column(sa.Text)
    created_at = mapped_column(UTCDateTime, nullable=False)


class Delivery(Model):
    """One event to one subscription: pending until a 2xx answer (delivered), retried with back-off,
    dead after the last try (an admin may replay it), cancelled if the subscription is deleted."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.UniqueConstraint("event_id", "subscription_id"),
                      sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at", "id"),
                      sa.Index("ix_webhook_deliveries_subscription", "subscription_id", "id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.ForeignKey("webhook_events.id"))
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("webhook_subscriptions.id"))
    status: Mapped[str] = mapped_column(sa.String(10))  # pending | delivered | dead | cancelled
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    next_attempt_at = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(sa.Integer)
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    delivered_at = mapped_column(UTCDateTime)
    created_at = mapped_column(UTCDateTime, nullable=False)
    event = relationship(Event, lazy="joined", innerjoin=True)
    attempt_rows = relationship("Attempt", lazy="selectin", order_by="Attempt.id")


class Attempt(Model):
    """Each try of a delivery: when, the answer's status (or the error), how long it took."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (sa.Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(sa.ForeignKey("webhook_deliveries.id"))
    attempted_at = mapped_column(UTCDateTime, nullable=False)
    status_code: Mapped[int | None] = mapped_column(sa.Integer)
    error: Mapped[str | None] = mapped_column(sa.String(500))
    duration_ms: Mapped[int] = mapped_column(sa.Integer)
