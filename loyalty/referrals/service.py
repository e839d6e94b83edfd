"""Referral campaigns: a member shares their code or QR; when the new member's first purchase
qualifies, both are rewarded in that purchase's transaction. Top referrers become ambassadors
(推荐大使). Rewards are ledger `bonus` entries naming the referral, and a refund that takes the
qualifying purchase below the minimum within the return window claws both back.

Locks: a purchase holds the referee's account; rewarding the referrer locks theirs too. A
referrer always joined before the member they referred, so locks are always taken newer member
first, and two such purchases cannot deadlock."""
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import sqlalchemy as sa

from loyalty import audit, clock
from loyalty.cursors import decode_cursor, encode_cursor
from loyalty.database import Points, transaction
from loyalty.errors import Conflict, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members import phones
from loyalty.members.lookup import member_or_404
from loyalty.members.models import Member
from loyalty.points import ledger
from loyalty.points import rules as rules_mod
from loyalty.points.models import Account, Purchase
from loyalty.points.settings import current_rules
from loyalty.referrals.models import Referral, ReferralCampaign
from loyalty.webhooks import service as webhooks
from loyalty.config import settings

ZERO = Decimal("0.00")
CAMPAIGN_FIELDS = ("name", "starts_at", "ends_at", "referrer_points", "referee_points", "min_first_purchase",
                   "qualify_within_days", "return_window_days", "max_rewards_per_referrer",
                   "ambassador_threshold", "ambassador_bonus_points", "link_template")


# --- campaigns ------------------------------------------------------------------------------------

# What a new campaign is unless marketing says otherwise: a marketer decides the name and the two
# rewards; it starts now, any first purchase within 30 days qualifies, a refund within 30 days of
# it takes the rewards back, and links point where the deployment's do (LOYALTY_REFERRAL_LINK).
CAMPAIGN_DEFAULTS = {"return_window_days": 30, "ambassador_bonus_points": ZERO, "min_first_purchase": ZERO,
                     "qualify_within_days": 30}


def create_campaign(fields: Mapping[str, Any], actor: str, now: datetime | None = None) -> ReferralCampaign:
    now = now or clock.now()
    fields = {**CAMPAIGN_DEFAULTS, "starts_at": now, "link_template": settings().referral_link,
              **fields}
    with transaction():
        _lock_campaigns()
        _check_campaign(fields, exclude_id=None)
        campaign = ReferralCampaign(**{key: fields.get(key) for key in CAMPAIGN_FIELDS},
                                    created_at=now, updated_at=now)
        db.session.add(campaign)
        db.session.flush()
        audit.record(actor, "referral_campaign.create", "referral_campaign", campaign.id, None,
                     campaign_document(campaign), now)
    return campaign


def update_campaign(campaign_id: int, changes: dict[str, Any], actor: str,
                    now: datetime | None = None) -> ReferralCampaign:
    """Change a campaign. Referrals already made keep the terms they were made under."""
    now = now or clock.now()
    with transaction():
        _lock_campaigns()
        campaign = db.session.get(ReferralCampaign, campaign_id)
        if campaign is None:
            raise NotFound(f"No referral campaign with id {campaign_id}.")
        before = campaign_document(campaign)
        merged = {key: getattr(campaign, key) for key in CAMPAIGN_FIELDS} | changes
        _check_campaign(merged, exclude_id=campaign.id)
        for key, value in changes.items():
            setattr(campaign, key, value)
        campaign.updated_at = now
        audit.record(actor, "referral_campaign.update", "referral_campaign", campaign.id, before,
                     campaign_document(campaign), now)
    return campaign


def _lock_campaigns() -> None:
    """Campaign writes queue up (PostgreSQL; SQLite's BEGIN IMMEDIATE already does), so two
    overlapping campaigns cannot both pass the overlap check."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text("LOCK TABLE referral_campaigns IN SHARE ROW EXCLUSIVE MODE"))


def _check_campaign(fields: Mapping[str, Any], exclude_id: int | None) -> None:
    errors = {}
    if fields.get("ends_at") is not None and fields["ends_at"] <= fields["starts_at"]:
        errors["ends_at"] = ["Must be after starts_at."]
    if "{code}" not in (fields.get("link_template") or ""):
        errors["link_template"] = ["Must contain {code}, where the member's referral code goes."]
    if fields.get("referrer_points", ZERO) <= 0 and fields.get("referee_points", ZERO) <= 0:
        errors["referrer_points"] = ["A campaign must reward the referrer, the new member, or both."]
    if fields.get("ambassador_threshold") and fields.get("ambassador_bonus_points", ZERO) < 0:
        errors["ambassador_bonus_points"] = ["Must not be negative."]
    if errors:
        field, [problem] = next(iter(errors.items()))
        raise ValidationFailed(f"The campaign is not valid: {field}: {problem}", errors=errors)
    ends = fields.get("ends_at")
    overlapping = db.session.scalars(sa.select(ReferralCampaign).where(
        ReferralCampaign.id != (exclude_id or 0),
        sa.or_(ReferralCampaign.ends_at.is_(None), ReferralCampaign.ends_at > fields["starts_at"]),
        *([ReferralCampaign.starts_at < ends] if ends is not None else []))).first()
    if overlapping is not None:
        raise Conflict(f"Campaign {overlapping.id} ({overlapping.name}) runs at the same time; only one "
                       "campaign may run at a time. End it first or choose other dates.",
                       errors={"starts_at": [f"Overlaps campaign {overlapping.id}."]})


def campaign_document(campaign: ReferralCampaign) -> dict[str, Any]:
    return audit.document(campaign, ("id",) + CAMPAIGN_FIELDS)


def campaigns(limit: int = 50, cursor: str | None = None) -> tuple[Sequence[ReferralCampaign], str | None]:
    """(a page of the campaigns, latest start first; the cursor of the next page or None). The cursor
    names the page's last campaign, and the next page starts after its (starts_at, id)."""
    query = sa.select(ReferralCampaign).order_by(ReferralCampaign.starts_at.desc(), ReferralCampaign.id.desc())
    if cursor:
        last = db.session.get(ReferralCampaign, decode_cursor(cursor))
        if last is None:
            raise ValidationFailed("The cursor is not one this service gave out; start again without it.",
                                   errors={"cursor": ["Invalid cursor."]})
        query = query.where(sa.or_(ReferralCampaign.starts_at < last.starts_at,
                                   sa.and_(ReferralCampaign.starts_at == last.starts_at,
                                           ReferralCampaign.id < last.id)))
    rows = db.session.scalars(query.limit(limit + 1)).all()
    return rows[:limit], (encode_cursor(rows[limit - 1].id) if len(rows) > limit else None)


def get_campaign(campaign_id: int) -> ReferralCampaign:
    campaign = db.session.get(ReferralCampaign, campaign_id)
    if campaign is None:
        raise NotFound(f"No referral campaign with id {campaign_id}.")
    return campaign


def active_campaign(now: datetime) -> ReferralCampaign | None:
    return db.session.scalars(sa.select(ReferralCampaign).where(
        ReferralCampaign.starts_at <= now,
        sa.or_(ReferralCampaign.ends_at.is_(None), ReferralCampaign.ends_at > now))).first()


def campaign_stats(campaign_id: int) -> dict[str, Any]:
    campaign = get_campaign(campaign_id)
    counts = dict(db.session.execute(
        sa.select(Referral.status, sa.func.count()).where(Referral.campaign_id == campaign.id)
        .group_by(Referral.status)).all())
    # A clawback takes back exactly what the referral granted (the referee's reward, and the
    # referrer's if they were rewarded): points_granted stays what was given, this says what came back.
    rewarded, capped, granted, clawed_back = db.session.execute(
        sa.select(sa.func.count().filter(Referral.referrer_rewarded.is_(True)),
                  sa.func.count().filter(Referral.status.in_(("qualified", "clawed_back")),
                                         Referral.referrer_rewarded.is_(False), Referral.referrer_points > 0),
                  sa.type_coerce(sa.func.coalesce(sa.func.sum(Referral.points_granted), 0), Points()),
                  sa.type_coerce(sa.func.coalesce(sa.func.sum(Referral.points_granted).filter(
                      Referral.status == "clawed_back"), 0), Points()))
        .where(Referral.campaign_id == campaign.id)).one()
    invited = sum(counts.values())
    qualified = counts.get("qualified", 0) + counts.get("clawed_back", 0)
    return {
        "campaign_id": campaign.id, "invited": invited, "pending": counts.get("pending", 0),
        "qualified": qualified, "rewarded": rewarded, "referrer_over_cap": capped,
        "missed": counts.get("missed", 0), "expired": counts.get("expired", 0),
        "clawed_back": counts.get("clawed_back", 0),
        "points_granted": granted, "points_clawed_back": clawed_back,
        "conversion_rate": (Decimal(qualified) / invited).quantize(Decimal("0.0001")) if invited else Decimal(0),
    }


# --- referrals ------------------------------------------------------------------------------------

def referrer_for_code(code: str, new_identities: tuple[str | None, str | None, Sequence[tuple[str, str]]],
                      now: datetime) -> tuple[int, ReferralCampaign]:
    """Check a code given at registration: (referrer id, campaign), or a 422 saying what is wrong.

    `new_identities` are the new member's (phone, email, [(channel, external id)]): a member's own
    identities cannot refer them."""
    referrer = db.session.scalar(sa.select(Member).where(Member.referral_code == code.strip().upper(),
                                                             Member.status == "active"))
    if referrer is None:
        raise ValidationFailed("This referral code belongs to nobody; check it and try again.",
                               errors={"referral_code": ["Unknown referral code."]})
    campaign = active_campaign(now)
    if campaign is None:
        raise ValidationFailed("No referral campaign is running now, so this code earns nothing; "
                               "register without it.", errors={"referral_code": ["No campaign is running."]})
    phone, email, identities = new_identities
    region = settings().phone_region  # any spelling of one number is the same phone
    own = phones.same_number(phone, referrer.phone, region) or (email is not None and email == referrer.email) \
        or any((i.channel, i.external_id) in set(identities) for i in referrer.identities)
    if own:
        raise ValidationFailed("A member cannot use their own referral code.",
                               errors={"referral_code": ["This is the member's own code."]})
    return referrer.id, campaign


def start_referral(referee: Member, referrer_id: int, campaign: ReferralCampaign, now: datetime) -> None:
    """Inside the registration's transaction: the referee is now a pending referral."""
    db.session.add(Referral(
        campaign_id=campaign.id, referrer_id=referrer_id, referee_id=referee.id, status="pending",
        referrer_points=campaign.referrer_points, referee_points=campaign.referee_points,
        min_first_purchase=campaign.min_first_purchase,
        deadline=now + timedelta(days=campaign.qualify_within_days),
        return_window_days=campaign.return_window_days,
        max_rewards_per_referrer=campaign.max_rewards_per_referrer, created_at=now))


def apply_code(member_id: int, code: str, now: datetime | None = None) -> Member:
    """An existing member who has not bought anything yet enters the code they were given."""
    now = now or clock.now()
    with transaction():
        account = ledger.lock_account(member_id, now)
        member = account.member
        if member.referred_by_id is not None:
            raise Conflict("This member was already referred by someone; a member has one referrer.")
        if db.session.scalar(sa.select(sa.exists().where(Purchase.member_id == member_id))):
            raise Conflict("Referral codes count for new members before their first purchase; this "
                           "member has already bought something.")
        identities = [(i.channel, i.external_id) for i in member.identities]
        referrer_id, campaign = referrer_for_code(code, (member.phone, member.email, identities), now)
        if referrer_id == member.id:
            raise ValidationFailed("A member cannot use their own referral code.",
                                   errors={"referral_code": ["This is the member's own code."]})
        if referrer_id > member.id:
            # A referrer joined before the member they referred (which also keeps the locks of a
            # first purchase in one order: referee, then the older referrer).
            raise ValidationFailed("This code belongs to a member who joined after this one; a member can "
                                   "only be referred by someone who was a member before them.",
                                   errors={"referral_code": ["The code's owner joined later."]})
        member.referred_by_id = referrer_id
        start_referral(member, referrer_id, campaign, now)
    return member


class _Referee(Protocol):
    @property
    def referred_by_id(self) -> int | None: ...


class _RefereeAccount(Protocol):
    """An Account, or plain_purchase's LockedAccount."""

    @property
    def member_id(self) -> int: ...

    @property
    def member(self) -> _Referee: ...


def may_settle(account: _RefereeAccount) -> bool:
    """Could a purchase by this member settle a referral (one pending names them)? A read without a
    lock, for the one-statement purchase (points/plain_purchase.py): nothing makes a referral pending
    again once settled, so a member for whom none is pending now cannot have one settled by this
    purchase, and `on_purchase` would do nothing."""
    if account.member.referred_by_id is None:
        return False
    return bool(db.session.scalar(sa.select(sa.exists().where(*_pending_for(account.member_id)))))


def _pending_for(referee_id: int) -> tuple[Any, ...]:
    """The conditions of the referral still pending for this referee (at most one)."""
    return Referral.referee_id == referee_id, Referral.status == "pending"


def on_purchase(account: Account, purchase: Purchase, now: datetime) -> Referral | None:
    """Inside a purchase's transaction, with the referee's account locked: if this is their first
    purchase and a referral is pending, it qualifies (both rewarded) or misses."""
    if account.member.referred_by_id is None:
        return None  # never referred: no referral names them (a referral is made with the referrer)
    referral = db.session.scalar(sa.select(Referral).where(*_pending_for(account.member_id)).with_for_update())
    if referral is None:
        return None
    earlier = db.session.scalar(sa.select(sa.func.count()).select_from(Purchase).where(
        Purchase.member_id == account.member_id, Purchase.id < purchase.id))
    if earlier:
        return None  # only the first purchase counts; the referral was settled then
    if now > referral.deadline:
        referral.status, referral.settled_at = "expired", now
        return referral
    if purchase.amount < referral.min_first_purchase:
        referral.status, referral.settled_at = "missed", now
        return referral
    referral.status, referral.settled_at, referral.purchase_id = "qualified", now, purchase.id
    expires = _bonus_expiry(now)
    if referral.referee_points > 0:
        ledger.credit(account, "bonus", referral.referee_points, "Welcome reward: joined with a referral",
                      ("referral", referral.id), now, expires_at=expires)
        referral.points_granted += referral.referee_points
    campaign = db.session.get_one(ReferralCampaign, referral.campaign_id)
    referrer_account = ledger.lock_account(referral.referrer_id, now)
    rewarded_before = db.session.execute(sa.select(sa.func.count()).select_from(Referral).where(
        Referral.referrer_id == referral.referrer_id, Referral.campaign_id == referral.campaign_id,
        Referral.referrer_rewarded.is_(True))).scalar_one()
    if referral.referrer_points > 0 and (referral.max_rewards_per_referrer is None
                                         or rewarded_before < referral.max_rewards_per_referrer):
        ledger.credit(referrer_account, "bonus", referral.referrer_points,
                      f"Referral reward: member {account.member.member_no} made a first purchase",
                      ("referral", referral.id), now, expires_at=expires)
        referral.referrer_rewarded = True
        referral.points_granted += referral.referrer_points
    _maybe_ambassador(referrer_account, campaign, now)
    if referral.points_granted > 0:
        webhooks.emit("referral.rewarded", {
            "referral_id": referral.id, "campaign_id": referral.campaign_id,
            "referrer_id": referral.referrer_id, "referee_id": referral.referee_id,
            "purchase_id": purchase.id, "referee_points": referral.referee_points,
            "referrer_points": referral.referrer_points if referral.referrer_rewarded else ZERO,
            "referrer_over_cap": referral.referrer_points > 0 and not referral.referrer_rewarded}, now)
    return referral


def first_purchase_reward(member: Member | None, amount: Decimal, now: datetime) -> Decimal:
    """The welcome reward a purchase of `amount` would give the member now, writing nothing: what
    `on_purchase` would credit them (0.00 when it would not). POST /promotions/simulate shows it."""
    if member is None or member.referred_by_id is None:
        return ZERO
    referral = db.session.scalar(sa.select(Referral).where(
        Referral.referee_id == member.id, Referral.status == "pending"))
    if referral is None or now > referral.deadline or amount < referral.min_first_purchase:
        return ZERO
    if db.session.scalar(sa.select(sa.exists().where(Purchase.member_id == member.id))):
        return ZERO
    return referral.referee_points


def _maybe_ambassador(referrer_account: Account, campaign: ReferralCampaign, now: datetime) -> None:
    referrer = referrer_account.member
    if referrer.ambassador_since is not None or not campaign.ambassador_threshold:
        return
    db.session.flush()
    qualified = db.session.execute(sa.select(sa.func.count()).select_from(Referral).where(
        Referral.referrer_id == referrer.id, Referral.status == "qualified")).scalar_one()
    if qualified < campaign.ambassador_threshold:
        return
    referrer.ambassador_since = now
    if campaign.ambassador_bonus_points > 0:
        ledger.credit(referrer_account, "bonus", campaign.ambassador_bonus_points,
                      "Ambassador bonus (推荐大使)", ("ambassador", referrer.id), now,
                      expires_at=_bonus_expiry(now))


def on_refund(account: Account, purchase: Purchase, now: datetime) -> Referral | None:
    """Inside a refund's transaction: if the purchase qualified a referral and what is left of it
    is now below the minimum, within the return window, both rewards are clawed back."""
    referral = db.session.scalar(sa.select(Referral).where(
        Referral.purchase_id == purchase.id, Referral.status == "qualified").with_for_update())
    if referral is None:
        return None
    if now > purchase.occurred_at + timedelta(days=referral.return_window_days):
        return None
    if purchase.amount - purchase.refunded_amount >= referral.min_first_purchase:
        return None
    referral.status, referral.clawed_back_at = "clawed_back", now
    description = f"Referral reward taken back: purchase {purchase.receipt_no} was refunded"
    if referral.referee_points > 0:
        ledger.claw_back(account, referral.referee_points, description, ("referral", referral.id), now)
    if referral.referrer_rewarded:
        referrer_account = ledger.lock_account(referral.referrer_id, now)
        ledger.claw_back(referrer_account, referral.referrer_points, description, ("referral", referral.id), now)
    return referral


def _bonus_expiry(now: datetime) -> datetime | None:
    return rules_mod.expires_at(now, now, current_rules(), settings().timezone)


def member_referral(member_id: int) -> dict[str, Any]:
    member = member_or_404(member_id)
    counts = dict(db.session.execute(
        sa.select(Referral.status, sa.func.count()).where(Referral.referrer_id == member_id)
        .group_by(Referral.status)).all())
    campaign = active_campaign(clock.now()) or db.session.scalars(
        sa.select(ReferralCampaign).order_by(ReferralCampaign.starts_at.desc())).first()
    return {
        "code": member.referral_code,
        "link": referral_link(member, campaign),
        "invited": sum(counts.values()),
        "qualified": counts.get("qualified", 0),
        "pending": counts.get("pending", 0),
        "ambassador": member.ambassador_since is not None,
        "ambassador_since": member.ambassador_since,
        "campaign_id": campaign.id if campaign else None,
    }


def referral_link(member: Member, campaign: ReferralCampaign | None) -> str:
    template = campaign.link_template if campaign else settings().referral_link
    return template.replace("{code}", member.referral_code)

