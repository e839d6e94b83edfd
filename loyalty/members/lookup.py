"""A member by id, or the 404 every use case answers for an id that names no one: the one get-or-404,
below the services so that every domain can use it without importing another's use cases. And what
an answer shows of a member read as plain values (a member read, a purchase's lock)."""
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from loyalty.errors import NotFound
from loyalty.extensions import db
from loyalty.members.models import Member, MemberIdentity


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


def member_view(rows: Sequence[Any], account: Any) -> SimpleNamespace:
    """What MemberSchema shows of a member, as attributes, from rows with READ_MEMBER_COLUMNS and
    `identity_channel`, `identity_external_id` (one row per identity, in order; None for none), and
    its `account` (an object with its balances, or None)."""
    first = rows[0]
    identities = [SimpleNamespace(channel=row.identity_channel, external_id=row.identity_external_id)
                  for row in rows if row.identity_channel is not None]
    return SimpleNamespace(**{name: getattr(first, name) for name in READ_MEMBER_COLUMNS},
                           account=account, identities=identities)


READ_MEMBER_COLUMNS = ("id", "member_no", "name", "phone", "email", "birthday", "channel", "tier_code",
                       "lifecycle_stage", "referral_code", "ambassador_since", "joined_at", "status",
                       "merged_into_id")
IDENTITY_COLUMNS = (MemberIdentity.channel.label("identity_channel"),
                    MemberIdentity.external_id.label("identity_external_id"))
