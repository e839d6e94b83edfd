import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.database import BigId, Money, Points, ScaledDecimal, UTCDateTime
from loyalty.extensions import Model


class Tier(Model):
    """A rung of the ladder. Thresholds and benefits are data that marketing edits."""

    __tablename__ = "tiers"

    code: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    rank: Mapped[int] = mapped_column(sa.Integer, unique=True)
    qualify_spend = mapped_column(Money(), nullable=False)
    qualify_activities: Mapped[int] = mapped_column(sa.Integer)
    qualify_mode: Mapped[str] = mapped_column(sa.String(3))  # all | any
    earn_multiplier = mapped_column(ScaledDecimal(2), nullable=False)
    birthday_points = mapped_column(Points(), nullable=False)
    service_level: Mapped[str] = mapped_column(sa.String(200))
    perks = mapped_column(sa.JSON, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class TierChange(Model):
    """The history of a member's tier: from, to, why, when (and who, for a manual change)."""

    __tablename__ = "tier_changes"
    __table_args__ = (sa.Index("ix_tier_changes_member", "member_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    from_code: Mapped[str | None] = mapped_column(sa.String(20))
    to_code: Mapped[str] = mapped_column(sa.String(20))
    reason: Mapped[str] = mapped_column(sa.String(20))  # upgrade | downgrade | manual | refund
    note: Mapped[str | None] = mapped_column(sa.String(200))
    # The purchase that made an upgrade, or whose refund undid one: a refund finds what it returned.
    purchase_id: Mapped[int | None] = mapped_column(sa.ForeignKey("purchases.id"))
    actor: Mapped[str | None] = mapped_column(sa.String(150))
    created_at = mapped_column(UTCDateTime, nullable=False)
