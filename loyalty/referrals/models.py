"""Referral campaigns (marketing's terms) and referrals (one per referred member)."""
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from loyalty.database import BigId, Money, Points, UTCDateTime
from loyalty.extensions import Model

ZERO = sa.text("0")


class ReferralCampaign(Model):
    __tablename__ = "referral_campaigns"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    starts_at = mapped_column(UTCDateTime, nullable=False)
    ends_at = mapped_column(UTCDateTime)  # None: open-ended
    referrer_points = mapped_column(Points(), nullable=False)
    referee_points = mapped_column(Points(), nullable=False)
    min_first_purchase = mapped_column(Money(), nullable=False)
    qualify_within_days: Mapped[int] = mapped_column(sa.Integer)
    return_window_days: Mapped[int] = mapped_column(sa.Integer, default=30, server_default="30")
    max_rewards_per_referrer: Mapped[int | None] = mapped_column(sa.Integer)
    ambassador_threshold: Mapped[int | None] = mapped_column(sa.Integer)
    ambassador_bonus_points = mapped_column(Points(), nullable=False, server_default=ZERO)
    link_template: Mapped[str] = mapped_column(sa.String(500))
    created_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class Referral(Model):
    """A referred member under the campaign that was running when they joined. Its terms are
    copied from that campaign then, so later edits of the campaign do not change them."""

    __tablename__ = "referrals"
    __table_args__ = (sa.Index("ix_referrals_referrer", "referrer_id", "status"),
                      sa.Index("ix_referrals_campaign", "campaign_id", "status"),
                      sa.Index("ix_referrals_pending_deadline", "status", "deadline"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(sa.ForeignKey("referral_campaigns.id"))
    referrer_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    referee_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"), unique=True)
    # pending -> qualified (rewarded) | missed (first purchase too small) | expired (no purchase in
    # time); qualified -> clawed_back (the purchase was refunded below the minimum)
    status: Mapped[str] = mapped_column(sa.String(12))
    referrer_points = mapped_column(Points(), nullable=False)
    referee_points = mapped_column(Points(), nullable=False)
    min_first_purchase = mapped_column(Money(), nullable=False)
    deadline = mapped_column(UTCDateTime, nullable=False)
    return_window_days: Mapped[int] = mapped_column(sa.Integer)
    max_rewards_per_referrer: Mapped[int | None] = mapped_column(sa.Integer)
    purchase_id: Mapped[int | None] = mapped_column(sa.ForeignKey("purchases.id"))
    referrer_rewarded: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    points_granted = mapped_column(Points(), nullable=False, server_default=ZERO)
    created_at = mapped_column(UTCDateTime, nullable=False)
    settled_at = mapped_column(UTCDateTime)  # qualified, missed or expired
    clawed_back_at = mapped_column(UTCDateTime)

    campaign = relationship("ReferralCampaign")
