"""A member by id, or the 404 every use case answers for an id that names no one: the one get-or-404,
below the services so that every domain can use it without importing another's use cases."""
import sqlalchemy as sa

from loyalty.errors import NotFound
from loyalty.extensions import db
from loyalty.members.models import Member


def member_or_404(member_id: int, lock: bool = False) -> Member:
    """The member; with `lock`, its row is locked for this transaction (FOR UPDATE on PostgreSQL)."""
    query = sa.select(Member).where(Member.id == member_id)
    if lock:
        # Lock the member row only: its account is eagerly outer-joined, and PostgreSQL refuses
        # FOR UPDATE on the nullable side of an outer join.
        query = query.with_for_update(of=Member, key_share=True)
    member = db.session.execute(query).unique().scalar_one_or_none()
    if member is None:
        raise NotFound(f"No member with id {member_id}.")
    return member
