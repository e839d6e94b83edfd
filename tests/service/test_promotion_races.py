"""A promotion's budget under 20 tills at once (real threads; see tests/service/test_concurrency.py):
the budget is never exceeded, the purchase that reaches it gets what is left, later ones nothing,
and the ledger stays exact."""
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.errors import Conflict

from loyalty.extensions import db
from loyalty.points import batch
from loyalty.points import service as points
from loyalty.promotions import service as promotions
from loyalty.promotions.models import Promotion, PromotionGrant
from tests import factories
from tests.service.test_concurrency import (assert_ledger_exact, on_both_databases, outcomes, post, race,
                                            read, setup)

D = Decimal


def budgeted(points, budget, **fields):
    return promotions.create_promotion({
        "name": "Budgeted bonus", "status": "active", "starts_at": datetime(2020, 1, 1, tzinfo=timezone.utc),
        "effect": {"type": "bonus", "points": D(points)}, "limits": {"budget_points": D(budget)}, **fields},
        actor="test").id


@on_both_databases
def test_twenty_tills_at_once_never_exceed_a_promotions_budget(database, app, headers):
    def build():
        return budgeted("30", "100"), [factories.member().id for _ in range(20)]
    promotion_id, members = setup(app, build)

    results = race(app, [post("/purchases", headers["pos"], {"member_id": m, "receipt_no": f"R{n}",
                                                              "amount": "10.00"})
                         for n, m in enumerate(members)], threads=20)

    assert outcomes(results) == [(201, None)] * 20
    bonuses = sorted((D(str(r.get_json()["points_earned"])) - D("10") for r in results), reverse=True)
    assert bonuses == [D("30.00")] * 3 + [D("10.00")] + [D("0.00")] * 16
    used, granted = read(app, lambda: (
        db.session.scalar(sa.select(Promotion.budget_used).where(Promotion.id == promotion_id)),
        db.session.scalar(sa.select(sa.func.sum(PromotionGrant.points)))))
    assert used == granted == D("100.00")
    assert_ledger_exact(app)


@on_both_databases
def test_one_members_tills_at_once_respect_a_per_member_limit(database, app, headers):
    def build():
        promotion_id = promotions.create_promotion({
            "name": "Once a day", "status": "active", "starts_at": datetime(2020, 1, 1, tzinfo=timezone.utc),
            "effect": {"type": "bonus", "points": D("50")}, "limits": {"per_member": 1, "per_member_period": "day"}},
            actor="test").id
        return promotion_id, factories.member().id
    promotion_id, member_id = setup(app, build)

    results = race(app, [post("/purchases", headers["pos"], {"member_id": member_id, "receipt_no": f"R{n}",
                                                              "amount": "10.00"}) for n in range(12)])

    assert outcomes(results) == [(201, None)] * 12
    assert sorted(r.get_json()["points_earned"] for r in results) == [10] * 11 + [60]
    assert_ledger_exact(app)


@pytest.mark.postgres_only
def test_one_receipt_sent_alone_and_in_a_batch_for_two_members_is_a_conflict_not_a_deadlock(app, monkeypatch):
    """Every writer takes its locks in one order: the members' accounts, the purchase's receipt, then
    the budgeted promotions' rows (promotions/service.py). Here a batch has inserted receipt R1 for one
    member and is held before it locks the budget; a single purchase of R1 for another member, which
    the promotion would award, must then wait on the receipt, not hold the budget the batch needs
    next (that order deadlocked: PostgreSQL aborted one of them). The batch credits; the single
    purchase is told the receipt is taken."""
    promotion_id, (alone, batched) = setup(app, lambda: (
        budgeted("30", "100"), [factories.member().id for _ in range(2)]))
    inserted, go = threading.Event(), threading.Event()
    real_insert = batch._insert_purchases

    def insert_then_wait(*args, **kwargs):
        rows = real_insert(*args, **kwargs)
        inserted.set()
        go.wait(timeout=30)
        return rows

    monkeypatch.setattr(batch, "_insert_purchases", insert_then_wait)
    results = {}

    def run(name, call):
        with app.app_context():
            try:
                results[name] = call()
            except Exception as error:  # noqa: BLE001 - the test looks at it
                results[name] = error
            finally:
                db.session.remove()

    batch_thread = threading.Thread(target=run, args=("batch", lambda: batch.credit_batch("S1", [
        {"receipt_no": "R1", "member_id": batched, "amount": D("10.00"), "occurred_at": clock.now()}])))
    single_thread = threading.Thread(target=run, args=("single", lambda: points.credit_purchase(
        alone, "S1", "R1", D("10.00"))))
    batch_thread.start()
    assert inserted.wait(timeout=30)
    single_thread.start()
    time.sleep(0.5)  # the single purchase reaches its receipt (and, in the old order, the budget) first
    go.set()
    batch_thread.join(timeout=60)
    single_thread.join(timeout=60)

    [credited] = results["batch"]
    assert credited["status"] == "credited" and credited["points_earned"] == D("40.00")
    assert isinstance(results["single"], Conflict), results["single"]
    used = read(app, lambda: db.session.scalar(sa.select(Promotion.budget_used).where(Promotion.id == promotion_id)))
    assert used == D("30.00")
    assert_ledger_exact(app)
