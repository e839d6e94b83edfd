"""Promotions (points campaigns marketing runs) and the grants they made to purchases."""
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from loyalty.database import BigId, Money, Points, UTCDateTime
from loyalty.extensions import Model

ZERO = sa.text("0")


class Promotion(Model):
    """A promotion as marketing configured it. `status` is stored as draft, active or stopped; an
    active promotion past its `ends_at` reads as "ended". `budget_used` is a counter changed only by
    a conditional UPDATE under the row's lock (promotions/service.py), never through the ORM, so a
    purchase does not invalidate the settings cache that serves the promotions to every purchase."""

    __tablename__ = "promotions"
    __table_args__ = (sa.Index("ix_promotions_status_starts", "status", "starts_at"),
                      sa.CheckConstraint("budget_points IS NULL OR budget_used <= budget_points",
                                         name="budget_not_exceeded"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(10))  # draft | active | stopped
    starts_at = mapped_column(UTCDateTime, nullable=False)
    ends_at = mapped_column(UTCDateTime)
    schedule = mapped_column(sa.JSON)  # {"days_of_week", "from", "until"} or None
    scope = mapped_column(sa.JSON)  # {"stores", "channels", "tiers", "tags", "categories", "skus", ...}
    effect = mapped_column(sa.JSON, nullable=False)  # {"type", "value" | "points" [, "per"]}: decimals as strings
    per_member: Mapped[int | None] = mapped_column(sa.Integer)
    per_member_period: Mapped[str | None] = mapped_column(sa.String(10))
    budget_points = mapped_column(Points())
    budget_used = mapped_column(Points(), nullable=False, server_default=ZERO)
    stacking: Mapped[str] = mapped_column(sa.String(10))  # stack | exclusive
    priority: Mapped[int] = mapped_column(sa.Integer)
    created_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)
    stopped_at = mapped_column(UTCDateTime)

    @property
    def limits(self):
        """The limits as the API shows them, or None when there are none."""
        limits = {key: value for key, value in (("per_member", self.per_member),
                                                ("per_member_period", self.per_member_period),
                                                ("budget_points", self.budget_points)) if value is not None}
        return limits or None


class PromotionGrant(Model):
    """What one promotion gave one purchase: the `bonus` entry and lot behind it, the period it
    counts in for the per-member limit, and what refunds took back."""

    __tablename__ = "promotion_grants"
    __table_args__ = (sa.UniqueConstraint("purchase_id", "promotion_id"),
                      sa.Index("ix_promotion_grants_member_period", "member_id", "promotion_id", "period"),
                      sa.Index("ix_promotion_grants_promotion", "promotion_id", "member_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    promotion_id: Mapped[int] = mapped_column(sa.ForeignKey("promotions.id"))
    purchase_id: Mapped[int] = mapped_column(sa.ForeignKey("purchases.id"))
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    period: Mapped[str] = mapped_column(sa.String(10))
    qualifying_amount = mapped_column(Money(), nullable=False)
    points = mapped_column(Points(), nullable=False)
    # What refunds reversed in all (pro rata), and of that what they took from the member: the
    # difference is points of the grant's lot that had expired, gone already.
    points_reversed = mapped_column(Points(), nullable=False, server_default=ZERO)
    points_clawed_back = mapped_column(Points(), nullable=False, server_default=ZERO)
    entry_id: Mapped[int] = mapped_column(sa.ForeignKey("ledger_entries.id"))
    lot_id: Mapped[int] = mapped_column(sa.ForeignKey("lots.id"))
    created_at = mapped_column(UTCDateTime, nullable=False)

    entry = relationship("Entry")
    lot = relationship("Lot")
