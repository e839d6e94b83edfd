"""Who may call what: 401 without a valid key, 403 for a role API.md does not allow, and a POS
key acting only for its own store."""
import pytest
import sqlalchemy as sa

from loyalty import auth
from loyalty.extensions import db

ROLES = ("admin", "marketing", "pos", "app")
EVERYONE = set(ROLES)

# Every endpoint of API.md that exists so far, with the roles allowed to call it.
ENDPOINTS = [
    ("post", "/members", {"app", "pos", "admin"}),
    ("get", "/members?phone=13800000001", {"pos", "marketing", "admin"}),
    ("get", "/members/1", EVERYONE),
    ("patch", "/members/1", {"app", "admin"}),
    ("get", "/members/1/card.png", {"app", "pos", "admin"}),
    ("get", "/members/1/card.svg", {"app", "pos", "admin"}),
    ("post", "/purchases", {"pos", "admin"}),
    ("post", "/purchases/1/refunds", {"pos", "admin"}),
    ("post", "/members/1/activities", {"app", "admin"}),
    ("post", "/members/1/adjustments", {"admin"}),
    ("get", "/members/1/points", EVERYONE),
    ("get", "/members/1/points/history", EVERYONE),
    ("post", "/points-payments", {"pos", "admin"}),
    ("post", "/points-payments/1/reversal", {"pos", "admin"}),
    ("get", "/earning-rules", EVERYONE),
    ("put", "/earning-rules", {"marketing", "admin"}),
    ("get", "/promotions", {"marketing", "admin"}),
    ("post", "/promotions", {"marketing", "admin"}),
    ("get", "/promotions/1", {"marketing", "admin"}),
    ("patch", "/promotions/1", {"marketing", "admin"}),
    ("post", "/promotions/1/stop", {"marketing", "admin"}),
    ("get", "/promotions/1/stats", {"marketing", "admin"}),
    ("post", "/promotions/simulate", EVERYONE),
]
REFUSED = [(method, path, role) for method, path, allowed in ENDPOINTS for role in ROLES if role not in allowed]
ALLOWED = [(method, path, role) for method, path, allowed in ENDPOINTS for role in sorted(allowed)]


def call(client, method, path, headers):
    body = {} if method in ("post", "put", "patch") else None
    return getattr(client, method)("/api/v1" + path, headers=headers, json=body)


def new_member(api, phone="13800000001"):
    response = api.post("app", "/members", json={"name": "Li Lei", "phone": phone})
    assert response.status_code == 201, response.json
    return response.json["id"]


def available(api, member_id):
    return api.get("admin", f"/members/{member_id}/points").json["available"]


# --- 401: no valid key ------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [(m, p) for m, p, _ in ENDPOINTS])
def test_every_endpoint_refuses_a_request_without_a_key(client, method, path):
    response = call(client, method, path, {})

    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert "Authorization: Bearer" in response.json["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer lk_not-a-key", "Bearer ", "Basic dXNlcjpwYXNz", "lk_no-scheme"])
def test_an_unknown_or_malformed_key_is_refused(client, keys, header):
    response = client.get("/api/v1/members/1", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"


def test_a_key_is_checked_before_the_role(client):
    response = client.post("/api/v1/members/1/adjustments", headers={"Authorization": "Bearer lk_nope"},
                           json={"points": 10, "reason": "goodwill"})

    assert response.status_code == 401


def test_a_revoked_key_is_refused_at_once(api, app, keys):
    member_id = new_member(api)
    assert api.get("pos", f"/members/{member_id}").status_code == 200

    with app.app_context():
        key_id = db.session.scalar(sa.select(auth.ApiKey.id).where(
            auth.ApiKey.key_hash == auth.hash_key(keys["pos"])))
        auth.revoke_key(key_id, actor="test")
        db.session.remove()

    refused = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "10.00"})
    assert refused.status_code == 401
    assert "revoked" in refused.json["message"]
    assert api.get("pos_other", f"/members/{member_id}").status_code == 200
    assert available(api, member_id) == 0


# --- 403: the role may not ------------------------------------------------------------------

@pytest.mark.parametrize("method, path, role", REFUSED)
def test_a_role_is_refused_where_the_contract_refuses_it(client, headers, method, path, role):
    response = call(client, method, path, headers[role])

    assert response.status_code == 403
    assert response.json["error"] == "forbidden"
    assert role in response.json["message"]


@pytest.mark.parametrize("method, path, role", ALLOWED)
def test_a_role_the_contract_allows_gets_past_the_door(client, headers, method, path, role):
    response = call(client, method, path, headers[role])

    assert response.status_code not in (401, 403), response.json


def test_a_refused_role_changes_nothing(api):
    member_id = new_member(api)

    response = api.post("pos", f"/members/{member_id}/adjustments", json={"points": 100, "reason": "self-service"})

    assert response.status_code == 403
    assert available(api, member_id) == 0
    assert api.get("admin", f"/members/{member_id}/points/history").json["items"] == []


# --- a POS key acts for its own store only ---------------------------------------------------

def test_a_purchase_is_credited_to_the_pos_keys_own_store(api):
    member_id = new_member(api)

    response = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "10.00"})

    assert response.status_code == 201
    assert response.json["store_id"] == "S1"


def test_a_pos_key_may_name_its_own_store(api):
    member_id = new_member(api)

    response = api.post("pos", "/purchases", json={"member_id": member_id, "store_id": "S1",
                                                    "receipt_no": "R1", "amount": "10.00"})

    assert response.status_code == 201
    assert response.json["store_id"] == "S1"


def test_pos_key_cannot_credit_another_store(api):
    member_id = new_member(api)

    response = api.post("pos", "/purchases", json={"member_id": member_id, "store_id": "S2",
                                                    "receipt_no": "R1", "amount": "10.00"})

    assert response.status_code == 403
    assert response.json["error"] == "forbidden"
    assert "S1" in response.json["message"] and "S2" in response.json["message"]
    assert available(api, member_id) == 0


def test_pos_key_cannot_take_a_points_payment_for_another_store(api):
    member_id = new_member(api)
    api.post("admin", f"/members/{member_id}/adjustments", json={"points": 500, "reason": "welcome gift"})

    response = api.post("pos", "/points-payments", json={"member_id": member_id, "store_id": "S2",
                                                          "payment_no": "P1", "points": 100})

    assert response.status_code == 403
    assert available(api, member_id) == 500


def test_pos_key_cannot_refund_another_stores_purchase(api):
    member_id = new_member(api)
    purchase = api.post("pos_other", "/purchases", json={"member_id": member_id, "receipt_no": "R1",
                                                          "amount": "100.00"}).json
    assert purchase["store_id"] == "S2"

    response = api.post("pos", f"/purchases/{purchase['purchase_id']}/refunds",
                        json={"refund_no": "F1", "amount": "100.00"})

    assert response.status_code == 403
    assert response.json["error"] == "forbidden"
    assert available(api, member_id) == 100
    assert api.post("pos_other", f"/purchases/{purchase['purchase_id']}/refunds",
                    json={"refund_no": "F1", "amount": "100.00"}).status_code == 201


def test_pos_key_cannot_reverse_another_stores_payment(api):
    member_id = new_member(api)
    api.post("admin", f"/members/{member_id}/adjustments", json={"points": 500, "reason": "welcome gift"})
    payment = api.post("pos_other", "/points-payments", json={"member_id": member_id, "payment_no": "P1",
                                                               "points": 200}).json

    response = api.post("pos", f"/points-payments/{payment['payment_id']}/reversal")

    assert response.status_code == 403
    assert available(api, member_id) == 300
    assert api.post("pos_other", f"/points-payments/{payment['payment_id']}/reversal").status_code == 201
    assert available(api, member_id) == 500


def test_the_same_receipt_number_at_two_stores_is_two_purchases(api):
    member_id = new_member(api)
    body = {"member_id": member_id, "receipt_no": "R1", "amount": "10.00"}

    first, second = api.post("pos", "/purchases", json=body), api.post("pos_other", "/purchases", json=body)

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json["purchase_id"] != second.json["purchase_id"]
    assert "Idempotent-Replayed" not in second.headers
    assert available(api, member_id) == 20


def test_an_admin_must_name_the_store_it_acts_for(api):
    member_id = new_member(api)
    body = {"member_id": member_id, "receipt_no": "R1", "amount": "10.00"}

    missing = api.post("admin", "/purchases", json=body)
    named = api.post("admin", "/purchases", json={**body, "store_id": "S7"})

    assert missing.status_code == 422
    assert "store_id" in missing.json["errors"]
    assert named.status_code == 201
    assert named.json["store_id"] == "S7"
