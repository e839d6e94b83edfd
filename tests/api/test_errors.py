"""Every failure is the JSON body of API.md, numbers stay exact, and a failed request changes nothing."""
from decimal import Decimal
from http import HTTPStatus

import pytest

from loyalty.members import service as members_service


def new_member(api, phone="13800000001"):
    response = api.post("app", "/members", json={"name": "Li Lei", "phone": phone})
    assert response.status_code == 201, response.json
    return response.json["id"]


def buy(api, member_id, amount, receipt_no="R1", role="pos"):
    response = api.post(role, "/purchases", json={"member_id": member_id, "receipt_no": receipt_no,
                                                   "amount": amount})
    assert response.status_code == 201, response.json
    return response.json


def state(api, member_id):
    """Everything a member could see of their points."""
    return (api.get("admin", f"/members/{member_id}/points").json,
            api.get("admin", f"/members/{member_id}/points/history").json)


def assert_error_body(response, status, code):
    body = response.json
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert body["code"] == status
    assert body["status"] == HTTPStatus(status).phrase
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"].endswith(".")
    return body


# --- the error body ----------------------------------------------------------------------------

@pytest.fixture
def member_id(api):
    return new_member(api)


@pytest.mark.parametrize("send, status, code", [
    (lambda api, client, m: client.get(f"/api/v1/members/{m}"), 401, "unauthorized"),
    (lambda api, client, m: api.get("app", "/members", query_string={"phone": "13800000001"}), 403, "forbidden"),
    (lambda api, client, m: api.get("app", "/members/999"), 404, "not_found"),
    (lambda api, client, m: api.get("app", "/no/such/address"), 404, "not_found"),
    (lambda api, client, m: api.patch("admin", "/members/1/points", json={}), 405, "method_not_allowed"),
    (lambda api, client, m: api.post("app", "/members", json={"name": "Twin", "phone": "13800000001"}),
     409, "conflict"),
    (lambda api, client, m: api.post("pos", "/points-payments", json={"member_id": m, "payment_no": "P1",
                                                                       "points": 100}),
     409, "insufficient_points"),
    (lambda api, client, m: api.post("pos", "/purchases", data=b"{oops", content_type="application/json"),
     400, "bad_request"),
    (lambda api, client, m: api.post("pos", "/purchases", data=b"amount=1", content_type="text/plain"),
     415, "unsupported_media_type"),
])
def test_every_error_has_the_contracts_json_body(api, client, member_id, send, status, code):
    body = assert_error_body(send(api, client, member_id), status, code)

    assert "errors" not in body


def test_a_field_problem_lists_each_field_with_its_messages(api, member_id):
    response = api.post("pos", "/purchases", json={"member_id": member_id, "amount": "-1.00"})

    body = assert_error_body(response, 422, "validation_error")
    assert body["errors"] == {"amount": ["Must be greater than 0."],
                              "receipt_no": ["Missing data for required field."]}
    assert "errors" in body["message"]


def test_a_problem_with_the_request_as_a_whole_is_the_message(api, member_id):
    response = api.post("pos", "/purchases", json={"receipt_no": "R1", "amount": "1.00"})

    body = assert_error_body(response, 422, "validation_error")
    assert body["message"] == "Name the member by exactly one of member_id or card."


def test_a_wrong_method_says_which_methods_the_address_takes(api):
    response = api.post("app", "/members/1")

    assert_error_body(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "PATCH"}


def test_a_body_over_a_megabyte_is_refused_as_too_large(api):
    response = api.post("app", "/members", json={"name": "Li Lei", "padding": "x" * (1024 * 1024)})

    assert_error_body(response, 413, "payload_too_large")


def test_an_unexpected_failure_is_a_json_500_without_details(api, member_id, monkeypatch):
    def broken(member_id):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(members_service, "read_member", broken)

    response = api.get("app", f"/members/{member_id}")

    body = assert_error_body(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True)
    assert body["message"]


# --- what is refused -------------------------------------------------------------------------

@pytest.mark.parametrize("path, body, field", [
    ("/members", {"name": "Li", "nickname": "Lei"}, "nickname"),
    ("/members", {"name": "Li", "external_ids": [{"channel": "wechat", "id": "1", "openid": "x"}]},
     "external_ids"),
    ("/purchases", {"member_id": 1, "receipt_no": "R1", "amount": "1.00", "points": 100}, "points"),
    ("/purchases", {"member_id": 1, "receipt_no": "R1", "amount": "1.00",
                    "items": [{"sku": "A", "quantity": 1, "amount": "1.00", "price": "1.00"}]}, "items"),
    ("/points-payments", {"member_id": 1, "payment_no": "P1", "points": 100, "money": "1.00"}, "money"),
])
def test_unknown_fields_are_refused_by_name(api, path, body, field):
    role = "app" if path == "/members" else "pos"

    response = api.post(role, path, json=body)

    assert_error_body(response, 422, "validation_error")
    assert field in response.json["errors"]


def test_unknown_query_parameters_are_refused(api, member_id):
    response = api.get("app", f"/members/{member_id}/points/history", query_string={"types": "adjust"})

    assert_error_body(response, 422, "validation_error")
    assert response.json["errors"] == {"types": ["Unknown field."]}


@pytest.mark.parametrize("raw", [b"{oops", b'{"name": "Li",}', b"\xff\xfe{}", b"{'name': 'Li'}",
                                 b'{"name": "Li", "birthday": NaN}', b'{"name": Infinity}'])
def test_malformed_json_is_a_400_that_says_so(api, raw):
    response = api.post("app", "/members", data=raw, content_type="application/json")

    body = assert_error_body(response, 400, "bad_request")
    assert "not valid JSON" in body["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_body_that_is_not_json_is_a_415(api, content_type):
    response = api.post("app", "/members", data=b'{"name": "Li Lei"}', content_type=content_type)

    assert_error_body(response, 415, "unsupported_media_type")
    assert "application/json" in response.json["message"]


def test_a_json_body_that_is_not_an_object_is_refused(api):
    response = api.post("app", "/members", json=["Li Lei"])

    assert_error_body(response, 422, "validation_error")


def test_a_missing_body_lists_the_required_fields(api):
    response = api.post("app", "/members")

    assert_error_body(response, 422, "validation_error")
    assert response.json["errors"] == {"name": ["Missing data for required field."]}


@pytest.mark.parametrize("amount", ["199.999", "0.001", 1.005, 1e-3])
def test_money_with_more_than_two_decimal_places_is_refused(api, member_id, amount):
    response = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": amount})

    assert_error_body(response, 422, "validation_error")
    assert response.json["errors"] == {"amount": ["Must have at most 2 decimal places."]}


@pytest.mark.parametrize("points", [0.125, "10.001", 100.001])
def test_points_with_more_than_two_decimal_places_are_refused(api, member_id, points):
    response = api.post("admin", f"/members/{member_id}/adjustments", json={"points": points, "reason": "typo"})

    assert_error_body(response, 422, "validation_error")
    assert response.json["errors"] == {"points": ["Must have at most 2 decimal places."]}


@pytest.mark.parametrize("path, field, value, message", [
    ("/purchases", "amount", "100000000.01", "Must be at most 100 000 000.00."),
    ("/purchases", "amount", "1e30", 'Must be a decimal number such as 120.5, in ASCII digits.'),
    ("/purchases", "amount", 1e30, "Must be at most 100 000 000.00."),
    ("/purchases", "amount", "10000000000000.00", "Must be at most 100 000 000.00."),
    ("/adjustments", "points", 10000000.01, "Must be at most 10 000 000."),
    ("/adjustments", "points", "-10000000.01", "Must be at least -10 000 000."),
    ("/adjustments", "points", -1e30, "Must be at least -10 000 000."),
    ("/adjustments", "points", 10**20, "Must be at most 10 000 000."),
])
def test_amounts_and_points_beyond_their_bounds_are_refused_not_a_server_error(api, member_id, path, field,
                                                                                value, message):
    if path == "/purchases":
        response = api.post("pos", path, json={"member_id": member_id, "receipt_no": "R1", "amount": value})
    else:
        response = api.post("admin", f"/members/{member_id}{path}", json={"points": value, "reason": "typo"})

    assert_error_body(response, 422, "validation_error")
    assert response.json["errors"] == {field: [message]}


def test_the_largest_amount_and_points_are_accepted(api, member_id):
    purchase = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1",
                                                   "amount": "100000000.00"})
    adjustment = api.post("admin", f"/members/{member_id}/adjustments", json={"points": -10000000, "reason": "correction"})

    assert purchase.status_code == 201, purchase.json
    assert purchase.json["amount"] == "100000000.00"
    assert adjustment.status_code == 201, adjustment.json
    assert adjustment.json["points"] == -10000000


@pytest.mark.parametrize("raw_amount", [b"true", b"null", b'"abc"', b'"NaN"', b'"Infinity"', b"[1]", b"{}"])
def test_money_that_is_not_a_number_is_refused(api, member_id, raw_amount):
    raw = b'{"member_id": %d, "receipt_no": "R1", "amount": %s}' % (member_id, raw_amount)

    response = api.post("pos", "/purchases", data=raw, content_type="application/json")

    assert_error_body(response, 422, "validation_error")
    assert "amount" in response.json["errors"]


def test_trailing_zeros_beyond_two_places_are_still_exact(api, member_id):
    response = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "10.5000"})

    assert response.status_code == 201
    assert response.json["amount"] == "10.50"


# --- exact numbers on the wire -----------------------------------------------------------------

def test_money_is_a_decimal_string_and_points_are_json_numbers(api, member_id):
    response = api.post("pos", "/purchases", data=(
        b'{"member_id": %d, "receipt_no": "R1", "amount": 199.9}' % member_id), content_type="application/json")

    assert response.status_code == 201
    assert b'"amount": "199.90"' in response.data
    assert b'"points_earned": 199.9,' in response.data
    assert b'"available": 199.9,' in response.data
    assert response.json["points_earned"] == Decimal("199.9")


def test_whole_points_are_written_without_a_fraction(api, member_id):
    buy(api, member_id, "100.00")

    response = api.get("app", f"/members/{member_id}/points")

    assert b'"available": 100,' in response.data
    assert b'"pending": 0,' in response.data


def test_a_points_payment_shows_its_money_value_as_a_string(api, member_id):
    buy(api, member_id, "300.00")

    response = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 250})

    assert response.status_code == 201
    assert response.json["money_value"] == {"amount": "2.50", "currency": "CNY"}
    assert b'"points": 250,' in response.data


def test_signed_points_keep_their_sign_and_half_points_their_half(api, member_id):
    buy(api, member_id, "10.00")
    api.post("app", f"/members/{member_id}/activities", json={"type": "sign_in", "event_id": "e1"})

    response = api.post("admin", f"/members/{member_id}/adjustments", json={"points": -0.5, "reason": "correction"})

    assert response.status_code == 201
    assert b'"points": -0.5,' in response.data
    assert b'"balance_after": 10,' in response.data


# --- a failed request changes nothing ---------------------------------------------------------

def test_an_insufficient_points_payment_changes_nothing(api, member_id, assert_ledger_ok):
    buy(api, member_id, "50.00")
    before = state(api, member_id)

    response = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 100})

    body = assert_error_body(response, 409, "insufficient_points")
    assert "50" in body["message"]
    assert state(api, member_id) == before
    assert_ledger_ok()


def test_a_refund_beyond_the_purchase_changes_nothing(api, member_id, assert_ledger_ok):
    purchase = buy(api, member_id, "80.00")
    before = state(api, member_id)

    response = api.post("pos", f"/purchases/{purchase['purchase_id']}/refunds",
                        json={"refund_no": "F1", "amount": "80.01"})

    assert_error_body(response, 422, "validation_error")
    assert state(api, member_id) == before
    again = api.post("pos", f"/purchases/{purchase['purchase_id']}/refunds",
                     json={"refund_no": "F1", "amount": "80.00"})
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again.headers
    assert_ledger_ok()


def test_a_conflicting_receipt_changes_nothing(api, member_id, assert_ledger_ok):
    buy(api, member_id, "80.00")
    before = state(api, member_id)

    response = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "99.00"})

    assert_error_body(response, 409, "conflict")
    assert state(api, member_id) == before
    assert_ledger_ok()


def test_a_purchase_refused_for_its_items_records_nothing(api, member_id):
    refused = api.post("pos", "/purchases", json={
        "member_id": member_id, "receipt_no": "R1", "amount": "10.00",
        "items": [{"sku": "A", "quantity": 1, "amount": "10.00"}, {"sku": "B", "quantity": 1, "amount": "0.01"}]})
    assert_error_body(refused, 422, "validation_error")
    assert state(api, member_id)[0]["available"] == 0

    accepted = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "10.00"})

    assert accepted.status_code == 201
    assert "Idempotent-Replayed" not in accepted.headers
