"""The points API as a till and the member app use it: earning, refunds, behaviour, adjustments,
payments, balances with what expires when, and the history walked page by page."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from loyalty import clock

D = Decimal
# 10:00 in Shanghai; default expiry is the end of the local day 365 days after the points arrive.
T0 = datetime(2026, 3, 10, 2, 0, tzinfo=timezone.utc)
ENTRY_FIELDS = {"id", "type", "points", "balance_after", "description", "reference", "created_at", "expires_at"}


@pytest.fixture
def member_id(api):
    with clock.frozen_at(T0 - timedelta(days=30)):  # a member since before the tests' days
        response = api.post("app", "/members", json={"name": "Li Lei", "phone": "13800000001"})
    assert response.status_code == 201, response.json
    return response.json["id"]


def buy(api, member_id, amount, receipt_no="R1", **extra):
    response = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": receipt_no,
                                                    "amount": amount, **extra})
    assert response.status_code == 201, response.json
    return response.json


def adjust(api, member_id, points, reason="goodwill"):
    response = api.post("admin", f"/members/{member_id}/adjustments", json={"points": points, "reason": reason})
    assert response.status_code == 201, response.json
    return response.json


def summary(api, member_id, role="app"):
    response = api.get(role, f"/members/{member_id}/points")
    assert response.status_code == 200, response.json
    return response.json


def history(api, member_id, **query):
    response = api.get("app", f"/members/{member_id}/points/history", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def set_rules(api, **changes):
    rules = api.get("marketing", "/earning-rules").json
    response = api.put("marketing", "/earning-rules", json={**rules, **changes})
    assert response.status_code == 200, response.json
    return response.json


# --- purchases ---------------------------------------------------------------------------------

def test_a_purchase_earns_one_point_per_yuan_rounded_down_to_the_cent(api, member_id, assert_ledger_ok):
    with clock.frozen_at(T0):
        bought = buy(api, member_id, "199.99")

    assert bought["points_earned"] == D("199.99")
    assert bought["status"] == "available"
    assert bought["available_at"] == "2026-03-10T02:00:00Z"
    assert bought["amount"] == "199.99" and bought["currency"] == "CNY"
    assert bought["member"]["id"] == member_id
    assert bought["member"]["points"] == {"available": D("199.99"), "pending": 0, "held": 0, "lifetime_earned": D("199.99")}
    assert_ledger_ok()


def test_a_till_names_the_member_by_card_or_id_but_not_both_nor_neither(api, member_id):
    both = api.post("pos", "/purchases", json={"member_id": member_id, "card": "x", "receipt_no": "R1",
                                                "amount": "1.00"})
    neither = api.post("pos", "/purchases", json={"receipt_no": "R1", "amount": "1.00"})

    assert (both.status_code, neither.status_code) == (422, 422)
    assert "exactly one of member_id or card" in both.json["message"]


def test_an_unknown_card_or_member_is_a_404(api, member_id):
    card = api.post("pos", "/purchases", json={"card": "no-such-card", "receipt_no": "R1", "amount": "1.00"})
    member = api.post("pos", "/purchases", json={"member_id": 999, "receipt_no": "R2", "amount": "1.00"})

    assert (card.status_code, member.status_code) == (404, 404)
    assert "card" in card.json["message"]
    assert summary(api, member_id)["available"] == 0


def test_a_purchase_in_another_currency_or_in_the_future_is_refused(api, member_id):
    with clock.frozen_at(T0):
        foreign = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1",
                                                       "amount": "10.00", "currency": "USD"})
        future = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R2",
                                                      "amount": "10.00", "occurred_at": "2026-03-10T03:00:00Z"})
        naive = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R3",
                                                     "amount": "10.00", "occurred_at": "2026-03-10T01:00:00"})

    assert foreign.json["errors"] == {"currency": ["Must be CNY."]}
    assert future.json["errors"] == {"occurred_at": ["Must not be in the future."]}
    assert naive.status_code == 422 and "occurred_at" in naive.json["errors"]
    assert summary(api, member_id)["available"] == 0


def test_items_in_excluded_categories_earn_nothing(api, member_id):
    set_rules(api, excluded_categories=["tobacco"])

    bought = buy(api, member_id, "100.00", items=[
        {"sku": "CIG-1", "category": "tobacco", "quantity": 2, "amount": "30.00"},
        {"sku": "TEA-1", "category": "drinks", "quantity": 1, "amount": "70.00"}])

    assert bought["points_earned"] == 70


def test_excluded_categories_and_skus_match_whatever_the_case_the_till_sends(api, member_id):
    set_rules(api, excluded_categories=["tobacco"], excluded_skus=["giftcard-100"])

    bought = buy(api, member_id, "200.00", items=[
        {"sku": "CIG-1", "category": "TOBACCO", "quantity": 1, "amount": "30.00"},
        {"sku": "CIG-2", "category": "Tobacco", "quantity": 1, "amount": "20.00"},
        {"sku": "GiftCard-100", "category": "cards", "quantity": 1, "amount": "100.00"},
        {"sku": "TEA-1", "category": "drinks", "quantity": 1, "amount": "50.00"}])

    assert bought["points_earned"] == 50


@pytest.mark.parametrize("change, field", [
    ({"points_per_unit": "100.01"}, "points_per_unit"), ({"points_per_unit": 1000000000}, "points_per_unit"),
    ({"payment_points_per_unit": "0.99"}, "payment_points_per_unit"),
    ({"payment_points_per_unit": "0.01"}, "payment_points_per_unit"),
    ({"payment_points_per_unit": 10001}, "payment_points_per_unit"),
    ({"pending_days": 366}, "pending_days"), ({"expiry_days": 3651}, "expiry_days"),
    ({"excluded_skus": ["x"] * 501}, "excluded_skus"), ({"excluded_categories": [""]}, "excluded_categories"),
    ({"activities": [{"type": "visit", "points": "10000.01"}]}, "activities"),
    ({"activities": [{"type": "visit", "points": 1, "cap": 1001, "cap_period": "day"}]}, "activities"),
])
def test_earning_rules_beyond_their_documented_bounds_are_refused(api, change, field):
    rules = api.get("marketing", "/earning-rules").json

    response = api.put("marketing", "/earning-rules", json={**rules, **change})

    assert response.status_code == 422
    assert field in response.json["errors"]
    assert api.get("marketing", "/earning-rules").json == rules


def test_earning_rules_at_their_bounds_are_accepted(api, member_id):
    set_rules(api, points_per_unit=100, payment_points_per_unit=1, pending_days=365, expiry_days=3650,
              activities=[{"type": "visit", "points": 10000, "cap": 1000, "cap_period": "day"}])

    bought = buy(api, member_id, "1.00", occurred_at="2026-03-10T02:00:00Z")
    paid = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 1})
    visit = api.post("app", f"/members/{member_id}/activities", json={"type": "visit", "event_id": "v1"})

    assert bought["points_earned"] == 100 and bought["status"] == "pending"
    assert paid.status_code == 409  # pending for a year: nothing to pay with yet
    assert visit.status_code == 201 and visit.json["points_awarded"] == 10000
    paid = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P2", "points": 1})
    assert paid.status_code == 201 and paid.json["money_value"]["amount"] == "1.00"  # a point is worth 1.00 at most


def test_points_are_pending_for_the_return_window(api, member_id, assert_ledger_ok):
    set_rules(api, pending_days=7)

    with clock.frozen_at(T0):
        bought = buy(api, member_id, "100.00")
        points = summary(api, member_id)
        refused = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1",
                                                             "points": 100})

    assert bought["status"] == "pending"
    assert bought["available_at"] == "2026-03-17T02:00:00Z"
    assert bought["member"]["points"] == {"available": 0, "pending": 100, "held": 0, "lifetime_earned": 100}
    assert (points["available"], points["pending"]) == (0, 100)
    assert points["pending_lots"] == [{"points": 100, "available_at": "2026-03-17T02:00:00Z"}]
    assert refused.json["error"] == "insufficient_points"
    with clock.frozen_at(T0 + timedelta(days=7)):
        again = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 100})
        paid = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P2", "points": 100})
    assert (again.status_code, again.json) == (409, refused.json)  # that payment was refused: it stays so
    assert paid.status_code == 201
    assert_ledger_ok()


# --- refunds -----------------------------------------------------------------------------------

def test_refunds_claw_back_points_pro_rata_and_never_exceed_the_purchase(api, member_id, assert_ledger_ok):
    purchase = buy(api, member_id, "200.00")
    path = f"/purchases/{purchase['purchase_id']}/refunds"

    first = api.post("pos", path, json={"refund_no": "F1", "amount": "50.00"})
    second = api.post("pos", path, json={"refund_no": "F2", "amount": "150.00"})
    third = api.post("pos", path, json={"refund_no": "F3", "amount": "0.01"})

    assert first.status_code == 201
    assert (first.json["points_reversed"], first.json["member"]["points"]["available"]) == (50, 150)
    assert first.json["refund_id"] and first.json["amount"] == "50.00"
    assert (second.json["points_reversed"], second.json["member"]["points"]["available"]) == (150, 0)
    assert third.status_code == 422
    assert third.json["errors"] == {"amount": ["Must be at most 0.00."]}
    assert summary(api, member_id)["lifetime_earned"] == 0
    assert_ledger_ok()


def test_a_refund_after_the_points_were_spent_leaves_a_debt_the_next_purchase_pays(api, member_id,
                                                                                   assert_ledger_ok):
    purchase = buy(api, member_id, "100.00")
    api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 100})

    refund = api.post("pos", f"/purchases/{purchase['purchase_id']}/refunds",
                      json={"refund_no": "F1", "amount": "100.00"})

    assert refund.status_code == 201
    points = summary(api, member_id)
    assert (points["available"], points["debt"]) == (-100, 100)
    assert_ledger_ok()
    buy(api, member_id, "150.00", receipt_no="R2")
    points = summary(api, member_id)
    assert (points["available"], points["debt"]) == (50, 0)
    assert_ledger_ok()


def test_refunding_an_unknown_purchase_is_a_404(api):
    response = api.post("pos", "/purchases/999/refunds", json={"refund_no": "F1", "amount": "1.00"})

    assert response.status_code == 404
    assert response.json["error"] == "not_found"


# --- behaviour ---------------------------------------------------------------------------------

def test_sign_in_earns_half_a_point_once_a_day(api, member_id, assert_ledger_ok):
    path = f"/members/{member_id}/activities"
    with clock.frozen_at(T0):
        first = api.post("app", path, json={"type": "sign_in", "event_id": "d1-a"})
        second = api.post("app", path, json={"type": "sign_in", "event_id": "d1-b"})
    with clock.frozen_at(T0 + timedelta(days=1)):
        next_day = api.post("app", path, json={"type": "sign_in", "event_id": "d2"})

    assert (first.status_code, second.status_code, next_day.status_code) == (201, 201, 201)
    assert (first.json["points_awarded"], first.json["capped"]) == (D("0.5"), False)
    assert (second.json["points_awarded"], second.json["capped"]) == (0, True)
    assert b'"capped": true' in second.data
    assert (next_day.json["points_awarded"], next_day.json["capped"]) == (D("0.5"), False)
    assert next_day.json["member"]["points"]["available"] == 1
    assert_ledger_ok()


def test_an_unknown_activity_type_is_refused_naming_the_configured_ones(api, member_id):
    response = api.post("app", f"/members/{member_id}/activities", json={"type": "dance", "event_id": "e1"})

    assert response.status_code == 422
    assert "sign_in" in response.json["message"] and "review" in response.json["message"]


def test_an_activity_older_than_a_week_is_refused(api, member_id):
    with clock.frozen_at(T0):
        response = api.post("app", f"/members/{member_id}/activities", json={
            "type": "share", "event_id": "e1", "occurred_at": "2026-03-02T02:00:00Z"})

    assert response.status_code == 422
    assert "occurred_at" in response.json["errors"]


def test_an_activity_from_before_the_member_joined_is_refused(api):
    with clock.frozen_at(T0):
        member_id = api.post("app", "/members", json={"name": "Han Meimei", "phone": "13800000002"}).json["id"]
    with clock.frozen_at(T0 + timedelta(days=1)):
        before = api.post("app", f"/members/{member_id}/activities", json={
            "type": "share", "event_id": "e1", "occurred_at": "2026-03-09T02:00:00Z"})
        since = api.post("app", f"/members/{member_id}/activities", json={
            "type": "share", "event_id": "e2", "occurred_at": "2026-03-10T03:00:00Z"})

    assert before.status_code == 422
    assert before.json["errors"] == {"occurred_at": ["Must not be before the member joined."]}
    assert "before the member joined" in before.json["message"]
    assert since.status_code == 201 and since.json["points_awarded"] == 0.5


def test_an_activity_more_than_a_few_minutes_in_the_future_is_refused(api, member_id):
    with clock.frozen_at(T0):
        response = api.post("app", f"/members/{member_id}/activities", json={
            "type": "share", "event_id": "e1", "occurred_at": "2026-03-10T02:06:00Z"})

    assert response.status_code == 422
    assert "occurred_at" in response.json["errors"]


def test_an_activity_of_an_unknown_member_is_a_404(api):
    response = api.post("app", "/members/999/activities", json={"type": "share", "event_id": "e1"})

    assert response.status_code == 404


# --- adjustments -----------------------------------------------------------------------------

def test_an_adjustment_answers_its_ledger_entry(api, member_id):
    with clock.frozen_at(T0):
        entry = adjust(api, member_id, "25.50", reason="Compensation for a late delivery")

    assert set(entry) == ENTRY_FIELDS
    assert entry["type"] == "adjust"
    assert (entry["points"], entry["balance_after"]) == (D("25.5"), D("25.5"))
    assert "Compensation for a late delivery" in entry["description"]
    assert entry["created_at"] == "2026-03-10T02:00:00Z"
    assert entry["expires_at"] == "2027-03-10T16:00:00Z"


def test_a_negative_adjustment_beyond_the_balance_leaves_a_debt(api, member_id, assert_ledger_ok):
    adjust(api, member_id, 10)

    entry = adjust(api, member_id, -30, reason="duplicate credit")

    assert (entry["points"], entry["balance_after"]) == (-30, -20)
    points = summary(api, member_id)
    assert (points["available"], points["debt"]) == (-20, 20)
    assert_ledger_ok()


@pytest.mark.parametrize("body, field", [
    ({"points": 0, "reason": "nothing"}, "points"), ({"points": 5}, "reason"), ({"points": 5, "reason": "x"}, "reason"),
    ({"reason": "no points"}, "points"), ({"points": "ten", "reason": "words"}, "points"),
])
def test_an_invalid_adjustment_is_refused(api, member_id, body, field):
    response = api.post("admin", f"/members/{member_id}/adjustments", json=body)

    assert response.status_code == 422
    assert field in response.json["errors"]
    assert history(api, member_id)["items"] == []


# --- points payments ---------------------------------------------------------------------------

def test_paying_with_points_takes_them_at_100_a_yuan_and_a_reversal_gives_them_back(api, member_id,
                                                                                     assert_ledger_ok):
    buy(api, member_id, "300.00")

    paid = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 250})

    assert paid.status_code == 201
    assert paid.json["payment_id"] and paid.json["points"] == 250
    assert paid.json["money_value"] == {"amount": "2.50", "currency": "CNY"}
    assert paid.json["status"] == "completed"
    assert summary(api, member_id)["available"] == 50
    reversed_ = api.post("pos", f"/points-payments/{paid.json['payment_id']}/reversal")
    assert reversed_.status_code == 201
    assert reversed_.json["status"] == "reversed" and reversed_.json["reversed_at"]
    assert summary(api, member_id)["available"] == 300
    assert [e["type"] for e in history(api, member_id)["items"]] == ["reverse", "payment", "earn_purchase"]
    assert_ledger_ok()


def test_points_that_pay_less_than_a_cent_are_refused(api, member_id):
    buy(api, member_id, "300.00")

    response = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": "0.5"})

    assert response.status_code == 422
    assert response.json["errors"] == {"points": ["Must be a multiple of 1."]}


def test_paying_more_points_than_available_is_insufficient_points(api, member_id):
    buy(api, member_id, "99.00")

    response = api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 100})

    assert response.status_code == 409
    assert response.json["error"] == "insufficient_points"
    assert summary(api, member_id)["available"] == 99


def test_reversing_an_unknown_payment_is_a_404(api):
    assert api.post("pos", "/points-payments/999/reversal").status_code == 404


# --- balances and what expires when -----------------------------------------------------------

@pytest.mark.parametrize("role", ["app", "pos", "marketing", "admin"])
def test_every_role_reads_a_members_points(api, member_id, role):
    buy(api, member_id, "12.30")

    points = summary(api, member_id, role=role)

    assert (points["available"], points["pending"], points["lifetime_earned"]) == (D("12.3"), 0, D("12.3"))


def test_expiring_points_are_grouped_by_expiry_earliest_first(api, member_id):
    with clock.frozen_at(T0):
        buy(api, member_id, "100.00", receipt_no="R1")
        buy(api, member_id, "20.00", receipt_no="R2")
    with clock.frozen_at(T0 + timedelta(days=31)):
        buy(api, member_id, "50.00", receipt_no="R3")
        points = summary(api, member_id)

    assert points["available"] == 170
    assert points["expiring"] == [{"points": 120, "expires_at": "2027-03-10T16:00:00Z"},
                                  {"points": 50, "expires_at": "2027-04-10T16:00:00Z"}]


def test_spending_takes_the_earliest_expiring_points_first(api, member_id):
    with clock.frozen_at(T0):
        buy(api, member_id, "100.00", receipt_no="R1")
    with clock.frozen_at(T0 + timedelta(days=31)):
        buy(api, member_id, "50.00", receipt_no="R2")
        api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 120})
        points = summary(api, member_id)

    assert points["expiring"] == [{"points": 30, "expires_at": "2027-04-10T16:00:00Z"}]


def test_points_past_their_expiry_are_gone(api, member_id, assert_ledger_ok):
    with clock.frozen_at(T0):
        buy(api, member_id, "100.00", receipt_no="R1")
    with clock.frozen_at(datetime(2027, 3, 10, 16, 0, tzinfo=timezone.utc)):
        bought = buy(api, member_id, "1.00", receipt_no="R2")

    assert bought["member"]["points"]["available"] == 1
    assert [e["type"] for e in history(api, member_id)["items"]] == ["earn_purchase", "expire", "earn_purchase"]
    assert_ledger_ok()


def test_points_of_an_unknown_member_are_a_404(api):
    assert api.get("app", "/members/999/points").status_code == 404
    assert api.get("app", "/members/999/points/history").status_code == 404


# --- history -----------------------------------------------------------------------------------

def test_history_lists_entries_newest_first_with_every_field(api, member_id):
    with clock.frozen_at(T0):
        purchase = buy(api, member_id, "100.00")
    with clock.frozen_at(T0 + timedelta(hours=1)):
        api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 40})

    items = history(api, member_id)["items"]

    assert all(set(entry) == ENTRY_FIELDS for entry in items)
    payment, earned = items
    assert (payment["type"], payment["points"], payment["balance_after"]) == ("payment", -40, 60)
    assert payment["created_at"] == "2026-03-10T03:00:00Z"
    assert (earned["type"], earned["points"], earned["balance_after"]) == ("earn_purchase", 100, 100)
    assert earned["reference"] == {"type": "purchase", "id": str(purchase["purchase_id"])}
    assert "R1" in earned["description"]
    assert payment["id"] > earned["id"]


def test_the_cursor_walks_every_entry_exactly_once(api, member_id):
    for n in range(1, 8):
        adjust(api, member_id, n)
    seen, pages, cursor = [], 0, None

    while True:
        page = history(api, member_id, limit=3, **({"cursor": cursor} if cursor else {}))
        pages += 1
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert [e["points"] for e in seen] == [7, 6, 5, 4, 3, 2, 1]
    assert len({e["id"] for e in seen}) == 7


def test_a_full_last_page_has_no_next_cursor(api, member_id):
    for n in range(1, 5):
        adjust(api, member_id, n)

    first = history(api, member_id, limit=2)
    second = history(api, member_id, limit=2, cursor=first["next_cursor"])

    assert first["next_cursor"] is not None
    assert len(second["items"]) == 2
    assert second["next_cursor"] is None


def test_history_is_filtered_by_type(api, member_id):
    buy(api, member_id, "100.00")
    adjust(api, member_id, 5)
    api.post("pos", "/points-payments", json={"member_id": member_id, "payment_no": "P1", "points": 10})
    adjust(api, member_id, 6)

    adjustments = history(api, member_id, type="adjust")["items"]
    some = api.get("app", f"/members/{member_id}/points/history?type=earn_purchase&type=payment").json["items"]

    assert [(e["type"], e["points"]) for e in adjustments] == [("adjust", 6), ("adjust", 5)]
    assert [e["type"] for e in some] == ["payment", "earn_purchase"]


def test_a_filtered_history_paginates_within_the_filter(api, member_id):
    for n in range(1, 4):
        adjust(api, member_id, n)
        buy(api, member_id, "10.00", receipt_no=f"R{n}")

    first = history(api, member_id, type="adjust", limit=2)
    second = history(api, member_id, type="adjust", limit=2, cursor=first["next_cursor"])

    assert [e["points"] for e in first["items"] + second["items"]] == [3, 2, 1]
    assert second["next_cursor"] is None


@pytest.mark.parametrize("query, field", [
    ({"cursor": "!!!not-a-cursor"}, "cursor"), ({"cursor": "abc"}, "cursor"),
    # Numbers no entry id can be: past a BIGINT (the database would fail) or not positive.
    ({"cursor": "OTIyMzM3MjAzNjg1NDc3NTgwOA"}, "cursor"), ({"cursor": "MA"}, "cursor"),
    ({"cursor": "LTU"}, "cursor"), ({"type": "gift"}, "type"),
    ({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"limit": "ten"}, "limit"),
])
def test_a_bad_history_query_is_refused(api, member_id, query, field):
    response = api.get("app", f"/members/{member_id}/points/history", query_string=query)

    assert response.status_code == 422
    assert response.json["error"] == "validation_error"
    assert field in response.json["errors"]


# --- earning rules ---------------------------------------------------------------------------

def test_marketing_changes_the_earning_rules_and_purchases_follow_them(api, member_id):
    changed = set_rules(api, points_per_unit=2, min_amount="10.00")

    assert changed["points_per_unit"] == 2 and changed["min_amount"] == "10.00"
    assert api.get("pos", "/earning-rules").json == changed
    assert buy(api, member_id, "9.99", receipt_no="R1")["points_earned"] == 0
    assert buy(api, member_id, "10.00", receipt_no="R2")["points_earned"] == 20


@pytest.mark.parametrize("changes, field", [
    ({"expiry_policy": "sometimes"}, "expiry_policy"), ({"pending_days": -1}, "pending_days"),
    ({"points_per_unit": "0.001"}, "points_per_unit"), ({"bonus": 1}, "bonus"),
])
def test_invalid_earning_rules_are_refused_and_the_old_ones_stay(api, changes, field):
    before = api.get("marketing", "/earning-rules").json

    response = api.put("marketing", "/earning-rules", json={**before, **changes})

    assert response.status_code == 422
    assert field in response.json["errors"]
    assert api.get("marketing", "/earning-rules").json == before
