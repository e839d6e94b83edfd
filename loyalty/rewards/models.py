"""The reward catalog, redemptions (points spent on a reward) and the vouchers they issue."""
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from loyalty.database import BigId, Money, Points, UTCDateTime
from loyalty.extensions import Model

KINDS = ("goods", "service", "coupon", "cash_voucher")
LIMIT_PERIODS = ("month", "ever")


class Reward(Model):
    __tablename__ = "rewards"
    __table_args__ = (sa.CheckConstraint("stock IS NULL OR stock >= 0", name="stock_not_negative"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str] = mapped_column(sa.String(2000), default="", server_default="")
    kind: Mapped[str] = mapped_column(sa.String(20))
    cash_value = mapped_column(Money())  # what a cash voucher is worth at the till
    points_cost = mapped_column(Points(), nullable=False)
    stock: Mapped[int | None] = mapped_column(sa.Integer)  # None: unlimited
    per_member_limit: Mapped[int | None] = mapped_column(sa.Integer)  # units; None: no limit
    limit_period: Mapped[str] = mapped_column(sa.String(10), default="ever", server_default="ever")
    min_tier: Mapped[str | None] = mapped_column(sa.ForeignKey("tiers.code"))
    valid_from = mapped_column(UTCDateTime)
    valid_until = mapped_column(UTCDateTime)
    voucher_valid_days: Mapped[int] = mapped_column(sa.Integer)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())
    image_url: Mapped[str | None] = mapped_column(sa.String(500))
    created_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class Redemption(Model):
    __tablename__ = "redemptions"
    __table_args__ = (sa.Index("ix_redemptions_member", "member_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    reward_id: Mapped[int] = mapped_column(sa.ForeignKey("rewards.id"))
    quantity: Mapped[int] = mapped_column(sa.Integer)
    unit_cost = mapped_column(Points(), nullable=False)
    points_spent = mapped_column(Points(), nullable=False)
    points_returned = mapped_column(Points(), nullable=False, server_default=sa.text("0"))
    status: Mapped[str] = mapped_column(sa.String(10))  # completed | cancelled
    entry_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ledger_entries.id"))
    reversal_entry_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ledger_entries.id"))
    created_at = mapped_column(UTCDateTime, nullable=False)
    cancelled_at = mapped_column(UTCDateTime)

    reward = relationship("Reward", lazy="joined")
    member = relationship("Member")
    vouchers = relationship("Voucher", back_populates="redemption", lazy="selectin", order_by="Voucher.id")


class Voucher(Model):
    __tablename__ = "vouchers"
    __table_args__ = (sa.Index("ix_vouchers_member_reward", "member_id", "reward_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(20), unique=True)
    redemption_id: Mapped[int] = mapped_column(sa.ForeignKey("redemptions.id"))
    reward_id: Mapped[int] = mapped_column(sa.ForeignKey("rewards.id"))
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    status: Mapped[str] = mapped_column(sa.String(10))  # issued | used | void ("expired" is read off expires_at)
    expires_at = mapped_column(UTCDateTime, nullable=False)
    used_at = mapped_column(UTCDateTime)
    used_store_id: Mapped[str | None] = mapped_column(sa.String(40))
    used_api_key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("api_keys.id"))  # the till's key
    created_at = mapped_column(UTCDateTime, nullable=False)

    redemption = relationship("Redemption", back_populates="vouchers")
    reward = relationship("Reward", lazy="joined")
