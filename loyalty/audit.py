"""The audit log: who changed what, before and after, when. Written in the change's transaction."""
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.database import BigId, UTCDateTime
from loyalty.extensions import Model, db


class AuditEntry(Model):
    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_entity", "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor: Mapped[str] = mapped_column(sa.String(150))
    action: Mapped[str] = mapped_column(sa.String(50))
    entity_type: Mapped[str] = mapped_column(sa.String(30))
    entity_id: Mapped[str | None] = mapped_column(sa.String(64))
    before = mapped_column(sa.JSON)
    after = mapped_column(sa.JSON)
    created_at = mapped_column(UTCDateTime, nullable=False)


def document(obj: object, keys: Iterable[str]) -> dict[str, Any]:
    """The JSON document of `obj`'s `keys` for an audit entry: decimals as strings, times in ISO."""
    return {key: plain(getattr(obj, key)) for key in keys}


def plain(value: Any) -> Any:
    """A value as an audit document holds it: decimals as strings, times in ISO 8601, None as null."""
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def record(actor: str, action: str, entity_type: str, entity_id: object, before: Any, after: Any,
           now: datetime) -> None:
    """Add an audit entry to the current transaction (the caller commits)."""
    db.session.add(AuditEntry(
        actor=actor, action=action, entity_type=entity_type,
        entity_id=None if entity_id is None else str(entity_id),
        before=before, after=after, created_at=now,
    ))


def entries(entity_type: str | None = None, action: str | None = None, actor: str | None = None,
            since: datetime | None = None, until: datetime | None = None, limit: int = 50,
            before_id: int | None = None) -> tuple[Sequence[AuditEntry], int | None]:
    """Audit entries newest first, filtered; keyset-paginated on the id."""
    query = sa.select(AuditEntry).order_by(AuditEntry.id.desc())
    if entity_type:
        query = query.where(AuditEntry.entity_type == entity_type)
    if action:
        query = query.where(AuditEntry.action == action)
    if actor:
        query = query.where(AuditEntry.actor.icontains(actor, autoescape=True))
    if since:
        query = query.where(AuditEntry.created_at >= since)
    if until:
        query = query.where(AuditEntry.created_at < until)
    if before_id:
        query = query.where(AuditEntry.id < before_id)
    rows = db.session.scalars(query.limit(limit + 1)).all()
    return rows[:limit], (rows[limit - 1].id if len(rows) > limit else None)
