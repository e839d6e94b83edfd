"""Members: registration, lookup by any identity, profile changes, the card token."""
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from loyalty import audit, clock, settings_cache
from loyalty.database import PreparedSelect, transaction
from loyalty.errors import Conflict, Forbidden, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members import lookup, phones, privacy
from loyalty.members.lookup import member_or_404
from loyalty.members.models import Member, MemberIdentity
from loyalty.points.models import Account
from loyalty.referrals import service as referrals
from loyalty.webhooks import service as webhooks
from loyalty.config import settings

# Unambiguous characters for codes people read aloud or type: no 0/O, 1/I/L.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


@dataclass(frozen=True)
class Profile:
    name: str | None = None
    phone: str | None = None
    email: str | None = None
    birthday: object = None
    channel: str | None = None


def normalise_phone(phone: str | None) -> str | None:
    """The phone in E.164 however it was typed (read in LOYALTY_PHONE_REGION), or a 422 naming it."""
    if phone is None:
        return None
    try:
        return phones.to_e164(phone, phone_region())
    except phones.InvalidPhone as error:
        raise ValidationFailed(str(error), errors={"phone": [str(error)]}) from None


def phone_region() -> str:
    return settings().phone_region


def normalise_email(email: str | None) -> str | None:
    return email.strip().lower() if email else email


def new_code(length: int = 8) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


def member_number(member_id: int) -> str:
    """A printable member number: 8, the id in nine digits, and a Luhn check digit."""
    digits = f"8{member_id:09d}"
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            value -= 9 if value > 9 else 0
        total += value
    return digits + str((10 - total % 10) % 10)


def register_member(name: str, phone: str | None = None, email: str | None = None,
                    birthday: date | None = None, channel: str | None = None,
                    external_ids: Iterable[Mapping[str, str]] = (), referral_code: str | None = None,
                    now: datetime | None = None) -> Member:
    """Create a member and its empty account. Each identity may belong to one member only.

    A `referral_code` names the member who invited this one (the referrals issue rewards it)."""
    now = now or clock.now()
    phone, email = normalise_phone(phone), normalise_email(email)
    _check_birthday(birthday, now)
    identities = [(i["channel"].strip().lower(), i["id"].strip()) for i in external_ids or ()]
    if len(set(identities)) != len(identities):
        raise ValidationFailed("The same channel identity is listed twice.",
                               errors={"external_ids": ["Each channel identity may appear once."]})
    with transaction():
        # The code first: using one's own identities with one's own code is self-referral, said so.
        referrer_id, campaign = (referrals.referrer_for_code(referral_code, (phone, email, identities), now)
                                 if referral_code else (None, None))
        _check_identities_free(phone, email, identities)
        member = Member(name=name.strip(), phone=phone, email=email, birthday=birthday,
                        channel=channel, referred_by_id=referrer_id, card_token=secrets.token_urlsafe(18),
                        referral_code=new_code(), joined_at=now, tier_since=now, updated_at=now)
        member.identities = [MemberIdentity(channel=c, external_id=x) for c, x in identities]
        db.session.add(member)
        db.session.flush()
        member.member_no = member_number(member.id)
        member.account = Account(member_id=member.id, updated_at=now)
        if referrer_id is not None and campaign is not None:  # a code is taken only while a campaign runs
            referrals.start_referral(member, referrer_id, campaign, now)
        webhooks.emit("member.created", {
            "member_id": member.id, "member_no": member.member_no, "channel": channel,
            "referred_by_id": referrer_id, "joined_at": now}, now)
    return member


MEMBER_EDITABLE = frozenset({"name", "email"})  # what a member may change with a member token (API.md)


def update_member(member_id: int, changes: dict[str, Any], now: datetime | None = None, actor: str | None = None,
                  editable: frozenset[str] | None = None) -> Member:
    """Change profile fields (name, phone, email, birthday, channel); only those in `editable`, if
    given. With an `actor`, the change is audit-logged (the fields' names: their values are
    personal data, and the audit log outlives an erasure)."""
    now = now or clock.now()
    refused = sorted(set(changes) - editable) if editable is not None else []
    if refused and editable is not None:
        raise Forbidden(f"A member token may change only {' and '.join(sorted(editable))}, not "
                        f"{', '.join(refused)}; ask the member app to change the rest.")
    if "phone" in changes:
        changes["phone"] = normalise_phone(changes["phone"])
    if "email" in changes:
        changes["email"] = normalise_email(changes["email"])
    if "birthday" in changes:
        _check_birthday(changes["birthday"], now)
    with transaction():
        member = get_member(member_id, for_update=True)
        privacy.refuse_if_erased(member)
        _check_identities_free(changes.get("phone"), changes.get("email"), (), exclude=member.id)
        for field, value in changes.items():
            setattr(member, field, value.strip() if field == "name" else value)
        member.updated_at = now
        if actor is not None:
            audit.record(actor, "member.update", "member", member.id, None, {"fields": sorted(changes)}, now)
    return member


def get_member(member_id: int, for_update: bool = False) -> Member:
    return member_or_404(member_id, lock=for_update)


def read_member(member_id: int) -> SimpleNamespace:
    """A member for an answer (GET /members/{id}): what MemberSchema shows, as attributes. One
    statement (the member, its account, one row per identity, the settings version for the tier's
    name and the API key's check), outside any transaction, run directly (database.PreparedSelect:
    this is a hot read, issue 20)."""
    rows = _READ_MEMBER.rows(member_id=member_id)
    if not rows:
        raise NotFound(f"No member with id {member_id}.")
    first = rows[0]
    settings_cache.observe(first.settings_version)
    account = None if first.available is None else SimpleNamespace(
        available=first.available, pending=first.pending, held=first.held, lifetime_earned=first.lifetime_earned)
    return lookup.member_view(rows, account)


_READ_MEMBER = PreparedSelect(
    sa.select(*(getattr(Member, name) for name in lookup.READ_MEMBER_COLUMNS),
              Account.available, Account.pending, Account.held, Account.lifetime_earned,
              *lookup.IDENTITY_COLUMNS, settings_cache.VERSION)
    .outerjoin(Account, Account.member_id == Member.id)
    .outerjoin(MemberIdentity, MemberIdentity.member_id == Member.id)
    .where(Member.id == sa.bindparam("member_id")).order_by(MemberIdentity.id))


def find_members(phone: str | None = None, email: str | None = None, channel: str | None = None,
                 external_id: str | None = None, card: str | None = None) -> list[Member]:
    """Members matching one identity (a list, empty when nobody matches)."""
    query = sa.select(Member)
    if phone is not None:
        query = query.where(Member.phone.in_(phones.legacy_spellings(normalise_phone(phone), phone_region())))
    elif email is not None:
        query = query.where(Member.email == normalise_email(email))
    elif card is not None:
        query = query.where(Member.card_token == card.strip())
    elif channel is not None and external_id is not None:
        query = query.join(MemberIdentity).where(
            MemberIdentity.channel == channel.strip().lower(),
            MemberIdentity.external_id == external_id.strip())
    else:
        raise ValidationFailed(
            "Look a member up by one of: phone, email, card, or channel together with external_id."
        )
    found = db.session.execute(query.order_by(Member.id)).unique().scalars().all()
    # A member closed by a merge answers with the member it was merged into.
    return list(dict.fromkeys(_survivor(member) for member in found))


def search(text: str | None) -> list[Member]:
    """Members a person typed into one search box: an email, a member number (11 digits starting
    with 8 whose check digit is right), a phone in any spelling, or a card QR token. A list, empty
    when nobody matches; a phone that is not a valid number is simply not looked up as one."""
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("Type a phone number, a member number, an email or a card token.",
                               errors={"q": ["Missing data for required field."]})
    if "@" in text:
        return find_members(email=text)
    found: list[Member] = []
    if len(text) == 11 and text.isascii() and text.isdigit() and text[0] == "8" \
            and member_number(int(text[1:10])) == text:
        found = list(db.session.scalars(sa.select(Member).where(Member.member_no == text)))
        found = [_survivor(member) for member in found]
    if not found:
        try:
            found = find_members(phone=text)
        except ValidationFailed:
            found = []
    if not found:
        found = find_members(card=text)
    return found


def _survivor(member: Member) -> Member:
    seen = 0
    while member.merged_into_id is not None and seen < 10:
        member, seen = db.session.get_one(Member, member.merged_into_id), seen + 1
    return member


def member_id_for(member_id: int | None = None, card: str | None = None,
                  cards: Mapping[str, int] | None = None) -> int:
    """Resolve a POS's member reference: an id, or the token read from the member's card QR
    (a card of a member merged into another credits the other). `cards` is what
    `member_ids_for_cards` answered for a batch's cards; without it the card is looked up now."""
    if member_id is not None:
        return member_id
    found = (member_ids_for_cards([card]) if cards is None else cards).get(card) if card is not None else None
    if found is None:
        raise NotFound("No member has this card; scan the member's card QR again.")
    return found


def member_ids_for_cards(cards: Iterable[str]) -> dict[str, int]:
    """{card: member id} of the cards that name a member (an offline till's batch resolves all its
    cards at once): one query, and one more per step of a merge chain only when a card's member
    was merged into another (rare). The chain is followed as `_survivor` does, at most 10 steps."""
    wanted = sorted(set(cards))
    if not wanted:
        return {}
    # Columns, not Member objects: a purchase's session that held the member's would take the ORM's
    # lock (points/plain_purchase.lock).
    reached = {row.card_token: row for row in db.session.execute(
        sa.select(Member.id, Member.card_token, Member.merged_into_id).where(Member.card_token.in_(wanted)))}
    for _ in range(10):
        merged = {card: row.merged_into_id for card, row in reached.items() if row.merged_into_id is not None}
        if not merged:
            break
        survivors = {row.id: row for row in db.session.execute(
            sa.select(Member.id, Member.card_token, Member.merged_into_id)
            .where(Member.id.in_(sorted(set(merged.values())))))}
        reached.update({card: survivors[member_id] for card, member_id in merged.items()})
    return {card: row.id for card, row in reached.items()}


def _check_birthday(birthday: date | None, now: datetime) -> None:
    """A birthday is a day in the past where the member lives (the deployment's time zone)."""
    if birthday is not None and birthday >= clock.local_date(now, settings().timezone):
        raise ValidationFailed("The birthday must be a date in the past.",
                               errors={"birthday": ["Must be a date in the past."]})


def _check_identities_free(phone: str | None, email: str | None, identities: Iterable[tuple[str, str]],
                           exclude: int | None = None) -> None:
    def owner(query, what):
        found = db.session.scalar(query)
        if found is not None and found != exclude:
            raise Conflict(f"This {what} already belongs to member {found}.", member_id=found)

    if phone:
        # Any spelling of the number: a member the E.164 migration left with its old one holds it too.
        owner(sa.select(Member.id).where(Member.phone.in_(phones.legacy_spellings(phone, phone_region())),
                                         Member.id != (exclude or 0)).order_by(Member.id).limit(1),
              "phone number")
    if email:
        owner(sa.select(Member.id).where(Member.email == email), "email address")
    for channel, external_id in identities:
        owner(sa.select(MemberIdentity.member_id).where(
            MemberIdentity.channel == channel, MemberIdentity.external_id == external_id),
            f"{channel} identity")


@dataclass(frozen=True)
class SharedPhone:
    """Two open members whose phones are one number (left so by the E.164 migration): merge them."""
    phone: str
    first: object  # (id, member_no, phone, joined_at): holds the E.164 form, or joined first
    second: object  # the same, holding an older spelling


def phone_duplicates() -> tuple[list[SharedPhone], list[Any]]:
    """Open members sharing a number, and open members whose phone is not a valid number.

    Reads every open member's phone (about 80 µs each): an admin's check after the E.164 migration,
    not a request's. Merged pairs are gone from it (the merged-away member is closed)."""
    region = phone_region()
    by_number: dict[str, list[Any]] = {}
    invalid: list[Any] = []
    query = (sa.select(Member.id, Member.member_no, Member.phone, Member.joined_at)
             .where(Member.phone.isnot(None), Member.status == "active")
             .order_by(Member.joined_at, Member.id).execution_options(yield_per=1000))
    for member in db.session.execute(query):
        number = phones.e164_or_none(member.phone, region)
        if number is None:
            invalid.append(member)
        else:
            by_number.setdefault(number, []).append(member)
    shared: list[SharedPhone] = []
    for number, holders in by_number.items():
        first = min(holders, key=lambda m: m.phone != number)
        shared += [SharedPhone(number, first, other) for other in holders if other is not first]
    return shared, invalid
