"""Rewards over HTTP (issue #4, API.md "Rewards and redemption"): the catalog marketing edits
(audit-logged), the member's view of it, redemptions (idempotent), vouchers a till looks up and
uses once, their QR codes, and cancellations. Status codes, error bodies and roles."""
import io
import itertools
import os
import re
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
import zxingcpp
from PIL import Image

from loyalty import clock
from loyalty.audit import AuditEntry
from loyalty.extensions import db
from loyalty.rewards.models import Redemption, Reward, Voucher

ON_POSTGRES = (os.environ.get("LOYALTY_TEST_DATABASE_URL") or "").startswith("postgresql")

ROLES = ("admin", "marketing", "pos", "app")
EVERYONE = set(ROLES)
CODE = re.compile(r"^[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{12}$")
T0 = datetime(2026, 3, 10, 4, 0, tzinfo=timezone.utc)  # 12:00 on 10 March in Shanghai

# Every rewards endpoint, with the roles allowed to call it (admin may do everything).
ENDPOINTS = [
    ("post", "/rewards", {"marketing", "admin"}),
    ("get", "/rewards", EVERYONE),
    ("get", "/rewards/1", EVERYONE),
    ("patch", "/rewards/1", {"marketing", "admin"}),
    ("post", "/members/1/redemptions", {"app", "admin"}),
    ("get", "/members/1/redemptions", {"app", "admin"}),
    ("post", "/redemptions/1/cancel", {"app", "admin"}),
    ("get", "/vouchers/ABCDEFGHJKMN", {"pos", "app", "admin"}),
    ("get", "/vouchers/ABCDEFGHJKMN/qr.png", {"app", "admin"}),
    ("get", "/vouchers/ABCDEFGHJKMN/qr.svg", {"app", "admin"}),
    ("post", "/vouchers/ABCDEFGHJKMN/use", {"pos", "admin"}),
]
REFUSED = [(method, path, role) for method, path, allowed in ENDPOINTS for role in ROLES if role not in allowed]
ALLOWED = [(method, path, role) for method, path, allowed in ENDPOINTS for role in sorted(allowed)]

_phones = itertools.count(1)


# --- helpers ----------------------------------------------------------------------------------

def call(client, method, path, headers):
    body = {} if method in ("post", "put", "patch") else None
    return getattr(client, method)("/api/v1" + path, headers=headers, json=body)


def new_member(api, points=0):
    """A member with `points` available (an admin adjustment), by id."""
    response = api.post("app", "/members", json={"name": "Li Lei", "phone": f"138{next(_phones):08d}"})
    assert response.status_code == 201, response.json
    member_id = response.json["id"]
    if Decimal(str(points)):
        adjusted = api.post("admin", f"/members/{member_id}/adjustments",
                            json={"points": str(points), "reason": "test points"})
        assert adjusted.status_code == 201, adjusted.json
    assert available(api, member_id) == Decimal(str(points))
    return member_id


def new_reward(api, **fields):
    body = {"name": "Tote bag", "kind": "goods", "points_cost": 100, "voucher_valid_days": 30, **fields}
    response = api.post("marketing", "/rewards", json=body)
    assert response.status_code == 201, response.json
    return response.json


def redeem(api, member_id, reward_id, quantity=1, role="app", extra_headers=None):
    return api.post(role, f"/members/{member_id}/redemptions", json={"reward_id": reward_id, "quantity": quantity},
                    extra_headers=extra_headers)


def redeemed(api, member_id, reward_id, quantity=1):
    response = redeem(api, member_id, reward_id, quantity=quantity)
    assert response.status_code == 201, response.json
    return response.json


def available(api, member_id):
    response = api.get("app", f"/members/{member_id}/points")
    assert response.status_code == 200, response.json
    return response.json["available"]


def reward_stock(api, reward_id):
    response = api.get("marketing", f"/rewards/{reward_id}")
    assert response.status_code == 200, response.json
    return response.json["stock"]


def audit_entries(app, action):
    with app.app_context():
        entries = [(entry.actor, entry.entity_type, entry.entity_id, entry.before, entry.after)
                   for entry in db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)
                                                   .order_by(AuditEntry.id))]
        db.session.remove()
    return entries


def rows(app, model):
    with app.app_context():
        total = db.session.scalar(sa.select(sa.func.count()).select_from(model))
        db.session.remove()
    return total


def assert_error(response, status, error, message=None):
    body = response.json
    assert response.status_code == status, body
    assert body["code"] == status and body["error"] == error, body
    assert body["status"] == {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
                              422: "Unprocessable Entity"}[status]
    assert isinstance(body["message"], str) and body["message"]
    if message is not None:
        assert body["message"] == message


def scan(png):
    barcodes = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(barcodes) == 1
    assert barcodes[0].format == zxingcpp.BarcodeFormat.QRCode
    return barcodes[0].text


def dashed_lower(code):
    return f"{code[:4]}-{code[4:8]}-{code[8:]}".lower()


# --- 401 and 403 ------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [(m, p) for m, p, _ in ENDPOINTS])
def test_every_rewards_endpoint_refuses_a_request_without_a_key(client, method, path):
    response = call(client, method, path, {})

    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method, path", [(m, p) for m, p, _ in ENDPOINTS])
def test_every_rewards_endpoint_refuses_an_unknown_key(client, keys, method, path):
    response = call(client, method, path, {"Authorization": "Bearer lk_not-a-key"})

    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("method, path, role", REFUSED)
def test_a_role_is_refused_where_the_contract_refuses_it(client, headers, method, path, role):
    response = call(client, method, path, headers[role])

    assert_error(response, 403, "forbidden")
    assert role in response.json["message"]


@pytest.mark.parametrize("method, path, role", ALLOWED)
def test_a_role_the_contract_allows_gets_past_the_door(client, headers, method, path, role):
    response = call(client, method, path, headers[role])

    assert response.status_code not in (401, 403), response.json


def test_a_refused_role_changes_nothing(api, app):
    member_id = new_member(api, points=500)
    reward = new_reward(api, stock=5)

    assert redeem(api, member_id, reward["id"], role="pos").status_code == 403
    assert redeem(api, member_id, reward["id"], role="marketing").status_code == 403
    assert api.post("app", "/rewards", json={"name": "x", "kind": "goods", "points_cost": 1,
                                             "voucher_valid_days": 1}).status_code == 403
    assert api.patch("pos", f"/rewards/{reward['id']}", json={"stock": 100}).status_code == 403

    assert available(api, member_id) == 500 and reward_stock(api, reward["id"]) == 5
    assert rows(app, Redemption) == 0 and rows(app, Reward) == 1


# --- the catalog: POST, PATCH, GET /rewards/{id} ----------------------------------------------

def test_marketing_adds_a_reward_with_every_field(api, app):
    response = api.post("marketing", "/rewards", json={
        "name": "50 yuan off", "description": "Any purchase over 200 yuan", "kind": "cash_voucher",
        "cash_value": "50.00", "points_cost": 4999.5, "stock": 100, "per_member_limit": 2,
        "limit_period": "month", "min_tier": "silver", "valid_from": "2026-03-01T00:00:00Z",
        "valid_until": "2026-06-01T08:00:00+08:00", "voucher_valid_days": 14, "active": True,
        "image_url": "https://cdn.example.com/v50.png"})

    assert response.status_code == 201, response.json
    reward = response.json
    assert reward == {
        "id": reward["id"], "name": "50 yuan off", "description": "Any purchase over 200 yuan",
        "kind": "cash_voucher", "cash_value": "50.00", "points_cost": Decimal("4999.5"), "stock": 100,
        "per_member_limit": 2, "limit_period": "month", "min_tier": "silver",
        "valid_from": "2026-03-01T00:00:00Z", "valid_until": "2026-06-01T00:00:00Z",
        "voucher_valid_days": 14, "active": True, "image_url": "https://cdn.example.com/v50.png",
        "created_at": reward["created_at"], "updated_at": reward["updated_at"]}
    assert reward["created_at"].endswith("Z")
    assert api.get("app", f"/rewards/{reward['id']}").json == reward
    [(actor, entity_type, entity_id, before, after)] = audit_entries(app, "reward.create")
    assert "test marketing" in actor and "marketing" in actor
    assert (entity_type, entity_id, before) == ("reward", str(reward["id"]), None)
    assert after["name"] == "50 yuan off" and after["points_cost"] == "4999.50"
    assert after["cash_value"] == "50.00" and after["stock"] == 100


def test_a_new_reward_gets_the_defaults(api):
    reward = new_reward(api)

    assert (reward["description"], reward["limit_period"], reward["active"]) == ("", "ever", True)
    assert (reward["stock"], reward["per_member_limit"], reward["min_tier"], reward["cash_value"],
            reward["image_url"], reward["valid_from"], reward["valid_until"]) == (None,) * 7


def test_a_cash_voucher_without_its_money_value_is_refused(api, app):
    response = api.post("marketing", "/rewards", json={"name": "Cash", "kind": "cash_voucher",
                                                       "points_cost": 500, "voucher_valid_days": 30})

    assert_error(response, 422, "validation_error",
                 "The reward is not valid: cash_value: A cash voucher needs its money value.")
    assert response.json["errors"] == {"cash_value": ["A cash voucher needs its money value."]}
    assert rows(app, Reward) == 0 and audit_entries(app, "reward.create") == []


@pytest.mark.parametrize("fields, errors", [
    ({"kind": "goods", "cash_value": "10.00"}, {"cash_value": ["Only cash vouchers have a money value."]}),
    ({"kind": "gift"}, {"kind": ["Must be one of: goods, service, coupon, cash_voucher."]}),
    ({"points_cost": 0}, {"points_cost": ["Must be greater than 0."]}),
    ({"points_cost": "1.234"}, {"points_cost": ["Must have at most 2 decimal places."]}),
    ({"stock": -1}, {"stock": ["Must be greater than or equal to 0 and less than or equal to 1000000000."]}),
    ({"per_member_limit": 0}, {"per_member_limit": ["Must be greater than or equal to 1 and less than or equal to 1000000."]}),
    ({"limit_period": "week"}, {"limit_period": ["Must be one of: month, ever."]}),
    ({"voucher_valid_days": -1}, {"voucher_valid_days": ["Must be greater than or equal to 0 and less than or equal to 3650."]}),
    ({"min_tier": "platinum"}, {"min_tier": ["Must be one of: ordinary, silver, gold, diamond."]}),
    ({"valid_from": "2026-04-01T00:00:00Z", "valid_until": "2026-03-01T00:00:00Z"},
     {"valid_until": ["Must be after valid_from."]}),
    ({"image_url": "not a url"}, {"image_url": ["Not a valid URL."]}),
    ({"colour": "red"}, {"colour": ["Unknown field."]}),
], ids=["goods-with-cash", "kind", "cost-0", "cost-places", "stock", "limit", "period", "days", "tier",
        "window", "url", "unknown-field"])
def test_an_invalid_reward_is_a_422_naming_the_field(api, app, fields, errors):
    body = {"name": "Mug", "kind": "goods", "points_cost": 100, "voucher_valid_days": 30, **fields}

    response = api.post("marketing", "/rewards", json=body)

    assert_error(response, 422, "validation_error")
    assert response.json["errors"] == errors
    assert rows(app, Reward) == 0


def test_the_required_fields_of_a_reward(api):
    response = api.post("marketing", "/rewards", json={})

    assert_error(response, 422, "validation_error")
    assert response.json["errors"] == {field: ["Missing data for required field."]
                                       for field in ("name", "kind", "points_cost")}


def test_a_reward_needs_only_its_name_kind_and_cost_and_its_vouchers_last_30_days(api):
    reward = api.post("marketing", "/rewards", json={"name": "Tote bag", "kind": "goods", "points_cost": 500})

    assert reward.status_code == 201, reward.json
    assert reward.json["voucher_valid_days"] == 30
    assert (reward.json["active"], reward.json["stock"], reward.json["per_member_limit"]) == (True, None, None)


def test_marketing_changes_a_reward_and_the_change_is_audit_logged(api, app):
    reward = new_reward(api, stock=10)

    response = api.patch("marketing", f"/rewards/{reward['id']}",
                         json={"points_cost": 80, "stock": 3, "active": False, "description": "Blue"})

    assert response.status_code == 200, response.json
    changed = response.json
    assert (changed["points_cost"], changed["stock"], changed["active"], changed["description"]) == (80, 3, False, "Blue")
    assert changed["name"] == "Tote bag" and changed["created_at"] == reward["created_at"]
    [(actor, entity_type, entity_id, before, after)] = audit_entries(app, "reward.update")
    assert "test marketing" in actor and (entity_type, entity_id) == ("reward", str(reward["id"]))
    assert (before["points_cost"], after["points_cost"]) == ("100.00", "80.00")
    assert (before["stock"], after["stock"]) == (10, 3)
    assert (before["active"], after["active"]) == (True, False)
    assert before["name"] == after["name"] == "Tote bag"


def test_a_change_that_makes_a_reward_invalid_is_refused_and_changes_nothing(api, app):
    reward = new_reward(api, kind="coupon")

    response = api.patch("marketing", f"/rewards/{reward['id']}", json={"kind": "cash_voucher"})

    assert_error(response, 422, "validation_error")
    assert response.json["errors"] == {"cash_value": ["A cash voucher needs its money value."]}
    assert api.get("marketing", f"/rewards/{reward['id']}").json["kind"] == "coupon"
    assert audit_entries(app, "reward.update") == []


def test_a_change_is_checked_against_the_fields_it_does_not_send(api):
    reward = new_reward(api, valid_from="2026-04-01T00:00:00Z")

    response = api.patch("marketing", f"/rewards/{reward['id']}", json={"valid_until": "2026-03-01T00:00:00Z"})

    assert_error(response, 422, "validation_error")
    assert response.json["errors"] == {"valid_until": ["Must be after valid_from."]}
    assert api.get("marketing", f"/rewards/{reward['id']}").json["valid_until"] is None


def test_a_change_with_an_unknown_field_is_a_422(api, app):
    reward = new_reward(api)

    response = api.patch("marketing", f"/rewards/{reward['id']}", json={"price": 5})

    assert_error(response, 422, "validation_error")
    assert response.json["errors"] == {"price": ["Unknown field."]}
    assert audit_entries(app, "reward.update") == []


def test_an_unknown_reward_is_a_404(api):
    assert_error(api.get("app", "/rewards/999"), 404, "not_found")
    assert_error(api.patch("marketing", "/rewards/999", json={"stock": 1}), 404, "not_found")


# --- GET /rewards -----------------------------------------------------------------------------

def test_the_catalog_shows_what_is_on_offer_now(api):
    new_reward(api, name="Mug", points_cost=300)
    new_reward(api, name="Pen", points_cost=50)
    new_reward(api, name="Off", active=False)
    new_reward(api, name="Later", valid_from="2999-01-01T00:00:00Z")
    new_reward(api, name="Over", valid_from="2000-01-01T00:00:00Z", valid_until="2001-01-01T00:00:00Z")

    response = api.get("pos", "/rewards")

    assert response.status_code == 200
    assert [item["name"] for item in response.json["items"]] == ["Pen", "Mug"]
    assert "redeemable" not in response.json["items"][0]
    everything = api.get("marketing", "/rewards", query_string={"include_inactive": "true"})
    assert sorted(item["name"] for item in everything.json["items"]) == ["Later", "Mug", "Off", "Over", "Pen"]


def test_admin_sees_rewards_off_offer_too(api):
    new_reward(api, name="Off", active=False)

    response = api.get("admin", "/rewards", query_string={"include_inactive": "true"})

    assert [item["name"] for item in response.json["items"]] == ["Off"]


@pytest.mark.parametrize("role", ["app", "pos"])
def test_only_marketing_sees_rewards_off_offer(api, role):
    response = api.get(role, "/rewards", query_string={"include_inactive": "true"})

    assert_error(response, 403, "forbidden")


def test_the_catalog_tells_a_member_what_they_can_redeem_and_why_not(api):
    member_id = new_member(api, points=150)
    new_reward(api, name="Pen", points_cost=50)
    new_reward(api, name="Mug", points_cost=300)
    new_reward(api, name="Sold out", points_cost=10, stock=0)
    once = new_reward(api, name="Once", points_cost=20, per_member_limit=1, limit_period="month")
    new_reward(api, name="Gold", points_cost=10, min_tier="gold")
    redeemed(api, member_id, once["id"])

    response = api.get("app", "/rewards", query_string={"member_id": member_id})

    assert response.status_code == 200
    assert {item["name"]: (item["redeemable"], item["reason"]) for item in response.json["items"]} == {
        "Pen": (True, None), "Mug": (False, "insufficient_points"), "Sold out": (False, "out_of_stock"),
        "Once": (False, "limit_reached"), "Gold": (False, "not_eligible")}


def test_the_catalog_for_marketing_gives_not_eligible_for_dates_and_switched_off_rewards(api):
    member_id = new_member(api, points=500)
    new_reward(api, name="Off", active=False)
    new_reward(api, name="Later", valid_from="2999-01-01T00:00:00Z")

    response = api.get("marketing", "/rewards", query_string={"member_id": member_id, "include_inactive": "true"})

    assert {item["name"]: (item["redeemable"], item["reason"]) for item in response.json["items"]} == {
        "Off": (False, "not_eligible"), "Later": (False, "not_eligible")}


def test_the_catalog_query_is_checked(api):
    assert_error(api.get("app", "/rewards", query_string={"member_id": 999}), 404, "not_found")
    assert_error(api.get("app", "/rewards", query_string={"member_id": "abc"}), 422, "validation_error")
    response = api.get("app", "/rewards", query_string={"memberid": 1})
    assert_error(response, 422, "validation_error")
    assert response.json["errors"] == {"memberid": ["Unknown field."]}


# --- POST /members/{id}/redemptions -----------------------------------------------------------

def test_a_redemption_answers_its_vouchers_and_the_member(api):
    member_id = new_member(api, points=500)
    reward = new_reward(api, points_cost="120.50", stock=10, voucher_valid_days=30)

    with clock.frozen_at(T0):
        response = redeem(api, member_id, reward["id"], quantity=3)

    assert response.status_code == 201, response.json
    body = response.json
    assert isinstance(body["redemption_id"], int)
    assert body["points_spent"] == Decimal("361.5")
    assert body["quantity"] == 3 and body["status"] == "completed"
    assert body["reward"] == {"id": reward["id"], "name": "Tote bag", "kind": "goods", "cash_value": None}
    assert len(body["vouchers"]) == 3 and len({v["code"] for v in body["vouchers"]}) == 3
    for voucher in body["vouchers"]:
        assert CODE.match(voucher["code"])
        assert voucher["expires_at"] == "2026-04-09T16:00:00Z"  # end of 9 April, Shanghai
        assert voucher["status"] == "issued"
    assert body["member"]["id"] == member_id
    assert body["member"]["points"]["available"] == Decimal("138.5")
    assert reward_stock(api, reward["id"]) == 7
    history = api.get("app", f"/members/{member_id}/points/history").json["items"]
    assert (history[0]["type"], history[0]["points"]) == ("redeem", Decimal("-361.5"))
    assert history[0]["reference"] == {"type": "redemption", "id": str(body["redemption_id"])}


def test_a_cash_voucher_redemption_names_its_money_value(api):
    member_id = new_member(api, points=1000)
    reward = new_reward(api, name="20 yuan", kind="cash_voucher", cash_value="20.00", points_cost=1000)

    body = redeemed(api, member_id, reward["id"])

    assert body["reward"]["cash_value"] == "20.00"
    assert api.get("pos", f"/vouchers/{body['vouchers'][0]['code']}").json["reward"]["cash_value"] == "20.00"


@pytest.mark.parametrize("setup, error", [
    ({"points_cost": 600}, "insufficient_points"),
    ({"stock": 0}, "out_of_stock"),
    ({"min_tier": "diamond"}, "not_eligible"),
    ({"active": False}, "not_eligible"),
    ({"valid_from": "2999-01-01T00:00:00Z"}, "not_eligible"),
    ({"valid_from": "2000-01-01T00:00:00Z", "valid_until": "2001-01-01T00:00:00Z"}, "not_eligible"),
], ids=["points", "stock", "tier", "inactive", "not-yet", "over"])
def test_a_refused_redemption_is_a_409_with_its_code_and_changes_nothing(api, app, setup, error):
    member_id = new_member(api, points=500)
    reward = new_reward(api, **setup)

    response = redeem(api, member_id, reward["id"])

    assert_error(response, 409, error)
    assert available(api, member_id) == 500
    assert reward_stock(api, reward["id"]) == setup.get("stock")
    assert rows(app, Redemption) == 0 and rows(app, Voucher) == 0


def test_the_insufficient_points_message_says_what_is_there_and_what_is_needed(api):
    member_id = new_member(api, points="99.5")
    reward = new_reward(api, points_cost=50)

    response = redeem(api, member_id, reward["id"], quantity=2)

    assert_error(response, 409, "insufficient_points",
                 "The member has 99.50 points available; 100.00 are needed.")


def test_a_per_member_limit_is_a_409_limit_reached(api):
    member_id = new_member(api, points=1000)
    reward = new_reward(api, name="Coffee", per_member_limit=2)
    redeemed(api, member_id, reward["id"])

    response = redeem(api, member_id, reward["id"], quantity=2)

    assert_error(response, 409, "limit_reached",
                 "Coffee is limited to 2 per member in all; this member has redeemed 1.")
    assert redeem(api, member_id, reward["id"]).status_code == 201
    assert_error(redeem(api, member_id, reward["id"]), 409, "limit_reached")
    assert available(api, member_id) == 800


def test_a_member_in_the_right_tier_may_redeem_a_tier_reward(api):
    member_id = new_member(api, points=500)
    reward = new_reward(api, min_tier="gold")
    assert_error(redeem(api, member_id, reward["id"]), 409, "not_eligible")

    moved = api.put("admin", f"/members/{member_id}/tier", json={"tier": "gold", "reason": "test"})
    assert moved.status_code in (200, 201), moved.json

    assert redeem(api, member_id, reward["id"]).status_code == 201


@pytest.mark.parametrize("body, field, message", [
    ({}, "reward_id", "Missing data for required field."),
    ({"reward_id": 1, "quantity": 0}, "quantity", "Must be greater than or equal to 1 and less than or equal to 20."),
    ({"reward_id": 1, "quantity": 21}, "quantity", "Must be greater than or equal to 1 and less than or equal to 20."),
    ({"reward_id": 1, "note": "gift"}, "note", "Unknown field."),
])
def test_a_redemption_request_is_validated(api, body, field, message):
    member_id = new_member(api, points=500)
    new_reward(api)

    response = api.post("app", f"/members/{member_id}/redemptions", json=body)

    assert_error(response, 422, "validation_error")
    assert response.json["errors"][field] == [message]
    assert available(api, member_id) == 500


def test_redeeming_an_unknown_reward_or_for_an_unknown_member_is_a_404(api):
    member_id = new_member(api, points=500)
    reward = new_reward(api)

    assert_error(redeem(api, member_id, 999), 404, "not_found")
    assert_error(redeem(api, 999, reward["id"]), 404, "not_found")


def test_an_idempotency_key_replay_redeems_once(api, app):
    member_id = new_member(api, points=500)
    reward = new_reward(api, stock=10)
    key = {"Idempotency-Key": "redeem-1"}

    first = redeem(api, member_id, reward["id"], quantity=2, extra_headers=key)
    again = redeem(api, member_id, reward["id"], quantity=2, extra_headers=key)

    assert first.status_code == again.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert available(api, member_id) == 300 and reward_stock(api, reward["id"]) == 8
    assert rows(app, Redemption) == 1 and rows(app, Voucher) == 2
    other = redeem(api, member_id, reward["id"], quantity=1, extra_headers=key)
    assert_error(other, 409, "idempotency_conflict")
    assert available(api, member_id) == 300


def test_a_refused_redemption_keeps_its_answer_for_its_key_and_a_new_key_decides_afresh(api):
    member_id = new_member(api, points=50)
    reward = new_reward(api)
    key = {"Idempotency-Key": "redeem-2"}
    first = redeem(api, member_id, reward["id"], extra_headers=key)
    assert_error(first, 409, "insufficient_points")

    api.post("admin", f"/members/{member_id}/adjustments", json={"points": 50, "reason": "top up"})
    duplicate = redeem(api, member_id, reward["id"], extra_headers=key)
    assert duplicate.status_code == 409 and duplicate.json == first.json
    assert duplicate.headers["Idempotent-Replayed"] == "true" and available(api, member_id) == 100

    response = redeem(api, member_id, reward["id"], extra_headers={"Idempotency-Key": "redeem-3"})
    assert response.status_code == 201 and available(api, member_id) == 0


# --- vouchers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["pos", "app", "admin"])
def test_a_voucher_is_looked_up_by_its_code_in_any_case_and_with_dashes(api, role):
    member_id = new_member(api, points=500)
    reward = new_reward(api, name="Mug", kind="coupon")
    voucher = redeemed(api, member_id, reward["id"])["vouchers"][0]
    code = voucher["code"]

    for typed in (code, code.lower(), dashed_lower(code), f"{code[:6]}-{code[6:]}", f"{code[:4]} {code[4:]}"):
        response = api.get(role, f"/vouchers/{typed}")
        assert response.status_code == 200, (typed, response.json)
        body = response.json
        assert (body["code"], body["status"], body["expires_at"]) == (code, "issued", voucher["expires_at"])
        assert body["reward"] == {"id": reward["id"], "name": "Mug", "kind": "coupon", "cash_value": None}
        assert body["member_id"] == member_id


@pytest.mark.parametrize("code", ["ABCDEFGHJKMN", "abcd-efgh-jkmn", "0000"])
def test_an_unknown_voucher_is_a_404(api, code):
    response = api.get("pos", f"/vouchers/{code}")

    assert_error(response, 404, "not_found")
    assert_error(api.post("pos", f"/vouchers/{code}/use", json={}), 404, "not_found")


def test_a_till_uses_a_voucher_once(api):
    member_id = new_member(api, points=500)
    code = redeemed(api, member_id, new_reward(api)["id"])["vouchers"][0]["code"]

    with clock.frozen_at(datetime.now(timezone.utc).replace(microsecond=0)):
        used = api.post("pos", f"/vouchers/{dashed_lower(code)}/use", json={"store_id": "S1"})
    again = api.post("pos", f"/vouchers/{code}/use", json={})
    elsewhere = api.post("pos_other", f"/vouchers/{code}/use", json={})

    assert used.status_code == 200, used.json
    assert (used.json["code"], used.json["status"], used.json["used_store_id"]) == (code, "used", "S1")
    assert used.json["used_at"].endswith("Z")
    assert_error(again, 409, "voucher_used")
    assert "store S1" in again.json["message"]
    assert_error(elsewhere, 409, "voucher_used")
    assert api.get("app", f"/vouchers/{code}").json["status"] == "used"


def test_a_pos_key_cannot_use_a_voucher_for_another_store(api):
    member_id = new_member(api, points=500)
    code = redeemed(api, member_id, new_reward(api)["id"])["vouchers"][0]["code"]

    response = api.post("pos_other", f"/vouchers/{code}/use", json={"store_id": "S1"})

    assert_error(response, 403, "forbidden")
    assert "S2" in response.json["message"] and "S1" in response.json["message"]
    assert api.get("pos", f"/vouchers/{code}").json["status"] == "issued"
    used = api.post("pos_other", f"/vouchers/{code}/use", json={})  # at its own store: fine
    assert (used.status_code, used.json["used_store_id"]) == (200, "S2")


def test_an_admin_uses_a_voucher_for_a_named_store(api):
    member_id = new_member(api, points=500)
    code = redeemed(api, member_id, new_reward(api)["id"])["vouchers"][0]["code"]

    nameless = api.post("admin", f"/vouchers/{code}/use", json={})
    named = api.post("admin", f"/vouchers/{code}/use", json={"store_id": "S9"})

    assert_error(nameless, 422, "validation_error")
    assert nameless.json["errors"] == {"store_id": ["Missing data for required field."]}
    assert (named.status_code, named.json["used_store_id"]) == (200, "S9")


def test_the_use_request_is_validated(api):
    member_id = new_member(api, points=500)
    code = redeemed(api, member_id, new_reward(api)["id"])["vouchers"][0]["code"]

    response = api.post("pos", f"/vouchers/{code}/use", json={"store_id": "S1", "till": 3})

    assert_error(response, 422, "validation_error")
    assert response.json["errors"] == {"till": ["Unknown field."]}
    assert api.get("pos", f"/vouchers/{code}").json["status"] == "issued"


def test_an_expired_voucher_is_a_409_voucher_expired(api):
    member_id = new_member(api, points=500)
    reward = new_reward(api, voucher_valid_days=30)
    with clock.frozen_at(T0):
        code = redeemed(api, member_id, reward["id"], quantity=2)["vouchers"][0]["code"]
    expiry = datetime(2026, 4, 9, 16, tzinfo=timezone.utc)

    with clock.frozen_at(expiry - timedelta(seconds=1)):
        looked_up = api.get("pos", f"/vouchers/{code}").json
    with clock.frozen_at(expiry):
        expired = api.get("pos", f"/vouchers/{code}").json
        refused = api.post("pos", f"/vouchers/{code}/use", json={})

    assert (looked_up["status"], expired["status"]) == ("issued", "expired")
    assert_error(refused, 409, "voucher_expired", "This voucher expired at 2026-04-09 16:00 UTC.")


def test_a_use_replayed_with_its_idempotency_key_answers_the_first_use(api):
    member_id = new_member(api, points=500)
    code = redeemed(api, member_id, new_reward(api)["id"])["vouchers"][0]["code"]
    key = {"Idempotency-Key": "till-1-scan-77"}

    first = api.post("pos", f"/vouchers/{code}/use", json={}, extra_headers=key)
    retry = api.post("pos", f"/vouchers/{code}/use", json={}, extra_headers=key)

    assert first.status_code == retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true" and retry.json == first.json


def test_the_voucher_qr_png_decodes_to_its_code(api):
    member_id = new_member(api, points=500)
    code = redeemed(api, member_id, new_reward(api)["id"])["vouchers"][0]["code"]

    for typed in (code, dashed_lower(code)):
        response = api.get("app", f"/vouchers/{typed}/qr.png")
        assert response.status_code == 200
        assert response.mimetype == "image/png"
        assert response.data.startswith(b"\x89PNG\r\n\x1a\n")
        assert scan(response.data) == code
    assert response.headers["Cache-Control"] == "private, max-age=300"
    # What the scanner reads is what the till sends.
    assert api.post("pos", f"/vouchers/{scan(response.data)}/use", json={}).status_code == 200


def test_the_voucher_qr_svg_is_served(api):
    member_id = new_member(api, points=500)
    code = redeemed(api, member_id, new_reward(api)["id"])["vouchers"][0]["code"]

    response = api.get("app", f"/vouchers/{code}/qr.svg")

    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    root = ElementTree.fromstring(response.data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("{http://www.w3.org/2000/svg}path") is not None


@pytest.mark.parametrize("suffix", ["qr.png", "qr.svg"])
def test_the_qr_of_an_unknown_voucher_is_a_json_404(api, suffix):
    assert_error(api.get("app", f"/vouchers/ABCDEFGHJKMN/{suffix}"), 404, "not_found")


# --- cancelling -------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["app", "admin"])
def test_a_cancellation_voids_the_vouchers_and_returns_points_and_stock(api, app, role):
    member_id = new_member(api, points=500)
    reward = new_reward(api, stock=5)
    redemption = redeemed(api, member_id, reward["id"], quantity=2)

    response = api.post(role, f"/redemptions/{redemption['redemption_id']}/cancel")

    assert response.status_code == 200, response.json
    body = response.json
    assert (body["redemption_id"], body["status"]) == (redemption["redemption_id"], "cancelled")
    assert (body["points_spent"], body["points_returned"]) == (200, 200)
    assert body["cancelled_at"].endswith("Z")
    assert [v["status"] for v in body["vouchers"]] == ["void", "void"]
    assert body["member"]["points"]["available"] == 500
    assert available(api, member_id) == 500 and reward_stock(api, reward["id"]) == 5
    history = api.get("app", f"/members/{member_id}/points/history").json["items"]
    assert (history[0]["type"], history[0]["points"]) == ("reverse", 200)
    for voucher in redemption["vouchers"]:
        assert api.get("pos", f"/vouchers/{voucher['code']}").json["status"] == "void"
        refused = api.post("pos", f"/vouchers/{voucher['code']}/use", json={})
        assert_error(refused, 409, "voucher_void")
    [(actor, entity_type, entity_id, _, after)] = audit_entries(app, "redemption.cancel")
    assert (entity_type, entity_id) == ("redemption", str(redemption["redemption_id"]))
    assert after == {"status": "cancelled", "vouchers_void": 2, "points_returned": "200.00"}


def test_cancelling_twice_is_a_replay_that_returns_the_points_once(api):
    member_id = new_member(api, points=500)
    redemption = redeemed(api, member_id, new_reward(api)["id"])

    first = api.post("app", f"/redemptions/{redemption['redemption_id']}/cancel")
    again = api.post("app", f"/redemptions/{redemption['redemption_id']}/cancel")

    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["points_returned"] == first.json["points_returned"] == 100
    assert again.json["cancelled_at"] == first.json["cancelled_at"]
    assert available(api, member_id) == 500
    reverses = api.get("app", f"/members/{member_id}/points/history", query_string={"type": "reverse"})
    assert len(reverses.json["items"]) == 1


def test_a_redemption_whose_vouchers_were_all_used_cannot_be_cancelled(api):
    member_id = new_member(api, points=500)
    redemption = redeemed(api, member_id, new_reward(api, stock=5)["id"], quantity=2)
    for voucher in redemption["vouchers"]:
        assert api.post("pos", f"/vouchers/{voucher['code']}/use", json={}).status_code == 200

    response = api.post("app", f"/redemptions/{redemption['redemption_id']}/cancel")

    assert_error(response, 409, "conflict")
    assert available(api, member_id) == 300


def test_cancelling_after_one_voucher_was_used_returns_only_the_other(api):
    member_id = new_member(api, points=500)
    reward = new_reward(api, stock=5)
    redemption = redeemed(api, member_id, reward["id"], quantity=2)
    used, unused = redemption["vouchers"]
    api.post("pos", f"/vouchers/{used['code']}/use", json={})

    response = api.post("app", f"/redemptions/{redemption['redemption_id']}/cancel")

    assert response.status_code == 200, response.json
    assert response.json["points_returned"] == 100
    assert {v["code"]: v["status"] for v in response.json["vouchers"]} == {used["code"]: "used", unused["code"]: "void"}
    assert available(api, member_id) == 400 and reward_stock(api, reward["id"]) == 4


def test_cancelling_an_unknown_redemption_is_a_404(api):
    assert_error(api.post("app", "/redemptions/999/cancel"), 404, "not_found")


# --- GET /members/{id}/redemptions ------------------------------------------------------------

def test_a_members_redemptions_with_their_vouchers_newest_first(api):
    member_id = new_member(api, points=1000)
    other_id = new_member(api, points=1000)
    reward = new_reward(api)
    first = redeemed(api, member_id, reward["id"], quantity=2)
    second = redeemed(api, member_id, reward["id"])
    third = redeemed(api, member_id, reward["id"])
    redeemed(api, other_id, reward["id"])
    api.post("pos", f"/vouchers/{first['vouchers'][0]['code']}/use", json={})

    page = api.get("app", f"/members/{member_id}/redemptions", query_string={"limit": 2})
    rest = api.get("app", f"/members/{member_id}/redemptions",
                   query_string={"limit": 2, "cursor": page.json["next_cursor"]})

    assert page.status_code == rest.status_code == 200
    assert [r["redemption_id"] for r in page.json["items"]] == [third["redemption_id"], second["redemption_id"]]
    assert [r["redemption_id"] for r in rest.json["items"]] == [first["redemption_id"]]
    assert rest.json["next_cursor"] is None
    [oldest] = rest.json["items"]
    assert (oldest["status"], oldest["quantity"], oldest["points_spent"], oldest["points_returned"]) == \
        ("completed", 2, 200, 0)
    assert [(v["code"], v["status"]) for v in oldest["vouchers"]] == \
        [(first["vouchers"][0]["code"], "used"), (first["vouchers"][1]["code"], "issued")]
    assert "member" not in oldest


def test_the_redemptions_list_is_checked(api):
    member_id = new_member(api)

    assert api.get("app", f"/members/{member_id}/redemptions").json == {"items": [], "next_cursor": None}
    assert_error(api.get("app", "/members/999/redemptions"), 404, "not_found")
    assert_error(api.get("app", f"/members/{member_id}/redemptions", query_string={"cursor": "!!"}),
                 422, "validation_error")
    assert_error(api.get("app", f"/members/{member_id}/redemptions", query_string={"limit": 0}),
                 422, "validation_error")
