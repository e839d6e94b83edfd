"""Rewards under races (issue #4): real threads send competing requests at the same instant, each
with its own test client, session and connection (see tests/service/test_concurrency.py).

Stock is taken by a conditional UPDATE, the member's account is locked before any check, and a
voucher is used by a conditional UPDATE: whatever the interleaving, no stock below zero, no points
below zero, no voucher used twice. Each scenario runs on PostgreSQL (`postgres_only`) and, as a
separate variant, on SQLite; the ledger's invariants hold after each one."""
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from loyalty.extensions import db
from loyalty.rewards import service as rewards
from loyalty.rewards.models import Redemption, Reward, Voucher
from tests.service.test_concurrency import (API, D, account, assert_ledger_exact, count,
                                            entries, member_with_points, on_both_databases, outcome,
                                            outcomes, post, race, read, setup)



# --- helpers ------------------------------------------------------------------------------------

def new_reward(**fields):
    """A reward through the service; its id."""
    fields = {"name": "Mug", "kind": "goods", "points_cost": D("100.00"), "voucher_valid_days": 30, **fields}
    return rewards.create_reward(fields, actor="test").id


def redeem_request(headers, member_id, reward_id, quantity=1, key=None):
    """A request for `race`: the member's app redeems `quantity` units (with an Idempotency-Key if given)."""
    return post(f"/members/{member_id}/redemptions", headers["app"],
                {"reward_id": reward_id, "quantity": quantity},
                extra_headers={"Idempotency-Key": key} if key else None)


def use_request(role_headers, code):
    """A request for `race`: a till (the store of its key) accepts the voucher."""
    return post(f"/vouchers/{code}/use", role_headers, {})


def reward_stock(app, reward_id):
    return read(app, lambda: db.session.scalar(sa.select(Reward.stock).where(Reward.id == reward_id)))


def voucher_row(app, code):
    """(status, store that used it, whether it has a use time) as stored."""
    def query():
        voucher = db.session.scalar(sa.select(Voucher).where(Voucher.code == code))
        return voucher.status, voucher.used_store_id, voucher.used_at is not None
    return read(app, query)


def redemption_with_vouchers(member_points, quantity=1, **reward_fields):
    """(member id, reward id, redemption id, voucher codes), built through the services."""
    member_id = member_with_points(member_points)
    reward_id = new_reward(**reward_fields)
    redemption = rewards.redeem(member_id, reward_id, quantity).record
    return member_id, reward_id, redemption.id, [v.code for v in redemption.vouchers]


# --- stock --------------------------------------------------------------------------------------

@on_both_databases
def test_twenty_members_redeeming_the_last_five_units_at_once(database, app, headers):
    """A reward with stock 5 and 20 concurrent redemptions: exactly 5 succeed, stock is 0."""
    def build():
        return new_reward(stock=5), [member_with_points(100) for _ in range(20)]
    reward_id, members = setup(app, build)

    results = race(app, [redeem_request(headers, m, reward_id) for m in members])

    assert outcomes(results) == [(201, None)] * 5 + [(409, "out_of_stock")] * 15
    assert reward_stock(app, reward_id) == 0
    assert count(app, Redemption, Redemption.reward_id == reward_id) == 5
    assert count(app, Voucher, Voucher.reward_id == reward_id) == 5
    winners = {members[n] for n, r in enumerate(results) if r.status_code == 201}
    for member_id in members:
        expected = D(0) if member_id in winners else D(100)
        assert account(app, member_id)["available"] == expected, member_id
        assert len(entries(app, member_id, "redeem")) == (member_id in winners)
    assert_ledger_exact(app)


@on_both_databases
def test_competing_multi_unit_redemptions_never_take_more_than_the_stock(database, app, headers):
    """Stock 5, ten members each asking for 2: two get their pair, one unit is left (a request
    for 2 cannot have it), and nobody gets a partial redemption."""
    def build():
        return new_reward(stock=5), [member_with_points(200) for _ in range(10)]
    reward_id, members = setup(app, build)

    results = race(app, [redeem_request(headers, m, reward_id, quantity=2) for m in members])

    assert outcomes(results) == [(201, None)] * 2 + [(409, "out_of_stock")] * 8
    assert reward_stock(app, reward_id) == 1
    assert count(app, Voucher, Voucher.reward_id == reward_id) == 4
    assert_ledger_exact(app)


# --- one member's balance and limit -------------------------------------------------------------

@on_both_databases
def test_one_member_redeeming_twice_at_once_with_points_for_one(database, app, headers):
    """Two devices of one member redeem the same 100-point reward with exactly 100 points: one
    succeeds, the other gets insufficient_points. Several rounds to give a race a chance."""
    reward_id = setup(app, new_reward)
    for round_ in range(6):
        member_id = setup(app, lambda: member_with_points(100))

        results = race(app, [redeem_request(headers, member_id, reward_id, key=f"r{round_}-{device}")
                             for device in ("phone", "tablet")])

        assert outcomes(results) == [(201, None), (409, "insufficient_points")], round_
        balance = account(app, member_id)
        assert (balance["available"], balance["debt"]) == (D(0), D(0))
        assert count(app, Redemption, Redemption.member_id == member_id) == 1
        assert count(app, Voucher, Voucher.member_id == member_id) == 1
        assert entries(app, member_id, "redeem") == [("redeem", D(-100))]
    assert_ledger_exact(app)


@on_both_databases
def test_many_redemptions_against_one_balance_never_overdraw(database, app, headers):
    """Twelve redemptions of 30 points against 100: exactly three succeed."""
    member_id, reward_id = setup(app, lambda: (member_with_points(100), new_reward(points_cost=D(30))))

    results = race(app, [redeem_request(headers, member_id, reward_id) for _ in range(12)])

    assert outcomes(results) == [(201, None)] * 3 + [(409, "insufficient_points")] * 9
    assert account(app, member_id)["available"] == D(10)
    assert_ledger_exact(app)


@on_both_databases
def test_a_per_member_limit_holds_when_one_member_redeems_at_once_from_two_devices(database, app, headers):
    reward_id = setup(app, lambda: new_reward(per_member_limit=1, limit_period="month"))
    for round_ in range(4):
        member_id = setup(app, lambda: member_with_points(1000))

        results = race(app, [redeem_request(headers, member_id, reward_id) for _ in range(2)])

        assert outcomes(results) == [(201, None), (409, "limit_reached")], round_
        assert account(app, member_id)["available"] == D(900)
    assert_ledger_exact(app)


@on_both_databases
def test_idempotency_key_twins_of_a_redemption_redeem_once(database, app, headers):
    member_id, reward_id = setup(app, lambda: (member_with_points(1000), new_reward(stock=10)))

    results = race(app, [redeem_request(headers, member_id, reward_id, quantity=2, key="same")] * 8)

    assert outcomes(results) == [(201, None)] * 8
    assert len({r.get_data() for r in results}) == 1
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in results) == [""] + ["true"] * 7
    assert count(app, Redemption) == 1 and count(app, Voucher) == 2
    assert reward_stock(app, reward_id) == 8
    assert account(app, member_id)["available"] == D(800)
    assert_ledger_exact(app)


# --- vouchers -----------------------------------------------------------------------------------

@on_both_databases
def test_one_voucher_scanned_by_two_tills_at_the_same_instant(database, app, headers):
    """Two tills (stores S1 and S2) use the same voucher at once: one 200, one voucher_used."""
    for round_ in range(6):
        _, _, _, [code] = setup(app, lambda: redemption_with_vouchers(100))

        results = race(app, [use_request(headers["pos"], code), use_request(headers["pos_other"], code)])

        assert outcomes(results) == [(200, None), (409, "voucher_used")], round_
        winner = next(r for r in results if r.status_code == 200).get_json()["used_store_id"]
        assert voucher_row(app, code) == ("used", winner, True)
    assert_ledger_exact(app)


@on_both_databases
def test_one_voucher_scanned_by_many_tills_is_used_once(database, app, headers):
    _, _, _, [code] = setup(app, lambda: redemption_with_vouchers(100))

    results = race(app, [use_request(headers["pos" if n % 2 else "pos_other"], code) for n in range(12)])

    assert outcomes(results) == [(200, None)] + [(409, "voucher_used")] * 11
    assert voucher_row(app, code)[0] == "used"


# --- cancellations ------------------------------------------------------------------------------

@on_both_databases
def test_concurrent_cancellations_return_the_points_and_stock_once(database, app, headers):
    member_id, reward_id, redemption_id, _ = setup(app, lambda: redemption_with_vouchers(500, 3, stock=10))

    results = race(app, [post(f"/redemptions/{redemption_id}/cancel", headers["app"]) for _ in range(6)])

    assert outcomes(results) == [(200, None)] * 6
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in results) == [""] + ["true"] * 5
    assert account(app, member_id)["available"] == D(500)
    assert entries(app, member_id, "reverse") == [("reverse", D(300))]
    assert reward_stock(app, reward_id) == 10
    assert_ledger_exact(app)


@on_both_databases
def test_a_till_using_a_voucher_while_the_member_cancels(database, app, headers):
    """The till and the cancellation race for the same single voucher: either the till wins
    (the cancellation finds nothing to cancel) or the cancellation wins (the till is told the
    voucher is void). Never both: the goods handed over and the points returned."""
    for round_ in range(6):
        member_id, reward_id, redemption_id, [code] = setup(
            app, lambda: redemption_with_vouchers(100, 1, stock=5))

        use, cancel = race(app, [use_request(headers["pos"], code),
                                 post(f"/redemptions/{redemption_id}/cancel", headers["app"])])

        assert (outcome(use), outcome(cancel)) in (((200, None), (409, "conflict")),
                                                   ((409, "voucher_void"), (200, None))), round_
        if use.status_code == 200:
            assert voucher_row(app, code) == ("used", "S1", True)
            assert account(app, member_id)["available"] == D(0)
            assert reward_stock(app, reward_id) == 4
        else:
            assert voucher_row(app, code) == ("void", None, False)
            assert account(app, member_id)["available"] == D(100)
            assert reward_stock(app, reward_id) == 5
    assert_ledger_exact(app)


@pytest.mark.postgres_only
def test_a_voucher_used_between_the_cancellations_read_and_its_lock_stays_used(app, headers):
    """Deterministic: the moment the cancellation is about to lock the vouchers, a till uses one
    of them (and commits). The cancellation must then see it used: 100 points back, not 200, and
    the used voucher stays used. PostgreSQL only: on SQLite the cancellation holds the database's
    write lock from its first statement, so nothing can happen in between."""
    member_id, reward_id, redemption_id, [first, second] = setup(
        app, lambda: redemption_with_vouchers(500, 2, stock=5))
    cancelling = threading.current_thread()
    till = {}

    def use_first():
        till["response"] = app.test_client().post(f"{API}/vouchers/{first}/use", headers=headers["pos"], json={})

    def before_execute(conn, cursor, statement, parameters, context, executemany):
        about_to_lock = ("FROM vouchers" in statement and "FOR UPDATE" in statement) or \
            statement.lstrip().upper().startswith("UPDATE VOUCHERS")
        if threading.current_thread() is cancelling and about_to_lock and "response" not in till:
            thread = threading.Thread(target=use_first)
            thread.start()
            thread.join(timeout=60)
            assert not thread.is_alive(), "the till's request hung"

    engine = read(app, lambda: db.engine)
    event.listen(engine, "before_cursor_execute", before_execute)
    try:
        cancel = app.test_client().post(f"{API}/redemptions/{redemption_id}/cancel", headers=headers["app"])
    finally:
        event.remove(engine, "before_cursor_execute", before_execute)

    assert outcome(till["response"]) == (200, None)
    assert outcome(cancel) == (200, None), cancel.get_json()
    assert cancel.get_json()["points_returned"] == 100
    assert voucher_row(app, first) == ("used", "S1", True)
    assert voucher_row(app, second)[0] == "void"
    assert account(app, member_id)["available"] == D(400)
    assert reward_stock(app, reward_id) == 4
    assert_ledger_exact(app)
