"""The store's day: a hand-computed day of two tills at store S1 (Asia/Shanghai, UTC+8), checked
figure by figure, with records on both sides of local midnight, and the store confinement."""
from datetime import datetime, timezone

import pytest

from loyalty import auth, clock
from loyalty.extensions import db


def at(*args):
    return datetime(*args, tzinfo=timezone.utc)


@pytest.fixture
def till2(app):
    with app.app_context():
        plaintext = auth.create_key("pos", "till 2", store_id="S1")[1]
        db.session.remove()
    return {"Authorization": f"Bearer {plaintext}"}


def call(api, client, role_or_headers, method, path, when, **kwargs):
    with clock.frozen_at(when):
        if isinstance(role_or_headers, dict):
            return getattr(client, method)(f"/api/v1{path}", headers=role_or_headers, **kwargs)
        return getattr(api, method)(role_or_headers, path, **kwargs)


@pytest.fixture
def day(api, client, till2):
    """2026-03-10 in Shanghai runs from 2026-03-09T16:00Z to 2026-03-10T16:00Z."""
    def ok(response):
        assert response.status_code in (200, 201), response.json
        return response.json

    member = ok(call(api, client, "app", "post", "/members", at(2026, 3, 1), json={"name": "Han Meimei"}))["id"]
    ok(call(api, client, "admin", "post", f"/members/{member}/adjustments", at(2026, 3, 1),
            json={"points": 1000, "reason": "opening"}))

    def buy(who, receipt, amount, when):
        return ok(call(api, client, who, "post", "/purchases", when,
                       json={"member_id": member, "receipt_no": receipt, "amount": amount}))

    buy("pos", "R-before", "100.00", at(2026, 3, 9, 15, 59, 59))     # 23:59:59 on the 9th: not counted
    first = buy("pos", "R1", "200.00", at(2026, 3, 9, 16, 0, 0))      # 00:00:00 on the 10th: counted
    buy(till2, "R2", "50.50", at(2026, 3, 10, 15, 59, 59))           # 23:59:59 on the 10th: counted
    buy("pos", "R-after", "30.00", at(2026, 3, 10, 16, 0, 0))        # the 11th: not counted
    buy("pos_other", "R-S2", "70.00", at(2026, 3, 10, 3, 0))         # another store
    ok(call(api, client, till2, "post", f"/purchases/{first['purchase_id']}/refunds", at(2026, 3, 10, 2),
            json={"refund_no": "F1", "amount": "100.00"}))
    ok(call(api, client, "pos", "post", "/points-payments", at(2026, 3, 10, 3),
            json={"member_id": member, "payment_no": "P1", "points": 40}))
    second = ok(call(api, client, till2, "post", "/points-payments", at(2026, 3, 10, 3),
                     json={"member_id": member, "payment_no": "P2", "points": 60}))
    ok(call(api, client, "pos", "post", f"/points-payments/{second['payment_id']}/reversal", at(2026, 3, 10, 4)))
    ok(call(api, client, "pos", "post", "/points-holds", at(2026, 3, 10, 5),
            json={"member_id": member, "hold_no": "H1", "points": 10, "ttl_seconds": 86_400}))
    reward = ok(call(api, client, "marketing", "post", "/rewards", at(2026, 3, 1),
                     json={"name": "Coffee", "kind": "coupon", "points_cost": 5}))["id"]
    for n in range(2):
        code = ok(call(api, client, "app", "post", f"/members/{member}/redemptions", at(2026, 3, 10, 6),
                       json={"reward_id": reward}))["vouchers"][0]["code"]
        ok(call(api, client, "pos" if n == 0 else till2, "post", f"/vouchers/{code}/use", at(2026, 3, 10, 7),
                json={"store_id": "S1"}))
    return reward


def test_the_day_adds_up_to_the_hand_computed_figures(api, day):
    report = call(api, None, "pos", "get", "/reports/stores/S1/days/2026-03-10", at(2026, 3, 10, 8))
    assert report.status_code == 200, report.json
    body = report.json
    assert (body["from"], body["until"]) == ("2026-03-09T16:00:00Z", "2026-03-10T16:00:00Z")
    assert body["purchases"] == {"count": 2, "amount": "250.50", "currency": "CNY", "points": 250.5}
    assert body["refunds"] == {"count": 1, "amount": "100.00", "currency": "CNY", "points": 100}
    assert body["points_payments"] == {"count": 2, "points": 100, "money_value": {"amount": "1.00", "currency": "CNY"}}
    assert body["reversals"] == {"count": 1, "points": 60, "money_value": {"amount": "0.60", "currency": "CNY"}}
    assert body["vouchers_used"] == [{"reward_id": day, "name": "Coffee", "count": 2}]
    assert (body["holds_open"], body["holds_open_points"]) == (1, 10)
    by_key = {line["key_name"]: line for line in body["by_key"]}
    assert set(by_key) == {"till 1", "till 2"}
    one, two = by_key["till 1"], by_key["till 2"]
    assert one["purchases"] == {"count": 1, "amount": "200.00", "currency": "CNY", "points": 200}
    assert two["purchases"] == {"count": 1, "amount": "50.50", "currency": "CNY", "points": 50.5}
    assert (one["refunds"]["count"], two["refunds"]["count"]) == (0, 1)
    assert (one["points_payments"]["points"], two["points_payments"]["points"]) == (40, 60)
    assert (one["reversals"]["points"], two["reversals"]["points"]) == (60, 0)  # till 1 reversed till 2's
    assert one["vouchers_used"] == two["vouchers_used"] == [{"reward_id": day, "name": "Coffee", "count": 1}]
    assert (one["holds_open"], two["holds_open"]) == (1, 0)


def test_the_days_either_side_of_midnight_hold_their_own_purchases(api, day):
    before = call(api, None, "marketing", "get", "/reports/stores/S1/days/2026-03-09", at(2026, 3, 12)).json
    after = call(api, None, "admin", "get", "/reports/stores/S1/days/2026-03-11", at(2026, 3, 12)).json
    assert before["purchases"]["amount"] == "100.00" and after["purchases"]["amount"] == "30.00"
    assert before["points_payments"]["count"] == after["points_payments"]["count"] == 0
    other = call(api, None, "marketing", "get", "/reports/stores/S2/days/2026-03-10", at(2026, 3, 12)).json
    assert other["purchases"]["amount"] == "70.00" and other["by_key"][0]["key_name"] == "till 9"


def test_a_pos_key_reads_only_its_own_store(api, day):
    assert api.get("pos", "/reports/stores/S2/days/2026-03-10").status_code == 403
    assert api.get("pos_other", "/reports/stores/S1/days/2026-03-10").status_code == 403
    assert api.get("app", "/reports/stores/S1/days/2026-03-10").status_code == 403


@pytest.mark.parametrize("bad", ["2026-3-10", "2026-02-30", "yesterday", "20260310"])
def test_a_date_that_is_not_a_date_is_422(api, bad):
    response = api.get("marketing", f"/reports/stores/S1/days/{bad}")
    assert response.status_code == 422 and "YYYY-MM-DD" in response.json["message"]


def test_an_empty_day_is_all_zeros(api):
    body = api.get("marketing", "/reports/stores/S9/days/2026-03-10").json
    assert body["purchases"] == {"count": 0, "amount": "0.00", "currency": "CNY", "points": 0}
    assert body["by_key"] == [] and body["vouchers_used"] == [] and body["holds_open"] == 0


def test_a_purchase_counts_with_its_promotion_points_and_a_refund_takes_them_back_pro_rata(api, client, till2):
    """The day's points are what each purchase's answer said it earned (base, tier and promotion
    lines) and what each refund's answer said it took back: 50 bonus points over 150.00 at S1."""
    def ok(response):
        assert response.status_code in (200, 201), response.json
        return response.json

    ok(call(api, client, "marketing", "post", "/promotions", at(2026, 3, 1), json={
        "name": "50 over 150 at S1", "status": "active", "starts_at": "2026-03-01T00:00:00Z",
        "scope": {"stores": ["S1"], "min_amount": "150.00"}, "effect": {"type": "bonus", "points": "50"}}))
    member = ok(call(api, client, "app", "post", "/members", at(2026, 3, 1), json={"name": "Li Lei"}))["id"]

    def buy(who, receipt, amount, when):
        return ok(call(api, client, who, "post", "/purchases", when,
                       json={"member_id": member, "receipt_no": receipt, "amount": amount}))

    first = buy("pos", "R1", "200.00", at(2026, 3, 10, 1))      # 200 base + 50 promotion
    second = buy(till2, "R2", "50.50", at(2026, 3, 10, 2))     # 50.5 base, under the minimum
    assert (first["points_earned"], second["points_earned"]) == (250, 50.5)
    refund = ok(call(api, client, till2, "post", f"/purchases/{first['purchase_id']}/refunds", at(2026, 3, 10, 3),
                     json={"refund_no": "F1", "amount": "100.00"}))
    assert refund["points_reversed"] == 125                     # half: 100 base + 25 promotion

    body = call(api, None, "marketing", "get", "/reports/stores/S1/days/2026-03-10", at(2026, 3, 10, 8)).json
    assert body["purchases"] == {"count": 2, "amount": "250.50", "currency": "CNY", "points": 300.5}
    assert body["refunds"] == {"count": 1, "amount": "100.00", "currency": "CNY", "points": 125}
    by_key = {line["key_name"]: line for line in body["by_key"]}
    assert (by_key["till 1"]["purchases"]["points"], by_key["till 2"]["purchases"]["points"]) == (250, 50.5)
    assert (by_key["till 1"]["refunds"]["points"], by_key["till 2"]["refunds"]["points"]) == (0, 125)
