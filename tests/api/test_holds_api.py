"""Points holds as a till uses them over HTTP: reserve, read, capture, release; held points in the
balance; the error codes; store confinement; and races for one balance."""
from datetime import timedelta
from decimal import Decimal

import pytest

from loyalty import clock
from loyalty.extensions import db
from loyalty.points import holds, jobs
from loyalty.points.models import Account, PointsHold
from loyalty.points.verify import broken_accounts
from tests.api.test_points_api import T0, buy, member_id, summary  # noqa: F401 - member_id is a fixture
from tests.service.test_concurrency import on_both_databases, outcomes, post, race, read, setup
from tests import factories


def place(api, member_id, points, hold_no="H1", role="pos", **extra):
    return api.post(role, "/points-holds", json={"member_id": member_id, "hold_no": hold_no,
                                                 "points": points, **extra})


@pytest.fixture
def rich(api, member_id):
    with clock.frozen_at(T0):
        buy(api, member_id, "500.00")
    return member_id


def test_a_hold_is_placed_read_captured_in_part_and_shown_in_the_points(api, rich):
    with clock.frozen_at(T0):
        created = place(api, rich, 200)
        assert created.status_code == 201, created.json
        body = created.json
        assert {"hold_id", "status", "points", "expires_at", "member"} <= set(body)
        assert (body["status"], body["points"], body["expires_at"]) == ("held", 200, "2026-03-10T02:15:00Z")
        assert (body["member"]["points"]["available"], body["member"]["points"]["held"]) == (300, 200)
        assert api.get("app", f"/members/{rich}").json["points"]["held"] == 200
        points = summary(api, rich)
        assert (points["available"], points["held"]) == (300, 200)

        got = api.get("pos", f"/points-holds/{body['hold_id']}").json
        assert got == {"hold_id": body["hold_id"], "hold_no": "H1", "store_id": "S1", "member_id": rich,
                       "status": "held", "points": 200, "captured_points": 0,
                       "expires_at": "2026-03-10T02:15:00Z", "payment_id": None}

        captured = api.post("pos", f"/points-holds/{body['hold_id']}/capture",
                            json={"payment_no": "PAY-1", "points": 150})
        assert captured.status_code == 201, captured.json
        assert (captured.json["points"], captured.json["money_value"]) == (150, {"amount": "1.50", "currency": "CNY"})
        assert captured.json["status"] == "completed"
        assert summary(api, rich)["available"] == 350 and summary(api, rich)["held"] == 0
        got = api.get("pos", f"/points-holds/{body['hold_id']}").json
        assert (got["status"], got["captured_points"], got["payment_id"]) == ("captured", 150,
                                                                               captured.json["payment_id"])
        reversed_ = api.post("pos", f"/points-payments/{captured.json['payment_id']}/reversal")
        assert reversed_.status_code == 201
        assert summary(api, rich)["available"] == 500


def test_release_and_the_hold_error_codes(api, rich):
    with clock.frozen_at(T0):
        hold_id = place(api, rich, 100).json["hold_id"]
        released = api.post("pos", f"/points-holds/{hold_id}/release")
        assert (released.status_code, released.json) == (200, {"hold_id": hold_id, "status": "released"})
        again = api.post("pos", f"/points-holds/{hold_id}/release")
        assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
        closed = api.post("pos", f"/points-holds/{hold_id}/capture", json={"payment_no": "P1"})
        assert (closed.status_code, closed.json["error"]) == (409, "hold_closed")
        assert closed.json["message"].startswith("Hold H1 is released")

        short = place(api, rich, 600, hold_no="H2")
        assert (short.status_code, short.json["error"]) == (409, "insufficient_points")
        late_id = place(api, rich, 100, hold_no="H3", ttl_seconds=60).json["hold_id"]
    with clock.frozen_at(T0 + timedelta(seconds=61)):
        expired = api.post("pos", f"/points-holds/{late_id}/capture", json={"payment_no": "P2"})
        assert (expired.status_code, expired.json["error"]) == (409, "hold_expired")
        assert api.get("pos", f"/points-holds/{late_id}").json["status"] == "expired"
        assert summary(api, rich)["available"] == 500


@pytest.mark.parametrize("body, field", [
    ({"points": 10, "ttl_seconds": 86_401}, "ttl_seconds"),
    ({"points": 10, "ttl_seconds": 0}, "ttl_seconds"),
    ({"points": -5}, "points"),
    ({"points": "ten"}, "points"),
])
def test_bad_holds_are_422_and_change_nothing(api, rich, body, field):
    with clock.frozen_at(T0):
        response = api.post("pos", "/points-holds", json={"member_id": rich, "hold_no": "H1", **body})
        assert response.status_code == 422, response.json
        assert field in response.json["errors"]
        assert summary(api, rich)["held"] == 0


def test_holds_are_for_pos_keys_of_their_own_store(api, rich):
    with clock.frozen_at(T0):
        assert place(api, rich, 10, role="app").status_code == 403
        assert place(api, rich, 10, role="marketing").status_code == 403
        assert place(api, rich, 10, store_id="S2").status_code == 403
        hold_id = place(api, rich, 10).json["hold_id"]
        assert api.get("pos_other", f"/points-holds/{hold_id}").status_code == 403
        assert api.post("pos_other", f"/points-holds/{hold_id}/release").status_code == 403
        assert api.post("pos_other", f"/points-holds/{hold_id}/capture",
                        json={"payment_no": "X"}).status_code == 403
        assert api.get("pos", "/points-holds/999999").status_code == 404
        assert summary(api, rich)["held"] == 10


def test_a_repeated_hold_number_answers_the_first_hold(api, rich):
    with clock.frozen_at(T0):
        first = place(api, rich, 100)
        again = place(api, rich, 100)
        assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
        assert again.json["hold_id"] == first.json["hold_id"]
        other = place(api, rich, 120)
        assert (other.status_code, other.json["error"]) == (409, "conflict")
        assert summary(api, rich)["held"] == 100


def test_the_openapi_document_describes_holds(api):
    paths = api.get("app", "/openapi.json").json["paths"]
    for path in ("/api/v1/points-holds", "/api/v1/points-holds/{hold_id}",
                 "/api/v1/points-holds/{hold_id}/capture", "/api/v1/points-holds/{hold_id}/release"):
        assert path in paths, path


# --- races -------------------------------------------------------------------------------------

@on_both_databases
def test_ten_holds_racing_for_a_balance_that_covers_three_get_exactly_three(database, app, headers):
    def build():
        member = factories.member()
        factories.purchase(member.id, "300")
        return member.id
    member_id = setup(app, build)
    results = race(app, [post("/points-holds", headers["pos"],
                              {"member_id": member_id, "hold_no": f"H{n}", "points": 100}) for n in range(10)])
    assert outcomes(results) == [(201, None)] * 3 + [(409, "insufficient_points")] * 7
    assert read(app, lambda: db.session.query(PointsHold).filter_by(member_id=member_id).count()) == 3
    assert read(app, broken_accounts) == []


@on_both_databases
def test_captures_releases_and_payments_racing_on_one_hold_settle_it_once(database, app, headers):
    def build():
        member = factories.member()
        factories.purchase(member.id, "300")
        return member.id
    member_id = setup(app, build)
    hold_id = race(app, [post("/points-holds", headers["pos"],
                              {"member_id": member_id, "hold_no": "H1", "points": 200})])[0].get_json()["hold_id"]
    requests = ([post(f"/points-holds/{hold_id}/capture", headers["pos"], {"payment_no": f"P{n}"}) for n in range(4)]
                + [post(f"/points-holds/{hold_id}/release", headers["pos"]) for _ in range(4)]
                + [post("/points-payments", headers["pos"], {"member_id": member_id, "payment_no": f"Q{n}",
                                                             "points": 100}) for n in range(4)])
    results = race(app, requests)
    captures = [r.status_code for r in results[:4]]
    releases = [r.status_code for r in results[4:8]]
    # Either one capture won (the other captures and every release are hold_closed) or the
    # release won (every capture is hold_closed, every release answers released).
    assert captures.count(201) + (1 if 200 in releases else 0) == 1, (captures, releases)
    assert all(r.status_code in (201, 409) for r in results[8:])
    assert read(app, broken_accounts) == []


def test_held_points_stay_in_the_points_outstanding(api, rich):
    with clock.frozen_at(T0):
        place(api, rich, 200)
        points = api.get("marketing", "/reports/overview").json["points"]
    assert (points["outstanding"], points["available"], points["held"]) == (500, 300, 200)


@on_both_databases
def test_the_job_and_writes_racing_over_expired_holds_release_each_once(database, app, headers):
    """Expired holds of six members, released at the same instant by the job (twice), by points
    payments on those members (their lock path releases due holds) and refused to tills capturing
    or releasing them: each hold's points come back once, and nothing deadlocks."""
    def build():
        member_ids = []
        with clock.frozen_at(clock.now() - timedelta(minutes=10)):
            for n in range(6):
                member = factories.member()
                factories.purchase(member.id, "300")
                holds.place_hold(member.id, "S1", f"H{n}", Decimal(100), ttl_seconds=60)
                member_ids.append(member.id)
        return member_ids, [row.id for row in db.session.query(PointsHold).order_by(PointsHold.id)]
    member_ids, hold_ids = setup(app, build)

    def job(client):
        with client.application.app_context():
            try:
                return jobs.release_holds(None)
            finally:
                db.session.remove()

    requests = ([job, job]
                + [post(f"/points-holds/{hold_id}/capture", headers["pos"], {"payment_no": f"C{n}"})
                   for n, hold_id in enumerate(hold_ids)]
                + [post(f"/points-holds/{hold_id}/release", headers["pos"]) for hold_id in hold_ids]
                + [post("/points-payments", headers["pos"], {"member_id": member_id, "payment_no": f"P{n}",
                                                            "points": 250}) for n, member_id in enumerate(member_ids)])
    results = race(app, requests)
    assert sum(result["holds_released"] for result in results[:2]) <= 6
    assert outcomes(results[2:14]) == [(409, "hold_expired")] * 12
    assert outcomes(results[14:]) == [(201, None)] * 6  # the held points came back first
    assert read(app, lambda: {row.status for row in db.session.query(PointsHold)}) == {"expired"}
    assert read(app, lambda: sorted(db.session.get(Account, m).available for m in member_ids)) == [50] * 6
    assert read(app, broken_accounts) == []


# --- a refusal is an answer: the same hold number is refused again -------------------------------

def test_a_hold_refused_by_its_number_is_refused_again_after_points_arrive(api, member_id):
    """A till told "not enough points" took cash: its retry of that hold must not reserve points."""
    body = {"member_id": member_id, "hold_no": "H1", "points": 500}
    with clock.frozen_at(T0):
        first = api.post("pos", "/points-holds", json=body)
        buy(api, member_id, "900.00")
        again = api.post("pos", "/points-holds", json=body)
        with_a_key = api.post("pos", "/points-holds", json=body, extra_headers={"Idempotency-Key": "hold-late"})
        other_points = api.post("pos", "/points-holds", json={**body, "points": 400})
        another_key = api.post("pos", "/points-holds", json=body, extra_headers={"Idempotency-Key": "k2"})
        points = summary(api, member_id)

    assert (first.status_code, first.json["error"]) == (409, "insufficient_points")
    assert (again.status_code, again.json) == (409, first.json)
    assert (with_a_key.status_code, with_a_key.json) == (409, first.json)
    assert (other_points.status_code, other_points.json["error"]) == (409, "conflict")
    assert "refused" in other_points.json["message"]
    assert (another_key.status_code, another_key.json) == (409, first.json)
    assert (points["available"], points["held"]) == (900, 0)


def test_a_hold_refused_under_an_idempotency_key_is_remembered_by_its_number_too(api, member_id):
    body = {"member_id": member_id, "hold_no": "H1", "points": 500}
    with clock.frozen_at(T0):
        first = api.post("pos", "/points-holds", json=body, extra_headers={"Idempotency-Key": "hold-1"})
        buy(api, member_id, "900.00")
        replayed = api.post("pos", "/points-holds", json=body, extra_headers={"Idempotency-Key": "hold-1"})
        without_key = api.post("pos", "/points-holds", json=body)
        placed = api.post("pos", "/points-holds", json={**body, "hold_no": "H2"})

    assert (first.status_code, first.json["error"]) == (409, "insufficient_points")
    assert (replayed.status_code, replayed.json) == (409, first.json)
    assert (without_key.status_code, without_key.json) == (409, first.json)
    assert placed.status_code == 201  # a new number is a new question


@on_both_databases
def test_a_merge_racing_captures_and_releases_of_the_other_members_hold_settles_it_once_on_the_survivor(
        database, app, headers):
    def build():
        keep, gone = factories.member(), factories.member()
        factories.purchase(keep.id, "300")
        factories.purchase(gone.id, "300")
        return keep.id, gone.id
    keep, gone = setup(app, build)
    hold_id = race(app, [post("/points-holds", headers["pos"],
                              {"member_id": gone, "hold_no": "H1", "points": 200})])[0].get_json()["hold_id"]
    requests = ([post(f"/members/{keep}/merge", headers["admin"], {"from_member_id": gone})]
                + [post(f"/points-holds/{hold_id}/capture", headers["pos"], {"payment_no": f"P{n}"}) for n in range(3)]
                + [post(f"/points-holds/{hold_id}/release", headers["pos"]) for _ in range(3)])
    results = race(app, requests)

    assert results[0].status_code == 200, results[0].get_json()
    captures = [r.status_code for r in results[1:4]]
    releases = [r.status_code for r in results[4:]]
    assert captures.count(201) + (1 if 200 in releases else 0) == 1, (captures, releases)
    assert read(app, lambda: db.session.get(PointsHold, hold_id).member_id) == keep
    assert read(app, lambda: (db.session.get(Account, gone).held, db.session.get(Account, keep).held)) == (0, 0)
    assert read(app, broken_accounts) == []
