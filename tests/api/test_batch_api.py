"""POST /purchases/batch as an offline till uses it: per-item answers in order, shape errors of one
item rejecting only that item, 501 refused whole, store confinement, and races with single purchases."""
from datetime import timedelta

import pytest

from loyalty import clock
from loyalty.extensions import db
from loyalty.points.models import Account
from loyalty.points.verify import broken_accounts
from tests import factories
from tests.api.test_points_api import T0, member_id, summary  # noqa: F401 - member_id is a fixture
from tests.service.test_concurrency import on_both_databases, outcomes, post, race, read, setup

WHEN = "2026-03-09T10:00:00Z"


def upload(api, purchases, role="pos", **extra):
    with clock.frozen_at(T0):
        return api.post(role, "/purchases/batch", json={"purchases": purchases, **extra})


def test_results_come_in_the_order_sent_with_bad_items_rejected(api, member_id):
    response = upload(api, [
        {"receipt_no": "R1", "member_id": member_id, "amount": "100.00", "occurred_at": WHEN},
        {"receipt_no": "R2", "member_id": member_id, "amount": "abc", "occurred_at": WHEN},
        {"receipt_no": "R3", "member_id": member_id, "amount": "10.00"},
        "not an object",
        {"receipt_no": "R5", "card": "no-such-card", "amount": "10.00", "occurred_at": WHEN},
        {"receipt_no": "R6", "member_id": member_id, "amount": "５", "occurred_at": WHEN},
        {"receipt_no": "R7", "member_id": member_id, "amount": "20.00", "occurred_at": WHEN},
    ])
    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert [(r["receipt_no"], r["status"]) for r in results] == [
        ("R1", "credited"), ("R2", "rejected"), ("R3", "rejected"), (None, "rejected"), ("R5", "rejected"),
        ("R6", "rejected"), ("R7", "credited")]
    assert results[0]["points_earned"] == 100 and isinstance(results[0]["purchase_id"], int)
    assert results[1]["error"]["error"] == "validation_error" and "amount" in results[1]["error"]["message"]
    assert "occurred_at" in results[2]["error"]["message"]
    assert results[4]["error"]["error"] == "not_found"
    assert set(results[1]) == {"receipt_no", "status", "error"}
    with clock.frozen_at(T0):
        assert summary(api, member_id)["available"] == 120


def test_a_batch_replayed_and_single_purchases_of_the_same_receipts(api, member_id):
    purchases = [{"receipt_no": f"R{n}", "member_id": member_id, "amount": "10.00", "occurred_at": WHEN}
                 for n in range(3)]
    first = upload(api, purchases).json["results"]
    again = upload(api, purchases).json["results"]
    assert [r["status"] for r in again] == ["replayed"] * 3
    assert [r["purchase_id"] for r in again] == [r["purchase_id"] for r in first]
    with clock.frozen_at(T0):
        single = api.post("pos", "/purchases", json={"receipt_no": "R1", "member_id": member_id, "amount": "10.00"})
        assert single.status_code == 201 and single.headers.get("Idempotent-Replayed") == "true"
        assert summary(api, member_id)["available"] == 30


@pytest.mark.parametrize("count, status", [(0, 422), (500, 200), (501, 422)])
def test_one_to_five_hundred_purchases_per_batch(api, member_id, count, status):
    purchases = [{"receipt_no": f"R{n}", "member_id": member_id, "amount": "1.00", "occurred_at": WHEN}
                 for n in range(count)]
    response = upload(api, purchases)
    assert response.status_code == status, response.json
    with clock.frozen_at(T0):
        assert summary(api, member_id)["available"] == (500 if status == 200 else 0)


def test_batches_are_for_pos_keys_of_their_own_store(api, member_id):
    purchases = [{"receipt_no": "R1", "member_id": member_id, "amount": "1.00", "occurred_at": WHEN}]
    assert upload(api, purchases, role="app").status_code == 403
    assert upload(api, purchases, store_id="S2").status_code == 403
    assert upload(api, {"receipt_no": "R1"}).status_code == 422  # not a list


def test_the_openapi_document_describes_the_batch(api):
    operation = api.get("app", "/openapi.json").json["paths"]["/api/v1/purchases/batch"]["post"]
    assert "200" in operation["responses"]


@on_both_databases
def test_a_batch_racing_single_purchases_of_the_same_receipts_credits_each_once(database, app, headers):
    member_ids = setup(app, lambda: [factories.member().id for _ in range(4)])
    now = clock.now()
    when = (now - timedelta(hours=1)).isoformat()
    purchases = [{"receipt_no": f"R{n}", "member_id": member_ids[n % 4], "amount": "10.00", "occurred_at": when}
                 for n in range(40)]
    singles = [post("/purchases", headers["pos"], {"receipt_no": f"R{n}", "member_id": member_ids[n % 4],
                                                   "amount": "10.00"}) for n in range(0, 40, 3)]
    batches = [post("/purchases/batch", headers["pos"], {"purchases": purchases}) for _ in range(3)]
    results = race(app, batches + singles)
    assert outcomes(results[:3]) == [(200, None)] * 3
    for result in results[:3]:
        assert {r["status"] for r in result.get_json()["results"]} <= {"credited", "replayed"}
    assert all(r.status_code == 201 for r in results[3:])
    assert read(app, broken_accounts) == []
    assert read(app, lambda: sorted(db.session.get(Account, m).available for m in member_ids)) == [100] * 4
