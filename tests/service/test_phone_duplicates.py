"""Members the E.164 migration left sharing one number: still found, refused as referrers of
themselves, listed by `loyalty members duplicates`, and gone from that list once an admin merges them."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from loyalty.errors import Conflict, ValidationFailed
from loyalty.extensions import db
from loyalty.members import merge, service as members
from loyalty.members.models import Member
from loyalty.referrals import service as referrals
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import T0

pytestmark = pytest.mark.usefixtures("ctx")
DAY = timedelta(days=1)


def store_raw_phone(member_id, phone):
    """What the migration leaves: a member keeps the spelling it was registered with."""
    db.session.execute(sa.update(Member).where(Member.id == member_id).values(phone=phone))
    db.session.commit()


def legacy_pair():
    """A holds +8613800138000; B, who joined later, still holds 13800138000."""
    a = factories.member(now=T0, phone="+86 138 0013 8000")
    b = factories.member(now=T0 + DAY, phone="13900139000")
    store_raw_phone(b.id, "13800138000")
    return a.id, b.id


def phone_of(member_id):
    return db.session.get(Member, member_id, populate_existing=True).phone


def listed():
    shared, invalid = members.phone_duplicates()
    return [(s.phone, s.first.id, s.second.id) for s in shared], [m.id for m in invalid]


def test_a_lookup_in_any_spelling_finds_both_members_of_a_legacy_pair():
    a, b = legacy_pair()

    for typed in ("+86 138 0013 8000", "13800138000", "8613800138000", "0086 13800138000"):
        assert [m.id for m in members.find_members(phone=typed)] == [a, b], typed


def test_registering_the_number_of_a_legacy_pair_is_a_conflict_naming_the_first():
    a, b = legacy_pair()

    with pytest.raises(Conflict) as refused:
        members.register_member("Third", phone="0086 13800138000")

    assert refused.value.extra["member_id"] == a


def test_the_pair_is_listed_with_the_member_holding_the_e164_number_first():
    a, b = legacy_pair()
    factories.member(now=T0, phone="+8613700137000")  # nobody shares this one

    assert listed() == ([("+8613800138000", a, b)], [])


def test_a_legacy_phone_that_is_no_valid_number_is_listed_apart():
    member = factories.member(now=T0)
    store_raw_phone(member.id, "12345")

    assert listed() == ([], [member.id])


def test_once_an_admin_merges_the_pair_it_leaves_the_list_and_a_lookup_finds_the_survivor():
    a, b = legacy_pair()

    merge.merge_members(a, b, "admin:1", now=T0 + 2 * DAY)
    db.session.remove()

    assert listed() == ([], [])
    assert [m.id for m in members.find_members(phone="13800138000")] == [a]
    assert phone_of(a) == "+8613800138000"


def test_a_survivor_holding_the_old_spelling_takes_the_e164_number_from_the_merged_member():
    a, b = legacy_pair()

    merge.merge_members(b, a, "admin:1", now=T0 + 2 * DAY)
    db.session.remove()

    assert (phone_of(b), phone_of(a)) == ("+8613800138000", None)
    assert listed() == ([], [])
    assert [m.id for m in members.find_members(phone="13800138000")] == [b]


def test_a_member_cannot_enter_the_code_of_a_member_with_the_same_number_in_another_spelling():
    referrals.create_campaign({
        "name": "Bring a friend", "starts_at": T0 - 10 * DAY, "ends_at": None, "referrer_points": D(100),
        "referee_points": D(50), "min_first_purchase": D("100.00"), "qualify_within_days": 30,
        "link_template": "https://shop.example/join?ref={code}"}, actor="test", now=T0 - 10 * DAY)
    a, b = legacy_pair()
    code = db.session.get(Member, a).referral_code

    with pytest.raises(ValidationFailed) as refused:
        referrals.apply_code(b, code, now=T0 + 2 * DAY)

    assert refused.value.errors == {"referral_code": ["This is the member's own code."]}


def test_the_cli_lists_the_pairs_under_a_header_until_they_are_merged(runner):
    a, b = legacy_pair()
    odd = factories.member(now=T0 + 3 * DAY)
    store_raw_phone(odd.id, "12345")
    number = {m.id: m.member_no for m in db.session.scalars(sa.select(Member))}

    result = runner.invoke(args=["members", "duplicates"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("phone\tfirst_id\tfirst_member_no\tfirst_joined_at\t"
                        "second_id\tsecond_member_no\tsecond_joined_at")
    assert lines[1] == (f"+8613800138000\t{a}\t{number[a]}\t2026-03-10T04:00:00Z\t"
                        f"{b}\t{number[b]}\t2026-03-11T04:00:00Z")
    assert lines[2:6] == ["", "Not valid phone numbers (correct them with PATCH /members/{id}):",
                          "member_id\tmember_no\tphone\tjoined_at",
                          f"{odd.id}\t{number[odd.id]}\t12345\t2026-03-13T04:00:00Z"]
    assert lines[-1] == "1 pairs share a phone number; 1 phones are not valid numbers."

    merge.merge_members(a, b, "admin:1", now=T0 + 4 * DAY)
    db.session.remove()
    after = runner.invoke(args=["members", "duplicates"]).output.splitlines()

    assert after[0] == lines[0]
    assert after[1:] == lines[2:6] + ["0 pairs share a phone number; 1 phones are not valid numbers."]
