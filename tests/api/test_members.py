"""Members over HTTP: registration, validation, identities owned once, lookups, profile changes."""
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.extensions import db
from loyalty.members.models import Member

MEMBER_FIELDS = {"id", "member_no", "name", "phone", "email", "birthday", "tier", "points",
                 "lifecycle_stage", "referral_code", "joined_at", "status"}


def register(api, role="app", **fields):
    fields.setdefault("name", "Li Lei")
    response = api.post(role, "/members", json=fields)
    assert response.status_code == 201, response.json
    return response.json


def card_token(app, member_id):
    """What the member's card QR encodes (tests/api/test_qr.py reads it from the image)."""
    with app.app_context():
        token = db.session.scalar(sa.select(Member.card_token).where(Member.id == member_id))
        db.session.remove()
    return token


def lookup(api, query, role="pos"):
    response = api.get(role, "/members", query_string=query)
    assert response.status_code == 200, response.json
    return response.json["items"]


# --- registration ---------------------------------------------------------------------------

def test_registering_a_member_answers_201_with_every_member_field(api):
    response = api.post("app", "/members", json={
        "name": "Li Lei", "phone": "138 0000 0001", "email": "Li.Lei@Example.com",
        "birthday": "1990-05-17", "channel": "app", "external_ids": [{"channel": "wechat", "id": "wx-1"}]})

    assert response.status_code == 201
    member = response.json
    assert MEMBER_FIELDS <= set(member)
    assert member["name"] == "Li Lei"
    assert member["phone"] == "+8613800000001"
    assert member["email"] == "li.lei@example.com"
    assert member["birthday"] == "1990-05-17"
    assert member["tier"] == {"code": "ordinary", "name": "普通"}
    assert member["points"] == {"available": 0, "pending": 0, "held": 0, "lifetime_earned": 0}
    assert member["status"] == "active"
    assert member["lifecycle_stage"] is None
    assert isinstance(member["id"], int)
    assert re.fullmatch(r"8\d{10}", member["member_no"])
    assert re.fullmatch(r"[2-9A-HJKMNP-Z]{8}", member["referral_code"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", member["joined_at"])
    assert member["external_ids"] == [{"channel": "wechat", "id": "wx-1"}]


def test_names_in_any_script_come_back_as_utf8(api):
    member = register(api, name="李雷")

    assert member["name"] == "李雷"
    assert "李雷".encode() in api.get("app", f"/members/{member['id']}").data


def test_a_member_needs_only_a_name(api):
    member = register(api, name="  Han Meimei  ")

    assert member["name"] == "Han Meimei"
    assert (member["phone"], member["email"], member["birthday"]) == (None, None, None)


def test_each_member_gets_its_own_number_and_referral_code(api):
    first, second = register(api, phone="13800000001"), register(api, phone="13800000002")

    assert first["id"] != second["id"]
    assert first["member_no"] != second["member_no"]
    assert first["referral_code"] != second["referral_code"]


@pytest.mark.parametrize("typed", ["+86 138 0000 0001", "+86-138-0000-0001", "+86 (138) 0000.0001"])
def test_phone_is_stored_in_e164_without_the_spaces_dashes_and_brackets_people_type(api, typed):
    assert register(api, phone=typed)["phone"] == "+8613800000001"


@pytest.mark.parametrize("phone", ["12345", "138-0000-000x", "+", "1234567890123456", "++8613800000001", ""])
def test_an_invalid_phone_is_refused_with_a_phone_error(api, phone):
    response = api.post("app", "/members", json={"name": "Li Lei", "phone": phone})

    assert response.status_code == 422
    assert response.json["error"] == "validation_error"
    assert list(response.json["errors"]) == ["phone"]


@pytest.mark.parametrize("email", ["li.lei", "li lei@example.com", "@example.com", "li@"])
def test_an_invalid_email_is_refused_with_an_email_error(api, email):
    response = api.post("app", "/members", json={"name": "Li Lei", "email": email})

    assert response.status_code == 422
    assert list(response.json["errors"]) == ["email"]


def test_every_invalid_field_is_reported_at_once(api):
    response = api.post("app", "/members", json={"name": " ", "phone": "12", "email": "nope",
                                                   "birthday": "17/05/1990"})

    assert response.status_code == 422
    assert set(response.json["errors"]) == {"name", "phone", "email", "birthday"}
    assert all(isinstance(messages, list) and messages for messages in response.json["errors"].values())


def test_a_name_is_required(api):
    response = api.post("app", "/members", json={"phone": "13800000001"})

    assert response.status_code == 422
    assert response.json["errors"] == {"name": ["Missing data for required field."]}


@pytest.mark.parametrize("days_ahead", [0, 1, 3650])
def test_a_birthday_today_or_in_the_future_is_refused(api, app, days_ahead):
    today = clock.local_date(clock.now(), app.config["LOYALTY_TIMEZONE"])
    birthday = (today + timedelta(days=days_ahead)).isoformat()

    response = api.post("app", "/members", json={"name": "Li Lei", "birthday": birthday})

    assert response.status_code == 422
    assert response.json["errors"] == {"birthday": ["Must be a date in the past."]}


def test_a_birthday_yesterday_is_accepted(api, app):
    yesterday = clock.local_date(clock.now(), app.config["LOYALTY_TIMEZONE"]) - timedelta(days=1)

    assert register(api, birthday=yesterday.isoformat())["birthday"] == yesterday.isoformat()


def test_pos_and_admin_may_register_members_too(api):
    assert register(api, role="pos", phone="13800000001")["phone"] == "+8613800000001"
    assert register(api, role="admin", phone="13800000002")["phone"] == "+8613800000002"


def test_a_known_referral_code_is_accepted_and_an_unknown_one_refused(api):
    referrer = register(api, phone="13800000001")
    campaign = api.post("marketing", "/referral-campaigns", json={
        "name": "Bring a friend", "starts_at": "2020-01-01T00:00:00Z", "referrer_points": 100,
        "referee_points": 50, "min_first_purchase": "100.00", "qualify_within_days": 30,
        "link_template": "https://shop.example/join?ref={code}"})
    assert campaign.status_code == 201, campaign.json

    assert register(api, phone="13800000002", referral_code=referrer["referral_code"].lower())["id"]
    unknown = api.post("app", "/members", json={"name": "X", "referral_code": "ZZZZZZZZ"})
    assert unknown.status_code == 422
    assert unknown.json["errors"] == {"referral_code": ["Unknown referral code."]}


# --- one identity, one member ---------------------------------------------------------------

@pytest.mark.parametrize("first, second, what", [
    ({"phone": "13800000001"}, {"phone": "138-0000-0001"}, "phone"),
    ({"email": "li@example.com"}, {"email": "LI@Example.COM"}, "email"),
    ({"external_ids": [{"channel": "wechat", "id": "wx-1"}]},
     {"external_ids": [{"channel": "WeChat", "id": "wx-1"}]}, "external id"),
])
def test_an_identity_of_another_member_is_a_conflict_naming_its_owner(api, first, second, what):
    owner = register(api, **first)

    response = api.post("app", "/members", json={"name": "Someone else", **second})

    assert response.status_code == 409, what
    assert response.json["error"] == "conflict"
    assert response.json["member_id"] == owner["id"]
    assert str(owner["id"]) in response.json["message"]


def test_a_refused_registration_creates_nobody(api):
    register(api, phone="13800000001")

    refused = api.post("app", "/members", json={"name": "Twin", "phone": "13800000001",
                                                 "email": "twin@example.com"})

    assert refused.status_code == 409
    assert lookup(api, {"email": "twin@example.com"}) == []


def test_the_same_identity_listed_twice_is_refused(api):
    response = api.post("app", "/members", json={"name": "Li Lei", "external_ids": [
        {"channel": "wechat", "id": "wx-1"}, {"channel": "WECHAT", "id": "wx-1"}]})

    assert response.status_code == 422
    assert "external_ids" in response.json["errors"]


def test_one_member_may_hold_identities_on_several_channels(api):
    member = register(api, external_ids=[{"channel": "wechat", "id": "u1"}, {"channel": "alipay", "id": "u1"}])

    assert {i["channel"] for i in member["external_ids"]} == {"wechat", "alipay"}


# --- lookups --------------------------------------------------------------------------------

def test_a_pos_finds_a_member_by_phone_however_it_is_typed(api):
    member = register(api, phone="13800000001")
    register(api, phone="13800000002")

    found = lookup(api, {"phone": "138 0000 0001"})

    assert [m["id"] for m in found] == [member["id"]]
    assert MEMBER_FIELDS <= set(found[0])


def test_a_member_is_found_by_email_whatever_its_case(api):
    member = register(api, email="li@example.com")

    assert [m["id"] for m in lookup(api, {"email": "LI@example.com"}, role="marketing")] == [member["id"]]


def test_a_member_is_found_by_channel_and_external_id(api):
    member = register(api, external_ids=[{"channel": "wechat", "id": "wx-1"}])

    assert [m["id"] for m in lookup(api, {"channel": "wechat", "external_id": "wx-1"})] == [member["id"]]
    assert lookup(api, {"channel": "alipay", "external_id": "wx-1"}) == []


def test_a_member_is_found_by_card_token(api, app):
    member = register(api, phone="13800000001")
    register(api, phone="13800000002")

    found = lookup(api, {"card": card_token(app, member["id"])})

    assert [m["id"] for m in found] == [member["id"]]


def test_a_lookup_that_matches_nobody_answers_an_empty_list(api):
    register(api, phone="13800000001")

    assert lookup(api, {"phone": "13900000009"}) == []
    assert lookup(api, {"card": "no-such-card"}) == []
    assert lookup(api, {"email": "nobody@example.com"}) == []


@pytest.mark.parametrize("query", [{}, {"channel": "wechat"}, {"external_id": "wx-1"}])
def test_a_lookup_needs_a_complete_identity(api, query):
    response = api.get("pos", "/members", query_string=query)

    assert response.status_code == 422
    assert "phone" in response.json["message"]


def test_a_lookup_by_two_identities_at_once_is_refused(api):
    register(api, phone="13800000001", email="li@example.com")

    response = api.get("pos", "/members", query_string={"phone": "13800000001", "email": "han@example.com"})

    assert response.status_code == 422
    assert "one identity at a time" in response.json["message"]


def test_a_lookup_with_a_misspelt_parameter_is_refused(api):
    response = api.get("pos", "/members", query_string={"phon": "13800000001"})

    assert response.status_code == 422
    assert response.json["errors"] == {"phon": ["Unknown field."]}


def test_the_member_app_cannot_search_members(api):
    register(api, phone="13800000001")

    response = api.get("app", "/members", query_string={"phone": "13800000001"})

    assert response.status_code == 403
    assert response.json["error"] == "forbidden"


# --- reading and changing one member ---------------------------------------------------------

@pytest.mark.parametrize("role", ["app", "pos", "marketing", "admin"])
def test_every_role_reads_a_member(api, role):
    member = register(api, phone="13800000001")

    response = api.get(role, f"/members/{member['id']}")

    assert response.status_code == 200
    assert response.json == member


@pytest.mark.parametrize("path", ["/members/999", "/members/999/card.png", "/members/9223372036854775808"])
def test_an_unknown_member_is_a_404_with_a_json_body(api, path):
    response = api.get("pos", path)

    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.json["error"] == "not_found"
    assert response.json["message"]


def test_the_member_app_changes_a_profile(api):
    member = register(api, phone="13800000001", email="old@example.com")

    response = api.patch("app", f"/members/{member['id']}", json={
        "name": "Li Lei Jr", "email": "New@Example.com", "phone": "139 0000 0001", "birthday": "1991-01-02"})

    assert response.status_code == 200
    changed = response.json
    assert (changed["name"], changed["email"], changed["phone"], changed["birthday"]) == (
        "Li Lei Jr", "new@example.com", "+8613900000001", "1991-01-02")
    assert api.get("app", f"/members/{member['id']}").json == changed
    assert lookup(api, {"phone": "13800000001"}) == []


def test_a_profile_field_can_be_cleared(api):
    member = register(api, email="li@example.com", birthday="1990-05-17")

    changed = api.patch("admin", f"/members/{member['id']}", json={"email": None, "birthday": None}).json

    assert (changed["email"], changed["birthday"]) == (None, None)
    assert register(api, name="New owner", email="li@example.com")["email"] == "li@example.com"


def test_keeping_ones_own_phone_is_not_a_conflict(api):
    member = register(api, phone="13800000001")

    response = api.patch("app", f"/members/{member['id']}", json={"phone": "138-0000-0001", "name": "Li"})

    assert response.status_code == 200
    assert response.json["phone"] == "+8613800000001"


def test_taking_another_members_phone_is_a_conflict_and_changes_nothing(api):
    owner = register(api, phone="13800000001")
    member = register(api, phone="13800000002", name="Before")

    response = api.patch("app", f"/members/{member['id']}", json={"phone": "13800000001", "name": "After"})

    assert response.status_code == 409
    assert response.json["error"] == "conflict"
    assert response.json["member_id"] == owner["id"]
    unchanged = api.get("app", f"/members/{member['id']}").json
    assert (unchanged["phone"], unchanged["name"]) == ("+8613800000002", "Before")


def test_taking_another_members_email_is_a_conflict(api):
    owner = register(api, email="li@example.com")
    member = register(api, email="han@example.com")

    response = api.patch("app", f"/members/{member['id']}", json={"email": "LI@example.com"})

    assert response.status_code == 409
    assert response.json["member_id"] == owner["id"]


@pytest.mark.parametrize("body, field", [
    ({"phone": "12"}, "phone"), ({"email": "nope"}, "email"), ({"name": ""}, "name"),
    ({"birthday": "2999-01-01"}, "birthday"), ({"nickname": "Lei"}, "nickname"), ({"name": None}, "name"),
])
def test_an_invalid_profile_change_is_refused_and_changes_nothing(api, body, field):
    member = register(api, phone="13800000001")

    response = api.patch("app", f"/members/{member['id']}", json=body)

    assert response.status_code == 422
    assert field in response.json["errors"]
    assert api.get("app", f"/members/{member['id']}").json == member


def test_an_empty_profile_change_is_refused(api):
    member = register(api)

    response = api.patch("app", f"/members/{member['id']}", json={})

    assert response.status_code == 422
    assert "at least one field" in response.json["message"]


def test_changing_an_unknown_member_is_a_404(api):
    response = api.patch("app", "/members/999", json={"name": "Nobody"})

    assert response.status_code == 404
    assert response.json["error"] == "not_found"


@pytest.mark.parametrize("role", ["pos", "marketing"])
def test_only_the_app_and_admin_change_profiles(api, role):
    member = register(api, name="Before")

    response = api.patch(role, f"/members/{member['id']}", json={"name": "After"})

    assert response.status_code == 403
    assert api.get("app", f"/members/{member['id']}").json["name"] == "Before"
