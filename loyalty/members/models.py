import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from loyalty.database import BigId, UTCDateTime
from loyalty.extensions import db


class Member(db.Model):
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
    tier_code: Mapped[str] = mapped_column(sa.String(20), default="ordinary", server_default="ordinary")
    lifecycle_stage: Mapped[str | None] = mapped_column(sa.String(20))
    status: Mapped[str] = mapped_column(sa.String(10), default="active", server_default="active")
    joined_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)

    identities = relationship("MemberIdentity", back_populates="member", lazy="selectin",
                              order_by="MemberIdentity.id")
    account = relationship("Account", uselist=False, lazy="joined", back_populates="member")


class MemberIdentity(db.Model):
    """One channel identity (app, store, mini-program...) of a member: unique across members."""

    __tablename__ = "member_identities"
    __table_args__ = (sa.UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"), index=True)
    channel: Mapped[str] = mapped_column(sa.String(30))
    external_id: Mapped[str] = mapped_column(sa.String(100))

    member = relationship("Member", back_populates="identities")


TIER_NAMES = {"ordinary": "Ordinary", "silver": "Silver", "gold": "Gold", "diamond": "Diamond"}


def _tier(member):
    return {"code": member.tier_code, "name": TIER_NAMES.get(member.tier_code, member.tier_code)}


Member.tier = property(_tier)
