import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.database import UTCDateTime
from loyalty.extensions import Model


class MemberTag(Model):
    """A label marketing puts on a member ("vip-event-2026", "complained"), to list them by it."""

    __tablename__ = "member_tags"
    __table_args__ = (sa.Index("ix_member_tags_tag", "tag", "member_id"),)

    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    created_at = mapped_column(UTCDateTime, nullable=False)
