"""Merging two records of one person (say, one from the app and one from a store) into one.

In one transaction, with both accounts locked (lower id first, so two merges cannot deadlock):
lots keep their points and expiry, entries (the history) keep their order, and purchases,
payments, points holds (open ones too: they go on at the till, on the survivor), refused payments
and holds, promotion grants, redemptions, vouchers, activities, tier history, referrals, identities
and tags all move to the surviving member; each side gets an entry that says so. The other member
is closed and its lookups answer with the survivor. The ledger's invariants hold on both afterwards."""
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from loyalty import audit, clock, settings_cache
from loyalty.database import transaction
from loyalty.errors import Conflict, ValidationFailed
from loyalty.extensions import db
from loyalty.members import phones, privacy, service
from loyalty.members.models import Member, MemberIdentity
from loyalty.points import ledger
from loyalty.points.models import Account, Entry, HoldRefusal, Lot, PaymentRefusal, PointsHold, PointsPayment, Purchase
from loyalty.promotions.models import PromotionGrant
from loyalty.referrals.models import Referral
from loyalty.rewards.models import Redemption, Voucher
from loyalty.segments.models import MemberTag
from loyalty.tiers import service as tiers
from loyalty.tiers.models import TierChange


def merge_members(survivor_id: int, other_id: int, actor: str, now: datetime | None = None) -> Member:
    now = now or clock.now()
    if survivor_id == other_id:
        raise ValidationFailed("A member cannot be merged into itself; name the other record.",
                               errors={"from_member_id": ["Must be another member."]})
    with transaction():
        first, second = sorted((survivor_id, other_id))
        accounts = {first: ledger.lock_account(first, now), second: ledger.lock_account(second, now)}
        keep, gone = accounts[survivor_id], accounts[other_id]
        survivor, other = keep.member, gone.member
        for member in (survivor, other):
            privacy.refuse_if_erased(member)
            if member.status != "active":
                raise Conflict(f"Member {member.id} is closed"
                               + (f" (merged into {member.merged_into_id})" if member.merged_into_id else "")
                               + "; merge into an open member.")
        before = {"survivor": _summary(keep), "other": _summary(gone)}
        moved = {"points": gone.available + gone.pending + gone.held}

        def move(model, column="member_id", *where):
            column_attr = getattr(model, column)
            return db.session.execute(sa.update(model).where(column_attr == other.id, *where)
                                      .values({column: survivor.id})
                                      .execution_options(synchronize_session=False)).rowcount

        moved["lots"] = move(Lot)
        moved["entries"] = move(Entry)
        # Holds go with the lots their points sit in (their allocations name the hold and the lot,
        # not the member): a closed one is history, an open one goes on at the till and is
        # captured, released or expired on the survivor (holds._locked follows it here).
        moved["holds"] = move(PointsHold)
        for model in (Purchase, PointsPayment, PaymentRefusal, HoldRefusal, Redemption, Voucher, TierChange,
                      PromotionGrant):
            move(model)
        # An activity the survivor also recorded (same type and event) stays with the closed member.
        db.session.execute(sa.text(
            "UPDATE activities SET member_id = :keep WHERE member_id = :gone AND NOT EXISTS ("
            "SELECT 1 FROM activities a2 WHERE a2.member_id = :keep AND a2.type = activities.type "
            "AND a2.event_id = activities.event_id)"), {"keep": survivor.id, "gone": other.id})
        move(Referral, "referrer_id")
        if db.session.scalar(sa.select(sa.exists().where(Referral.referee_id == survivor.id))):
            pass  # the survivor has its own referrer: the other's referral stays with the closed record
        else:
            move(Referral, "referee_id")
            if survivor.referred_by_id is None:
                survivor.referred_by_id = other.referred_by_id
        survivor_tags = set(db.session.scalars(sa.select(MemberTag.tag).where(MemberTag.member_id == survivor.id)))
        db.session.execute(sa.delete(MemberTag).where(MemberTag.member_id == other.id,
                                                      MemberTag.tag.in_(survivor_tags or {""})))
        move(MemberTag)
        move(MemberIdentity)
        # The bulk moves bypassed the session: what it holds of these rows is stale now.
        db.session.expire_all()
        # Phone and email are unique: the survivor takes the other's where it has none.
        _keep_the_e164_phone(survivor, other)
        for field in ("phone", "email", "birthday"):
            if getattr(survivor, field) is None and getattr(other, field) is not None:
                value = getattr(other, field)
                setattr(other, field, None)
                db.session.flush()
                setattr(survivor, field, value)
        # The balances add up; a debt on one side is paid from the other's points at once.
        keep.available += gone.available
        keep.pending += gone.pending
        keep.held += gone.held
        keep.debt += gone.debt
        keep.lifetime_earned += gone.lifetime_earned
        gone.available = gone.pending = gone.held = gone.debt = gone.lifetime_earned = 0
        db.session.flush()
        if keep.debt > 0:
            ledger.pay_debt(keep, now)
        ladder = {tier.code: tier.rank for tier in tiers.ladder()}
        if ladder.get(other.tier_code, 0) > ladder.get(survivor.tier_code, 0):
            tiers.move_tier(survivor, other.tier_code, "manual", now, held_until=other.tier_held_until,
                        note=f"Merged from member {other.member_no}", actor=actor)
        ledger.add_entry(keep, "adjust", 0, f"Merged from member {other.member_no}: {moved['points']} points, "
                         f"{moved['lots']} lots and {moved['entries']} entries", ("merge", other.id), now)
        ledger.add_entry(gone, "adjust", 0, f"Merged into member {survivor.member_no}", ("merge", survivor.id), now)
        other.status, other.merged_into_id, other.updated_at = "closed", survivor.id, now
        settings_cache.bump()  # a request trusting the closed member's token checks it again at once
        survivor.updated_at = now
        db.session.flush()
        audit.record(actor, "member.merge", "member", survivor.id, before,
                     {"survivor": _summary(keep), "other": _summary(gone),
                      "moved": {key: str(value) for key, value in moved.items()}}, now)
    return survivor


def _keep_the_e164_phone(survivor: Member, other: Member) -> None:
    """Two spellings of one number (a pair the E.164 migration left): the survivor keeps the E.164 one."""
    region = service.phone_region()
    number = phones.e164_or_none(other.phone, region)
    if number is not None and other.phone == number and phones.same_number(survivor.phone, number, region) \
            and survivor.phone != number:
        other.phone = None
        db.session.flush()
        survivor.phone = number


def _summary(account: Account) -> dict[str, Any]:
    return {"member_id": account.member_id, "available": str(account.available), "pending": str(account.pending),
            "held": str(account.held), "debt": str(account.debt), "lifetime_earned": str(account.lifetime_earned)}
