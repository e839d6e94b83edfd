import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.database import BigId, UTCDateTime
from loyalty.extensions import Model


class StaffMember(Model):
    """A person who signs in to the console. Only an argon2 hash of the password is kept."""

    __tablename__ = "staff_members"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    role: Mapped[str] = mapped_column(sa.String(20))
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    # A one-time password (from `loyalty staff create` or `reset-password`) must be replaced first.
    must_change_password: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    failed_sign_ins: Mapped[int] = mapped_column(sa.Integer, default=0)
    locked_until = mapped_column(UTCDateTime)
    disabled_at = mapped_column(UTCDateTime)
    # Changes whenever the password does: a session signed before it is no longer valid.
    password_changed_at = mapped_column(UTCDateTime, nullable=False)
    last_sign_in_at = mapped_column(UTCDateTime)
    created_at = mapped_column(UTCDateTime, nullable=False)
