"""Races: real threads send the same (or competing) requests at the same instant.

Each thread has its own test client, so each request runs in its own app context with its own
database session and connection, as it would in a gunicorn worker. A barrier makes the threads
start together. Every scenario runs on PostgreSQL (row locks, concurrent writers; marked
`postgres_only`) and, as a separate variant, on SQLite, where BEGIN IMMEDIATE serialises writers;
the exactly-once answers must be the same on both. After each scenario the ledger's invariants
(loyalty.points.verify) must hold for every account.
"""
import os
import queue
import threading
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.extensions import db
from loyalty.points import service as points
from loyalty.points.models import Account, Activity, Entry, PointsPayment, Purchase, Refund
from loyalty.points.verify import broken_accounts
from tests import factories

ON_POSTGRES = (os.environ.get("LOYALTY_TEST_DATABASE_URL") or "").startswith("postgresql")

# Each race once on PostgreSQL and once on SQLite; the run's database decides which one runs.
on_both_databases = pytest.mark.parametrize("database", [
    pytest.param("postgresql", marks=pytest.mark.postgres_only),
    pytest.param("sqlite", marks=pytest.mark.skipif(
        ON_POSTGRES, reason="the SQLite variant; this run is on PostgreSQL")),
])

POOL = 12  # threads; stays under SQLAlchemy's default pool of 5 + 10 connections
API = "/api/v1"


# --- helpers ------------------------------------------------------------------------------------

def race(app, requests, threads=POOL):
    """Run `requests` (functions of a test client) from up to `threads` threads that start
    together; return their results in order. An exception escaping a request is its result."""
    threads = max(1, min(threads, len(requests)))
    todo = queue.SimpleQueue()
    for number, request in enumerate(requests):
        todo.put((number, request))
    results = [None] * len(requests)
    barrier = threading.Barrier(threads)
    failures = []

    def worker():
        client = app.test_client()
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError as error:
            failures.append(error)
            return
        while True:
            try:
                number, request = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[number] = request(client)
            except Exception as error:  # noqa: BLE001 - reported as this request's result
                results[number] = error

    workers = [threading.Thread(target=worker, name=f"race-{n}") for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in workers), "a racing request hung"
    assert not failures, failures
    return results


def post(path, headers, json=None, extra_headers=None):
    """A request for `race`: POST to the API as the role whose headers are given."""
    all_headers = {**headers, **(extra_headers or {})}
    return lambda client: client.post(API + path, headers=all_headers, json=json)


def outcome(result):
    """(status, machine error code or None) of a response; the exception's name if one escaped."""
    if isinstance(result, Exception):
        return (type(result).__name__, str(result)[:200])
    body = result.get_json(silent=True) or {}
    return (result.status_code, body.get("error") if result.status_code >= 400 else None)


def outcomes(results):
    return sorted((outcome(r) for r in results), key=repr)


def setup(app, build):
    """Build data through the services in an app context of its own; return what `build` returns."""
    with app.app_context():
        try:
            return build()
        finally:
            db.session.remove()


def read(app, query):
    with app.app_context():
        try:
            return query()
        finally:
            db.session.remove()


def account(app, member_id):
    def query():
        row = db.session.get(Account, member_id)
        return {"available": row.available, "pending": row.pending, "debt": row.debt,
                "lifetime_earned": row.lifetime_earned}
    return read(app, query)


def count(app, model, *conditions):
    return read(app, lambda: db.session.scalar(
        sa.select(sa.func.count()).select_from(model).where(*conditions)))


def entries(app, member_id, type_=None):
    conditions = [Entry.member_id == member_id] + ([Entry.type == type_] if type_ else [])
    return read(app, lambda: [(e.type, e.points) for e in db.session.scalars(
        sa.select(Entry).where(*conditions).order_by(Entry.id))])


def assert_ledger_exact(app):
    """DESIGN.md's invariants for every account, plus: the entries add up to the balance."""
    def query():
        totals = db.session.execute(
            sa.select(Account.member_id, Account.available, Account.pending,
                      sa.select(sa.func.coalesce(sa.func.sum(Entry.points), 0))
                      .where(Entry.member_id == Account.member_id).scalar_subquery())
        ).all()
        return broken_accounts(), totals
    broken, totals = read(app, query)
    assert broken == []
    for member_id, available, pending, entry_total in totals:
        assert entry_total == available + pending, member_id


def member_with_points(points, store_id="S1"):
    """A new member holding exactly `points` available points (from one purchase)."""
    member = factories.member()
    factories.purchase(member.id, points, store_id=store_id)
    return member.id


def D(value):
    return Decimal(str(value))


# --- the races ----------------------------------------------------------------------------------

@on_both_databases
def test_two_tills_paying_with_the_same_last_10_points(database, app, headers):
    """DESIGN.md: two tills redeeming the last 10 points at the same instant: one wins, one gets
    insufficient_points. Several rounds, each with a new member, to give a race a chance."""
    for round_ in range(6):
        member_id = setup(app, lambda: member_with_points(10))
        results = race(app, [
            post("/points-payments", headers["pos"],
                 {"member_id": member_id, "payment_no": f"PAY-{round_}-{till}", "points": 10})
            for till in ("A", "B")
        ])
        assert outcomes(results) == [(201, None), (409, "insufficient_points")], round_
        balance = account(app, member_id)
        assert balance["available"] == 0 and balance["debt"] == 0
        assert count(app, PointsPayment, PointsPayment.member_id == member_id) == 1
        assert [points for _, points in entries(app, member_id, "payment")] == [D(-10)]
    assert_ledger_exact(app)


@on_both_databases
def test_many_tills_competing_for_one_balance_never_overdraw(database, app, headers):
    """Twelve payments of 30 against 100 points: exactly three succeed, the rest are refused."""
    member_id = setup(app, lambda: member_with_points(100))
    results = race(app, [
        post("/points-payments", headers["pos"],
             {"member_id": member_id, "payment_no": f"PAY-{n}", "points": 30})
        for n in range(12)
    ])
    assert outcomes(results) == [(201, None)] * 3 + [(409, "insufficient_points")] * 9
    assert account(app, member_id)["available"] == D(10)
    assert_ledger_exact(app)


@on_both_databases
def test_copies_of_one_payment_racing_the_points_that_would_pay_it_all_get_one_answer(database, app, headers):
    """Eight copies of one payment (some with Idempotency-Keys of their own, some without) race
    a credit that would make it affordable: either every copy is refused or every copy is the one
    payment, never a refusal for the till and a charge for the member."""
    for round_ in range(4):
        member_id = setup(app, lambda: member_with_points(10))
        body = {"member_id": member_id, "payment_no": f"PAY-{round_}", "points": 50}
        copies = [post("/points-payments", headers["pos"], body,
                       {"Idempotency-Key": f"k-{round_}-{n}"} if n % 2 else None) for n in range(8)]
        credit = post(f"/members/{member_id}/adjustments", headers["admin"], {"points": 100, "reason": "gift"})
        results = race(app, copies + [credit])
        answers = outcomes(results[:8])
        assert answers in ([(201, None)] * 8, [(409, "insufficient_points")] * 8), (round_, answers)
        assert results[8].status_code == 201
        if answers[0][0] == 409:
            assert len({r.get_data() for r in results[:8]}) == 1  # the same body, word for word
            assert account(app, member_id)["available"] == D(110)
            assert count(app, PointsPayment, PointsPayment.member_id == member_id) == 0
        else:
            assert account(app, member_id)["available"] == D(60)
            assert count(app, PointsPayment, PointsPayment.member_id == member_id) == 1
        [again] = race(app, [post("/points-payments", headers["pos"], body)])
        assert outcome(again) == answers[0]
    assert_ledger_exact(app)


@on_both_databases
def test_fifty_retries_of_one_purchase_credit_it_once(database, app, headers):
    member_id = setup(app, lambda: factories.member().id)
    body = {"member_id": member_id, "receipt_no": "RETRY-1", "amount": "123.45"}
    results = race(app, [post("/purchases", headers["pos"], body) for _ in range(50)], threads=16)
    assert outcomes(results) == [(201, None)] * 50
    assert {r.get_json()["purchase_id"] for r in results} == {results[0].get_json()["purchase_id"]}
    assert {r.get_json()["points_earned"] for r in results} == {D("123.45")}
    first_answers = [r for r in results if r.headers.get("Idempotent-Replayed") != "true"]
    assert len(first_answers) == 1, "every retry but the first must say it is a replay"
    assert count(app, Purchase, Purchase.receipt_no == "RETRY-1") == 1
    assert entries(app, member_id) == [("earn_purchase", D("123.45"))]
    assert account(app, member_id)["available"] == D("123.45")
    assert_ledger_exact(app)


@on_both_databases
def test_one_receipt_sent_for_two_members_at_once_credits_one(database, app, headers):
    """The same store + receipt for two different members (a mis-scan at a till and its retry):
    one is credited, the other is refused with a 409 the till can show; nobody earns twice."""
    first, second = setup(app, lambda: (factories.member().id, factories.member().id))
    for round_ in range(4):
        receipt = f"SHARED-{round_}"
        results = race(app, [
            post("/purchases", headers["pos"], {"member_id": m, "receipt_no": receipt, "amount": "50.00"})
            for m in (first, second)
        ])
        assert outcomes(results) == [(201, None), (409, "conflict")], round_
        assert count(app, Purchase, Purchase.receipt_no == receipt) == 1
    assert account(app, first)["available"] + account(app, second)["available"] == D(200)
    assert_ledger_exact(app)


@on_both_databases
def test_idempotency_key_twins_for_an_adjustment_apply_once(database, app, headers):
    member_id = setup(app, lambda: member_with_points(100))
    for round_, points in enumerate((25, -40, Decimal("0.5"))):
        twins = [post(f"/members/{member_id}/adjustments", headers["admin"],
                      {"points": str(points), "reason": f"goodwill {round_}"},
                      extra_headers={"Idempotency-Key": f"adjust-{round_}"})
                 for _ in range(2)]
        results = race(app, twins)
        assert outcomes(results) == [(201, None)] * 2, round_
        assert results[0].get_data() == results[1].get_data(), "a replay answers the first body"
        assert sorted(r.headers.get("Idempotent-Replayed", "") for r in results) == ["", "true"]
    assert [points for _, points in entries(app, member_id, "adjust")] == [D(25), D(-40), D("0.5")]
    assert account(app, member_id)["available"] == D("85.5")
    assert_ledger_exact(app)


@on_both_databases
def test_many_idempotency_key_twins_and_a_different_body(database, app, headers):
    """Eight copies of one keyed payment and one request reusing the key with another body:
    the payment is taken once, every copy gets its answer, the odd one idempotency_conflict."""
    member_id = setup(app, lambda: member_with_points(100))
    key = {"Idempotency-Key": "pay-once"}
    same = post("/points-payments", headers["pos"],
                {"member_id": member_id, "payment_no": "K-1", "points": 60}, key)
    other = post("/points-payments", headers["pos"],
                 {"member_id": member_id, "payment_no": "K-2", "points": 60}, key)
    results = race(app, [same] * 8 + [other])
    # The odd request either loses (idempotency_conflict) or wins the key, making every copy of
    # `same` the conflict; in both cases exactly one payment is taken.
    statuses = outcomes(results)
    assert statuses in ([(201, None)] * 8 + [(409, "idempotency_conflict")],
                        [(201, None)] + [(409, "idempotency_conflict")] * 8), statuses
    ok = [r for r in results if r.status_code == 201]
    assert len({r.get_data() for r in ok}) == 1
    assert count(app, PointsPayment, PointsPayment.member_id == member_id) == 1
    assert account(app, member_id)["available"] == D(40)
    assert_ledger_exact(app)


@on_both_databases
@pytest.mark.parametrize("spent_first", [False, True], ids=["unspent", "spent"])
def test_concurrent_refunds_never_exceed_the_purchase(database, spent_first, app, headers):
    """Five refunds of 30.00 of a 100.00 purchase, each with its own refund number: three fit,
    two are refused; the points clawed back never exceed what the purchase earned (and, when
    the points were spent, the rest becomes debt)."""
    def build():
        member = factories.member()
        purchase = factories.purchase(member.id, 100).record
        if spent_first:
            points.pay_with_points(member.id, "S1", "SPEND-1", D(95))
        return member.id, purchase.id
    member_id, purchase_id = setup(app, build)
    results = race(app, [
        post(f"/purchases/{purchase_id}/refunds", headers["pos"], {"refund_no": f"RF-{n}", "amount": "30.00"})
        for n in range(5)
    ])
    assert outcomes(results) == [(201, None)] * 3 + [(422, "validation_error")] * 2
    assert sorted(r.get_json()["points_reversed"] for r in results if r.status_code == 201) == [D(30)] * 3
    purchase = read(app, lambda: db.session.get(Purchase, purchase_id))
    assert (purchase.refunded_amount, purchase.points_reversed) == (D(90), D(90))
    assert count(app, Refund, Refund.purchase_id == purchase_id) == 3
    balance = account(app, member_id)
    if spent_first:  # 5 points were left: they go first, 85 become debt
        assert (balance["available"], balance["debt"]) == (D(-85), D(85))
    else:
        assert (balance["available"], balance["debt"]) == (D(10), D(0))
    assert balance["lifetime_earned"] == D(10)
    assert_ledger_exact(app)


@on_both_databases
def test_concurrent_full_refunds_reverse_the_points_once(database, app, headers):
    """Two tills refunding the whole purchase with different refund numbers: one refund only."""
    def build():
        member = factories.member()
        return member.id, factories.purchase(member.id, "88.88").record.id
    member_id, purchase_id = setup(app, build)
    results = race(app, [
        post(f"/purchases/{purchase_id}/refunds", headers["pos"], {"refund_no": f"FULL-{n}", "amount": "88.88"})
        for n in range(2)
    ])
    assert outcomes(results) == [(201, None), (422, "validation_error")]
    assert account(app, member_id)["available"] == 0
    assert [points for _, points in entries(app, member_id, "reverse")] == [D("-88.88")]
    assert_ledger_exact(app)


@on_both_databases
def test_concurrent_sign_ins_on_one_day_are_capped_at_one_award(database, app, headers):
    member_id = setup(app, lambda: factories.member(now=datetime(2026, 3, 1, tzinfo=timezone.utc)).id)
    noon_in_shanghai = datetime(2026, 3, 10, 4, 0, tzinfo=timezone.utc)
    with clock.frozen_at(noon_in_shanghai):
        results = race(app, [
            post(f"/members/{member_id}/activities", headers["app"], {"type": "sign_in", "event_id": f"ev-{n}"})
            for n in range(10)
        ])
    assert outcomes(results) == [(201, None)] * 10
    awarded = sorted((r.get_json()["points_awarded"], r.get_json()["capped"]) for r in results)
    assert awarded == [(D(0), True)] * 9 + [(D("0.5"), False)]
    assert count(app, Activity, Activity.member_id == member_id) == 10
    assert entries(app, member_id) == [("earn_activity", D("0.5"))]
    assert account(app, member_id)["available"] == D("0.5")
    assert_ledger_exact(app)


@on_both_databases
def test_concurrent_retries_of_one_activity_award_once(database, app, headers):
    """The same share event sent eight times at once: one award, seven replays of it."""
    member_id = setup(app, lambda: factories.member(now=datetime(2026, 3, 1, tzinfo=timezone.utc)).id)
    with clock.frozen_at(datetime(2026, 3, 10, 4, 0, tzinfo=timezone.utc)):
        results = race(app, [
            post(f"/members/{member_id}/activities", headers["app"], {"type": "share", "event_id": "same"})
            for _ in range(8)
        ])
    assert outcomes(results) == [(201, None)] * 8
    assert {(r.get_json()["points_awarded"], r.get_json()["capped"]) for r in results} == {(D("0.5"), False)}
    assert entries(app, member_id) == [("earn_activity", D("0.5"))]
    assert_ledger_exact(app)


@on_both_databases
def test_concurrent_reversals_of_one_payment_restore_once(database, app, headers):
    def build():
        member_id = member_with_points(100)
        payment = points.pay_with_points(member_id, "S1", "REV-1", D(70)).record
        return member_id, payment.id
    member_id, payment_id = setup(app, build)
    results = race(app, [post(f"/points-payments/{payment_id}/reversal", headers["pos"]) for _ in range(6)])
    assert outcomes(results) == [(201, None)] * 6
    assert [points for _, points in entries(app, member_id, "reverse")] == [D(70)]
    assert account(app, member_id)["available"] == D(100)
    assert_ledger_exact(app)


@on_both_databases
def test_a_storm_of_mixed_writes_on_one_member_keeps_the_ledger_exact(database, app, headers):
    """Purchases, refunds, payments, reversals, activities and adjustments on one member, all at
    once: every request gets a deliberate answer (no 5xx, no escaped exception), payments never
    overdraw, and the ledger adds up."""
    def build():
        member_id = member_with_points(50)
        purchase = factories.purchase(member_id, 200).record
        payment = points.pay_with_points(member_id, "S1", "STORM-P0", D(40)).record
        return member_id, purchase.id, payment.id
    member_id, purchase_id, payment_id = setup(app, build)
    pos, app_, admin = headers["pos"], headers["app"], headers["admin"]
    requests = []
    for n in range(6):
        requests += [
            post("/purchases", pos, {"member_id": member_id, "receipt_no": f"STORM-{n}", "amount": "10.00"}),
            post("/points-payments", pos, {"member_id": member_id, "payment_no": f"STORM-P{n + 1}", "points": 35}),
            post(f"/purchases/{purchase_id}/refunds", pos, {"refund_no": f"STORM-R{n}", "amount": "45.00"}),
            post(f"/members/{member_id}/activities", app_, {"type": "share", "event_id": f"storm-{n}"}),
            post(f"/members/{member_id}/adjustments", admin, {"points": -7 if n % 2 else 3, "reason": "storm"}),
            post(f"/points-payments/{payment_id}/reversal", pos),
        ]
    results = race(app, requests)
    for result in results:
        assert outcome(result) in ((201, None), (409, "insufficient_points"), (422, "validation_error")), \
            outcome(result)
    refunds = [r for r in results if r.status_code == 422]
    assert len(refunds) == 2  # four refunds of 45.00 fit into 200.00, the other two do not
    assert account(app, member_id)["pending"] == 0
    # No payment was taken against a balance that could not cover it: replaying the entries in
    # order, the available balance is never below zero right after a payment.
    for type_, balance_after in read(app, lambda: db.session.execute(
            sa.select(Entry.type, Entry.balance_after).where(Entry.member_id == member_id)
            .order_by(Entry.id)).all()):
        if type_ == "payment":
            assert balance_after >= 0
    assert_ledger_exact(app)


@on_both_databases
def test_purchases_crossing_a_tier_together_upgrade_once(app, headers, database):
    """Ten tills credit 400.00 each for one member at once: together they cross silver (3000.00)
    and gold is far away. One of them upgrades; the others see silver; history says so once."""
    from loyalty.tiers.models import TierChange
    from loyalty.members.models import Member

    member_id = setup(app, lambda: factories.member().id)
    requests = [post("/purchases", headers["pos"], {"member_id": member_id, "receipt_no": f"T{n}",
                                                     "amount": "400.00"}) for n in range(10)]
    results = race(app, requests)

    assert outcomes(results) == [(201, None)] * 10
    assert read(app, lambda: db.session.get(Member, member_id).tier_code) == "silver"
    changes = read(app, lambda: [(c.from_code, c.to_code) for c in db.session.scalars(
        sa.select(TierChange).where(TierChange.member_id == member_id))])
    assert changes == [("ordinary", "silver")]
    # Those credited after the upgrade earned at silver's 1.2: 400 * 1.2 = 480.
    earned = sorted(read(app, lambda: [p.points_earned for p in db.session.scalars(
        sa.select(Purchase).where(Purchase.member_id == member_id))]))
    assert earned == [D("400.00")] * 8 + [D("480.00")] * 2
    assert_ledger_exact(app)
