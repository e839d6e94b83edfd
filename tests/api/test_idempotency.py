"""Retries are safe: an Idempotency-Key or a natural key (receipt, refund, event, payment number)
returns the first answer, marked `Idempotent-Replayed: true`, and changes nothing."""
from decimal import Decimal

import pytest

REPLAYED = "Idempotent-Replayed"


def new_member(api, phone="13800000001"):
    response = api.post("app", "/members", json={"name": "Li Lei", "phone": phone})
    assert response.status_code == 201, response.json
    return response.json["id"]


def points(api, member_id):
    return api.get("admin", f"/members/{member_id}/points").json


def history(api, member_id):
    return api.get("admin", f"/members/{member_id}/points/history").json["items"]


def with_key(key):
    return {"extra_headers": {"Idempotency-Key": key}}


def assert_replay_of(first, again):
    assert first.status_code == 201
    assert REPLAYED not in first.headers
    assert again.status_code == first.status_code
    assert again.headers[REPLAYED] == "true"
    assert again.json == first.json


# --- the Idempotency-Key header -------------------------------------------------------------

def test_a_refusal_on_the_points_is_kept_for_its_key_even_after_points_arrive(api, assert_ledger_ok):
    """A till told "not enough points" takes cash; a duplicate of its request, arriving after the
    member earned points, must not charge them: it gets the same refusal."""
    member_id = new_member(api)
    body = {"member_id": member_id, "payment_no": "P1", "points": 500}
    first = api.post("pos", "/points-payments", json=body, **with_key("pay-1"))
    api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "900.00"})

    again = api.post("pos", "/points-payments", json=body, **with_key("pay-1"))

    assert (first.status_code, first.json["error"]) == (409, "insufficient_points")
    assert again.status_code == 409 and again.headers[REPLAYED] == "true"
    assert again.json == first.json
    assert points(api, member_id)["available"] == 900
    fresh = api.post("pos", "/points-payments", json={**body, "payment_no": "P2"}, **with_key("pay-2"))
    assert fresh.status_code == 201  # a new request, with a new key, is decided afresh
    assert_ledger_ok()


def test_a_refusal_that_says_nothing_of_the_outcome_is_not_kept(api):
    member_id = new_member(api)
    body = {"member_id": member_id, "receipt_no": "R1", "amount": "100.00"}

    refused = api.post("pos", "/purchases", json={**body, "member_id": 999}, **with_key("k-404"))
    unknown = api.post("pos", "/purchases", json={**body, "member_id": 999}, **with_key("k-404"))

    assert refused.status_code == unknown.status_code == 404
    assert REPLAYED not in unknown.headers



def test_a_repeated_adjustment_with_the_same_key_is_done_once(api, assert_ledger_ok):
    member_id = new_member(api)
    body = {"points": 50, "reason": "goodwill"}

    first = api.post("admin", f"/members/{member_id}/adjustments", json=body, **with_key("adj-1"))
    again = api.post("admin", f"/members/{member_id}/adjustments", json=body, **with_key("adj-1"))

    assert_replay_of(first, again)
    assert again.data == first.data
    assert points(api, member_id)["available"] == 50
    assert [e["type"] for e in history(api, member_id)] == ["adjust"]
    assert_ledger_ok()


def test_a_repeated_registration_with_the_same_key_creates_one_member(api):
    body = {"name": "Li Lei", "phone": "13800000001", "email": "li@example.com"}

    first = api.post("app", "/members", json=body, **with_key("signup-1"))
    again = api.post("app", "/members", json=body, **with_key("signup-1"))

    assert_replay_of(first, again)
    assert [m["id"] for m in api.get("pos", "/members", query_string={"phone": "13800000001"}).json["items"]] \
        == [first.json["id"]]


def test_a_replay_returns_the_first_answer_even_after_later_changes(api):
    member_id = new_member(api)
    body = {"member_id": member_id, "receipt_no": "R1", "amount": "100.00"}
    first = api.post("pos", "/purchases", json=body, **with_key("k1"))
    api.post("admin", f"/members/{member_id}/adjustments", json={"points": 7, "reason": "later change"})

    again = api.post("pos", "/purchases", json=body, **with_key("k1"))

    assert_replay_of(first, again)
    assert again.json["member"]["points"]["available"] == 100
    assert points(api, member_id)["available"] == 107


def test_the_same_key_with_a_different_body_is_an_idempotency_conflict(api):
    member_id = new_member(api)
    first = api.post("admin", f"/members/{member_id}/adjustments", json={"points": 50, "reason": "goodwill"},
                     **with_key("adj-1"))

    other = api.post("admin", f"/members/{member_id}/adjustments", json={"points": 500, "reason": "goodwill"},
                     **with_key("adj-1"))

    assert first.status_code == 201
    assert other.status_code == 409
    assert other.json["error"] == "idempotency_conflict"
    assert REPLAYED not in other.headers
    assert points(api, member_id)["available"] == 50


def test_the_same_key_on_another_endpoint_is_an_idempotency_conflict(api):
    first_member, second_member = new_member(api, "13800000001"), new_member(api, "13800000002")
    body = {"points": 50, "reason": "goodwill"}
    api.post("admin", f"/members/{first_member}/adjustments", json=body, **with_key("adj-1"))

    other = api.post("admin", f"/members/{second_member}/adjustments", json=body, **with_key("adj-1"))

    assert other.status_code == 409
    assert other.json["error"] == "idempotency_conflict"
    assert points(api, second_member)["available"] == 0


def test_key_order_and_spacing_of_the_body_do_not_matter(api):
    member_id = new_member(api)
    first = api.post("pos", "/purchases", content_type="application/json", **with_key("k1"),
                     data=b'{"member_id": %d, "receipt_no": "R1", "amount": "10.00"}' % member_id)

    again = api.post("pos", "/purchases", content_type="application/json", **with_key("k1"),
                     data=b'{"amount":"10.00","receipt_no":"R1","member_id":%d}' % member_id)

    assert_replay_of(first, again)


def test_keys_belong_to_the_api_key_that_sent_them(api):
    member_id = new_member(api)

    first = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "10.00"},
                     **with_key("1"))
    second = api.post("pos_other", "/purchases", json={"member_id": member_id, "receipt_no": "R9",
                                                        "amount": "20.00"}, **with_key("1"))

    assert (first.status_code, second.status_code) == (201, 201)
    assert REPLAYED not in second.headers
    assert points(api, member_id)["available"] == 30


def test_a_reversal_with_the_same_key_is_replayed(api):
    member_id = new_member(api)
    api.post("admin", f"/members/{member_id}/adjustments", json={"points": 300, "reason": "gift"})
    payment = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1",
                                                         "points": 100}).json

    first = api.post("pos", f"/points-payments/{payment['payment_id']}/reversal", **with_key("rev-1"))
    again = api.post("pos", f"/points-payments/{payment['payment_id']}/reversal", **with_key("rev-1"))

    assert_replay_of(first, again)
    assert points(api, member_id)["available"] == 300


@pytest.mark.parametrize("key", ["", "   ", "k" * 256])
def test_an_idempotency_key_must_be_1_to_255_characters(api, key):
    member_id = new_member(api)

    response = api.post("admin", f"/members/{member_id}/adjustments", json={"points": 5, "reason": "goodwill"},
                        **with_key(key))

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json["message"]
    assert points(api, member_id)["available"] == 0


# --- natural keys ----------------------------------------------------------------------------

def test_the_same_store_and_receipt_is_credited_once(api, assert_ledger_ok):
    member_id = new_member(api)
    body = {"member_id": member_id, "receipt_no": "R1", "amount": "88.80"}

    first, again = api.post("pos", "/purchases", json=body), api.post("pos", "/purchases", json=body)

    assert_replay_of(first, again)
    assert points(api, member_id)["available"] == Decimal("88.8")
    assert [e["type"] for e in history(api, member_id)] == ["earn_purchase"]
    assert_ledger_ok()


def test_a_receipt_number_reused_for_another_amount_is_a_conflict(api):
    member_id = new_member(api)
    api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "88.80"})

    other = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "10.00"})

    assert other.status_code == 409
    assert other.json["error"] == "conflict"
    assert "R1" in other.json["message"]
    assert len(history(api, member_id)) == 1


def test_the_same_refund_number_of_a_purchase_reverses_once(api, assert_ledger_ok):
    member_id = new_member(api)
    purchase = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1",
                                                    "amount": "100.00"}).json
    path, body = f"/purchases/{purchase['purchase_id']}/refunds", {"refund_no": "F1", "amount": "40.00"}

    first, again = api.post("pos", path, json=body), api.post("pos", path, json=body)

    assert_replay_of(first, again)
    assert first.json["points_reversed"] == 40
    assert points(api, member_id)["available"] == 60
    assert [e["type"] for e in history(api, member_id)] == ["reverse", "earn_purchase"]
    assert_ledger_ok()


def test_a_refund_number_reused_for_another_amount_is_a_conflict(api):
    member_id = new_member(api)
    purchase = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1",
                                                    "amount": "100.00"}).json
    path = f"/purchases/{purchase['purchase_id']}/refunds"
    api.post("pos", path, json={"refund_no": "F1", "amount": "40.00"})

    other = api.post("pos", path, json={"refund_no": "F1", "amount": "50.00"})

    assert other.status_code == 409
    assert other.json["error"] == "conflict"
    assert points(api, member_id)["available"] == 60


def test_the_same_activity_event_is_awarded_once(api, assert_ledger_ok):
    member_id = new_member(api)
    path, body = f"/members/{member_id}/activities", {"type": "share", "event_id": "share-1"}

    first, again = api.post("app", path, json=body), api.post("app", path, json=body)

    assert_replay_of(first, again)
    assert first.json["points_awarded"] == Decimal("0.5")
    assert points(api, member_id)["available"] == Decimal("0.5")
    assert api.post("app", path, json={"type": "share", "event_id": "share-2"}).json["points_awarded"] == Decimal("0.5")
    assert points(api, member_id)["available"] == 1
    assert_ledger_ok()


def test_the_same_store_and_payment_number_is_debited_once(api, assert_ledger_ok):
    member_id = new_member(api)
    api.post("admin", f"/members/{member_id}/adjustments", json={"points": 500, "reason": "gift"})
    body = {"member_id": member_id, "payment_no": "P1", "points": 200}

    first, again = api.post("pos", "/points-payments", json=body), api.post("pos", "/points-payments", json=body)

    assert_replay_of(first, again)
    assert points(api, member_id)["available"] == 300
    assert [e["type"] for e in history(api, member_id)] == ["payment", "adjust"]
    assert_ledger_ok()


def test_a_payment_refused_by_its_number_is_refused_again_after_points_arrive(api, assert_ledger_ok):
    """No Idempotency-Key: the store and payment number are the payment's identity, refusals too."""
    member_id = new_member(api)
    body = {"member_id": member_id, "payment_no": "P1", "points": 500}
    first = api.post("pos", "/points-payments", json=body)
    api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "900.00"})

    again = api.post("pos", "/points-payments", json=body)
    with_a_key = api.post("pos", "/points-payments", json=body, **with_key("pay-late"))
    other_points = api.post("pos", "/points-payments", json={**body, "points": 400})

    assert (first.status_code, first.json["error"]) == (409, "insufficient_points")
    assert (again.status_code, again.json) == (409, first.json)
    assert (with_a_key.status_code, with_a_key.json) == (409, first.json)
    assert (other_points.status_code, other_points.json["error"]) == (409, "conflict")
    assert points(api, member_id)["available"] == 900
    assert [e["type"] for e in history(api, member_id)] == ["earn_purchase"]
    assert_ledger_ok()


def test_a_payment_refused_under_an_idempotency_key_is_remembered_by_its_number_too(api):
    member_id = new_member(api)
    body = {"member_id": member_id, "payment_no": "P1", "points": 500}
    first = api.post("pos", "/points-payments", json=body, **with_key("pay-1"))
    api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "900.00"})

    without_key = api.post("pos", "/points-payments", json=body)
    other_key = api.post("pos", "/points-payments", json=body, **with_key("pay-2"))

    assert (first.status_code, first.json["error"]) == (409, "insufficient_points")
    assert (without_key.status_code, without_key.json) == (409, first.json)
    assert (other_key.status_code, other_key.json) == (409, first.json)
    assert points(api, member_id)["available"] == 900


def test_a_payment_number_reused_for_other_points_is_a_conflict(api):
    member_id = new_member(api)
    api.post("admin", f"/members/{member_id}/adjustments", json={"points": 500, "reason": "gift"})
    api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 200})

    other = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 300})

    assert other.status_code == 409
    assert other.json["error"] == "conflict"
    assert points(api, member_id)["available"] == 300


def test_reversing_a_payment_twice_gives_the_points_back_once(api, assert_ledger_ok):
    member_id = new_member(api)
    api.post("admin", f"/members/{member_id}/adjustments", json={"points": 500, "reason": "gift"})
    payment = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1",
                                                         "points": 200}).json
    path = f"/points-payments/{payment['payment_id']}/reversal"

    first, again = api.post("pos", path), api.post("pos", path)

    assert_replay_of(first, again)
    assert first.json["status"] == "reversed"
    assert points(api, member_id)["available"] == 500
    assert_ledger_ok()
