import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from loyalty.database import BigId, UTCDateTime
from loyalty.extensions import Model


class Member(Model):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_no: Mapped[str | None] = mapped_column(sa.String(20), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    phone: Mapped[str | None] = mapped_column(sa.String(20), unique=True)
    email: Mapped[str | None] = mapped_column(sa.String(254), unique=True)
    birthday: Mapped[sa.Date | None] = mapped_column(sa.Date)
    channel: Mapped[str | None] = mapped_column(sa.String(30))
    card_token: Mapped[str] = mapped_column(sa.String(40), unique=True)
    referral_code: Mapped[str] = mapped_column(sa.String(16), unique=True)
    referred_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id"))
    tier_code: Mapped[str] = mapped_column(sa.ForeignKey("tiers.code"), default="ordinary",
                                           server_default="ordinary")
    tier_since = mapped_column(UTCDateTime, nullable=False)  # when the current tier was reached
    tier_held_until = mapped_column(UTCDateTime)  # protection: no downgrade before this
    # An admin's guarantee: not below this tier before then (a floor, not a ceiling: upgrades go on).
    tier_guaranteed_code: Mapped[str | None] = mapped_column(sa.String(20))
    tier_guaranteed_until = mapped_column(UTCDateTime)
    lifecycle_stage: Mapped[str | None] = mapped_column(sa.String(20))  # members.lifecycle job
    value_segment: Mapped[str | None] = mapped_column(sa.String(20))  # members.value_segments job
    ambassador_since = mapped_column(UTCDateTime)  # 推荐大使: a badge, given once
    status: Mapped[str] = mapped_column(sa.String(10), default="active", server_default="active")
    merged_into_id: Mapped[int | None] = mapped_column(sa.ForeignKey("members.id"))  # closed by a merge
    # Member tokens carry the epoch they were issued in; revoking them all adds one (members/tokens.py).
    token_epoch: Mapped[int] = mapped_column(sa.Integer, default=0, server_default=sa.text("0"))
    joined_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)

    identities = relationship("MemberIdentity", back_populates="member", lazy="selectin",
                              order_by="MemberIdentity.id")
    account = relationship("Account", uselist=False, lazy="joined", back_populates="member")


class MemberIdentity(Model):
    """One channel identity (app, store, mini-program...) of a member: unique across members."""

    __tablename__ = "member_identities"
    __table_args__ = (sa.UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"), index=True)
    channel: Mapped[str] = mapped_column(sa.String(30))
    external_id: Mapped[str] = mapped_column(sa.String(100))

    member = relationship("Member", back_populates="identities")



class TokenSecret(Model):
    """The member tokens' signing secret when LOYALTY_MEMBER_TOKEN_SECRET is unset: generated once,
    by whichever process needs it first, and read by every other (one row, id 1)."""

    __tablename__ = "member_token_secrets"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    secret: Mapped[str] = mapped_column(sa.String(100))
    created_at = mapped_column(UTCDateTime, nullable=False)
