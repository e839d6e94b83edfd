"""One person, one member: every spelling of a phone number is one identity over HTTP (issue 14)."""
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.extensions import db
from loyalty.members.models import Member

FOUR = ["+86 138 0013 8000", "13800138000", "8613800138000", "0086 13800138000"]
CAMPAIGN = {"name": "Bring a friend", "starts_at": "2026-03-01T00:00:00Z", "referrer_points": 100,
            "referee_points": 50, "min_first_purchase": "100.00", "qualify_within_days": 30,
            "link_template": "https://shop.example/join?ref={code}"}


def register(api, **fields):
    fields.setdefault("name", "Li Lei")
    response = api.post("app", "/members", json=fields)
    assert response.status_code == 201, response.json
    return response.json


def members_count(app):
    with app.app_context():
        count = db.session.scalar(sa.select(sa.func.count()).select_from(Member))
        db.session.remove()
    return count


@pytest.mark.parametrize("typed", FOUR + ["0086 138-0013-8000", "(+86) 138.0013.8000"])
def test_a_phone_is_stored_and_answered_in_e164_however_it_is_typed(api, typed):
    member = register(api, phone=typed)

    assert member["phone"] == "+8613800138000"
    assert api.get("app", f"/members/{member['id']}").json["phone"] == "+8613800138000"


def test_registering_13800138000_after_the_international_spelling_is_a_conflict_naming_the_member(api, app):
    owner = register(api, phone="+86 138 0013 8000")

    response = api.post("app", "/members", json={"name": "Twin", "phone": "13800138000"})

    assert response.status_code == 409
    assert response.json["error"] == "conflict"
    assert response.json["member_id"] == owner["id"]
    assert "phone" in response.json["message"]
    assert members_count(app) == 1


@pytest.mark.parametrize("first", FOUR)
def test_the_four_spellings_are_one_member_whichever_comes_first(api, app, first):
    owner = register(api, phone=first)

    for other in FOUR:
        response = api.post("pos", "/members", json={"name": "Twin", "phone": other})
        assert (response.status_code, response.json.get("member_id")) == (409, owner["id"]), other
    assert members_count(app) == 1


@pytest.mark.parametrize("typed", FOUR)
def test_a_lookup_in_any_spelling_finds_the_member(api, typed):
    member = register(api, phone="13800138000")
    register(api, phone="13800138001")

    response = api.get("pos", "/members", query_string={"phone": typed})

    assert response.status_code == 200
    assert [m["id"] for m in response.json["items"]] == [member["id"]]


@pytest.mark.parametrize("phone", ["12345", "+86 000 0000 0000", "138 0013 800", "１３８００１３８０００",
                                   "+86 138 0013 8000 ext 5", "tel:13800138000"])
def test_an_invalid_number_is_refused_with_a_sentence_naming_the_phone(api, app, phone):
    response = api.post("app", "/members", json={"name": "Li Lei", "phone": phone})

    assert response.status_code == 422
    assert response.json["error"] == "validation_error"
    assert list(response.json["errors"]) == ["phone"]
    assert response.json["errors"]["phone"][0].startswith("The phone number ")
    assert members_count(app) == 0


def test_a_phone_with_a_nul_byte_is_refused_at_the_edge_and_stores_nothing(api, app):
    response = api.post("app", "/members", json={"name": "Li Lei", "phone": "138\x000013 8000"})

    assert response.status_code == 400  # every string of every body, before any field is read
    assert members_count(app) == 0


def test_a_lookup_by_an_invalid_number_is_a_422_not_an_empty_list(api):
    register(api, phone="13800138000")

    response = api.get("pos", "/members", query_string={"phone": "12345"})

    assert response.status_code == 422
    assert response.json["error"] == "validation_error"
    assert "phone" in response.json["errors"]


def test_a_profile_change_stores_the_phone_in_e164(api):
    member = register(api, phone="13800138000")

    response = api.patch("app", f"/members/{member['id']}", json={"phone": "0086 139 0013 9000"})

    assert response.status_code == 200
    assert response.json["phone"] == "+8613900139000"
    assert [m["id"] for m in api.get("pos", "/members", query_string={"phone": "13900139000"}).json["items"]] \
        == [member["id"]]


def test_taking_another_members_number_in_another_spelling_is_a_conflict(api):
    owner = register(api, phone="+86 138 0013 8000")
    member = register(api, phone="13900139000")

    response = api.patch("app", f"/members/{member['id']}", json={"phone": "8613800138000"})

    assert (response.status_code, response.json["member_id"]) == (409, owner["id"])
    assert api.get("app", f"/members/{member['id']}").json["phone"] == "+8613900139000"


def test_keeping_ones_own_number_in_another_spelling_is_not_a_conflict(api):
    member = register(api, phone="+86 138 0013 8000")

    response = api.patch("app", f"/members/{member['id']}", json={"phone": "0086 13800138000"})

    assert (response.status_code, response.json["phone"]) == (200, "+8613800138000")


def test_an_invalid_number_in_a_profile_change_is_refused_and_changes_nothing(api):
    member = register(api, phone="13800138000")

    response = api.patch("app", f"/members/{member['id']}", json={"phone": "+86 000"})

    assert response.status_code == 422
    assert list(response.json["errors"]) == ["phone"]
    assert api.get("app", f"/members/{member['id']}").json == member


def test_numbers_without_a_country_code_are_read_in_the_configured_region(api, app, monkeypatch):
    monkeypatch.setitem(app.config, "LOYALTY_PHONE_REGION", "US")

    assert register(api, phone="(650) 253-0000")["phone"] == "+16502530000"
    assert register(api, phone="+86 138 0013 8000")["phone"] == "+8613800138000"
    refused = api.post("app", "/members", json={"name": "Li Lei", "phone": "13900139000"})
    assert refused.status_code == 422  # a Chinese mobile without +86 is no US number


@pytest.mark.parametrize("referee_phone", ["13800138000", "8613800138000", "0086 13800138000"])
def test_a_member_cannot_refer_themselves_through_another_spelling_of_their_number(api, app, referee_phone):
    with clock.frozen_at(datetime(2026, 3, 10, 4, 0, tzinfo=timezone.utc)):
        assert api.post("marketing", "/referral-campaigns", json=CAMPAIGN).status_code == 201
        referrer = register(api, phone="+86 138 0013 8000")

        response = api.post("app", "/members", json={"name": "Me again", "phone": referee_phone,
                                                     "referral_code": referrer["referral_code"]})

    assert response.status_code == 422
    assert response.json["errors"] == {"referral_code": ["This is the member's own code."]}
    assert members_count(app) == 1


@pytest.mark.parametrize("first, second", [("li@example.com", "LI@EXAMPLE.COM"), ("Li@Example.com", "li@example.com")])
def test_an_email_in_another_case_is_the_same_identity_for_registration_and_lookup(api, first, second):
    owner = register(api, email=first)

    refused = api.post("app", "/members", json={"name": "Twin", "email": second})
    found = api.get("pos", "/members", query_string={"email": second}).json["items"]

    assert (refused.status_code, refused.json["member_id"]) == (409, owner["id"])
    assert [m["id"] for m in found] == [owner["id"]]
    assert owner["email"] == "li@example.com"
