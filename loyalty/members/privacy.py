"""A member's rights over their personal data (PIPL, GDPR): see everything we hold (export), have it
erased; and every read of personal data by staff (marketing, admin) recorded in the audit log.

Erasing keeps the accounts: the ledger, purchases, redemptions and lots stay with the member number
(the liability and `loyalty ledger verify` must still add up); only what names the person goes."""
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from loyalty import audit, clock, settings_cache
from loyalty.database import rows_changed, transaction
from loyalty.errors import Conflict, ValidationFailed
from loyalty.extensions import db
from loyalty.members.lookup import member_or_404
from loyalty.members.models import Member, MemberIdentity
from loyalty.points import holds
from loyalty.points.models import (Activity, Entry, HoldRefusal, PaymentRefusal, PointsHold, PointsPayment,
                                   Purchase, Refund)
from loyalty.referrals.models import Referral
from loyalty.rewards.models import Redemption, Voucher
from loyalty.segments.models import MemberTag
from loyalty.tiers.models import TierChange

ERASED = "erased"
STAFF_ROLES = ("marketing", "admin")
PERSONAL_FIELDS = ("name", "phone", "email", "birthday", "identities", "card_token", "referral_code", "tags")


def record_read(actor: str, role: str, what: str, member_ids: Any = None, now: datetime | None = None) -> None:
    """Audit a read of personal data by staff (`personal_data.read`): who, what, which members.

    Reads by the POS and the member app are the service working for the member, not staff looking,
    and are not recorded: nothing is added to the till's path. One small INSERT in its own
    transaction, after the read."""
    ids = [member_ids] if isinstance(member_ids, int) else list(member_ids or ())
    if role not in STAFF_ROLES or (member_ids is not None and not ids):  # a page of nobody shows nobody
        return
    with transaction():
        audit.record(actor, "personal_data.read", "member", ids[0] if len(ids) == 1 else None,
                     None, {"what": what, "member_ids": ids[:100], "members": len(ids)}, now or clock.now())


def refuse_if_erased(member: Member) -> None:
    """An erased member cannot be given personal data again (by a profile change, tags, a merge)."""
    if member.status == ERASED:
        raise Conflict(f"Member {member.id} had their personal data erased; an erased member cannot be "
                       "changed. Register the person again as a new member if they come back.")


def export_member(member_id: int, actor: str, now: datetime | None = None) -> dict[str, Any]:
    """Everything we hold about the member, as plain JSON-ready data; the read is audit-logged."""
    now = now or clock.now()
    member = member_or_404(member_id)
    account = member.account
    document = {
        "member": {
            "id": member.id, "member_no": member.member_no, "name": member.name, "phone": member.phone,
            "email": member.email, "birthday": member.birthday, "channel": member.channel,
            "card_token": member.card_token, "referral_code": member.referral_code,
            "referred_by_id": member.referred_by_id, "tier": member.tier_code, "tier_since": member.tier_since,
            "lifecycle_stage": member.lifecycle_stage, "value_segment": member.value_segment,
            "ambassador_since": member.ambassador_since, "status": member.status,
            "merged_into_id": member.merged_into_id, "joined_at": member.joined_at, "updated_at": member.updated_at,
        },
        "identities": [{"channel": i.channel, "external_id": i.external_id} for i in member.identities],
        "tags": list(db.session.scalars(sa.select(MemberTag.tag).where(MemberTag.member_id == member_id)
                                        .order_by(MemberTag.tag))),
        "points": {"available": account.available, "pending": account.pending,
                   "held": account.held, "lifetime_earned": account.lifetime_earned,
                   "debt": account.debt} if account else None,
        "entries": _rows(Entry, Entry.member_id == member_id, (
            "id", "type", "points", "balance_after", "description", "reference_type", "reference_id",
            "expires_at", "created_at")),
        "purchases": _rows(Purchase, Purchase.member_id == member_id, (
            "id", "store_id", "receipt_no", "amount", "currency", "refunded_amount", "points_earned",
            "points_reversed", "items", "occurred_at", "created_at")),
        "refunds": _rows(Refund, Refund.purchase_id.in_(sa.select(Purchase.id).where(Purchase.member_id == member_id)),
                         ("id", "purchase_id", "refund_no", "amount", "points_reversed", "created_at")),
        "activities": _rows(Activity, Activity.member_id == member_id, (
            "id", "type", "event_id", "points_awarded", "capped", "occurred_at")),
        "points_payments": _rows(PointsPayment, PointsPayment.member_id == member_id, (
            "id", "store_id", "payment_no", "points", "money_amount", "currency", "status", "created_at")),
        # Points held at a till, open or closed: a capture is the payment it names (points_payments),
        # a release or an expiry is the hold's status and closed_at.
        "points_holds": [{**_row(hold, (
            "id", "store_id", "hold_no", "points", "captured_points", "expires_at", "payment_id", "created_at",
            "closed_at")), "status": holds.hold_status(hold, now)}  # past its expiry: expired, as the till reads it
            for hold in db.session.scalars(sa.select(PointsHold).where(PointsHold.member_id == member_id)
                                           .order_by(PointsHold.id))],
        "points_hold_refusals": _rows(HoldRefusal, HoldRefusal.member_id == member_id, (
            "id", "store_id", "hold_no", "points", "available", "error", "message", "created_at")),
        "points_payment_refusals": _rows(PaymentRefusal, PaymentRefusal.member_id == member_id, (
            "id", "store_id", "payment_no", "points", "available", "error", "message", "created_at")),
        "redemptions": _rows(Redemption, Redemption.member_id == member_id, (
            "id", "reward_id", "quantity", "points_spent", "points_returned", "status", "created_at",
            "cancelled_at")),
        "vouchers": _rows(Voucher, Voucher.member_id == member_id, (
            "code", "reward_id", "redemption_id", "status", "expires_at", "used_at", "used_store_id")),
        "referrals": _rows(Referral, sa.or_(Referral.referrer_id == member_id, Referral.referee_id == member_id), (
            "id", "campaign_id", "referrer_id", "referee_id", "status", "points_granted", "created_at",
            "settled_at")),
        "tier_history": _rows(TierChange, TierChange.member_id == member_id, (
            "from_code", "to_code", "reason", "note", "created_at")),
        "exported_at": now,
    }
    db.session.rollback()  # end the read before the audit write (SQLite takes its write lock afresh)
    with transaction():
        audit.record(actor, "personal_data.read", "member", member_id, None,
                     {"what": "export", "member_ids": [member_id], "members": 1}, now)
    return document


def _rows(model: Any, condition: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    return [_row(row, keys)
            for row in db.session.scalars(sa.select(model).where(condition).order_by(*model.__mapper__.primary_key))]


def _row(row: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: getattr(row, key) for key in keys}


def erase_member(member_id: int, reason: str, actor: str, now: datetime | None = None) -> Member:
    """Erase the member's personal data (name, phone, email, birthday, identities, card token,
    referral code, tags) for good; the accounts stay. Pending referrals of the member (either side)
    lapse. Erasing an erased member again changes nothing. Audit-logged with the reason, not the data."""
    now = now or clock.now()
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("Give the reason for the erasure (the member's request, its date).",
                               errors={"reason": ["Missing data for required field."]})
    with transaction():
        member = member_or_404(member_id, lock=True)
        if member.status == ERASED:
            return member
        if member.merged_into_id is not None:
            raise Conflict(f"Member {member_id} was merged into member {member.merged_into_id}; erase that member.",
                           member_id=member.merged_into_id)
        held = {"identities": len(member.identities),
                "tags": db.session.scalar(sa.select(sa.func.count()).select_from(MemberTag)
                                          .where(MemberTag.member_id == member_id))}
        db.session.execute(sa.delete(MemberIdentity).where(MemberIdentity.member_id == member_id))
        db.session.execute(sa.delete(MemberTag).where(MemberTag.member_id == member_id))
        lapsed = rows_changed(
            sa.update(Referral).where(sa.or_(Referral.referrer_id == member_id, Referral.referee_id == member_id),
                                      Referral.status == "pending").values(status="expired", settled_at=now))
        db.session.expire(member, ["identities"])
        # Unique columns get values that name nobody and that nobody holds: a card or code nobody
        # was given, which no lookup or registration will ever send.
        member.name = ""
        member.phone = member.email = member.birthday = member.channel = None
        member.card_token = "erased-" + secrets.token_urlsafe(18)
        member.referral_code = "X" + secrets.token_hex(7).upper()
        member.status = ERASED
        settings_cache.bump()  # a request trusting the member's token checks it again at once
        member.updated_at = now
        audit.record(actor, "member.erase", "member", member_id, {"status": "active", **held},
                     {"status": ERASED, "erased": list(PERSONAL_FIELDS), "referrals_lapsed": lapsed,
                      "reason": reason[:500]}, now)
    return member
