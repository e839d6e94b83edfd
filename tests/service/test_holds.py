"""Points holds at the till: reserve, capture (a real points payment), release, expiry by the next
write and by the job, what held points are safe from, idempotency, and the ledger's invariants."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from loyalty.errors import (Conflict, Forbidden, HoldClosed, HoldExpired, InsufficientPoints, NotFound,
                            ValidationFailed)
from loyalty.points import holds, jobs, service
from loyalty.points.models import Account, Lot, PointsHold
from loyalty.extensions import db
from loyalty.members.merge import merge_members
from loyalty.points.verify import broken_accounts
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import (T0, assert_ledger_ok, balances, entries, lot_rows, lots,
                                          use_rules)

pytestmark = pytest.mark.usefixtures("ctx")


def rich_member(points="500.00", now=T0):
    member = factories.member(now=now)
    factories.purchase(member.id, points, now=now)
    return member


def hold(member_id, points, hold_no="H1", store_id="S1", now=T0, **kwargs):
    return holds.place_hold(member_id, store_id, hold_no, D(points), now=now, **kwargs)


def held(member_id):
    return db.session.get(Account, member_id, populate_existing=True).held


def test_held_points_leave_available_and_show_as_held(ctx):
    member = rich_member()

    outcome = hold(member.id, "200")

    assert outcome.replayed is False
    row = outcome.record
    assert (row.status, row.points, row.expires_at) == ("held", D("200.00"), T0 + timedelta(seconds=900))
    assert balances(member.id)[0] == D("300.00")
    assert held(member.id) == D("200.00")
    summary = service.points_summary(member.id, now=T0)
    assert (summary["available"], summary["held"]) == (D("300.00"), D("200.00"))
    assert entries(member.id) == [("earn_purchase", D("500.00"))]  # a hold is not an entry
    assert_ledger_ok()


def test_a_hold_beyond_the_available_points_is_refused_and_changes_nothing(ctx):
    member = rich_member("99")

    with pytest.raises(InsufficientPoints):
        hold(member.id, "100")

    assert balances(member.id)[0] == D("99.00") and held(member.id) == 0
    with pytest.raises(NotFound):
        holds.get_hold(1)


def test_a_repeated_hold_number_is_a_replay_and_a_different_one_a_conflict(ctx):
    member = rich_member()
    first = hold(member.id, "100")

    again = hold(member.id, "100")
    assert again.replayed is True and again.record.id == first.record.id
    assert held(member.id) == D("100.00")
    with pytest.raises(Conflict):
        hold(member.id, "150")
    other_store = hold(member.id, "100", store_id="S2")  # the number is per store
    assert other_store.record.id != first.record.id
    assert_ledger_ok()


def test_a_refused_hold_number_stays_refused_after_points_arrive(ctx):
    member, other = rich_member("99"), rich_member("900")
    with pytest.raises(InsufficientPoints) as first:
        hold(member.id, "100")
    factories.purchase(member.id, "500", now=T0)

    with pytest.raises(InsufficientPoints) as again:
        hold(member.id, "100", now=T0 + timedelta(minutes=1))

    assert (again.value.message, again.value.code) == (first.value.message, "insufficient_points")
    assert "99.00 points available" in again.value.message
    assert balances(member.id)[0] == D("599.00") and held(member.id) == 0
    with pytest.raises(Conflict):  # the refused number with other points
        hold(member.id, "50")
    with pytest.raises(Conflict):  # or for another member
        hold(other.id, "100")
    assert hold(member.id, "100", store_id="S2").record.status == "held"  # the number is per store
    assert_ledger_ok()


@pytest.mark.parametrize("ttl", [0, 86_401])
def test_a_ttl_outside_one_second_to_a_day_is_refused(ctx, ttl):
    member = rich_member()
    with pytest.raises(ValidationFailed):
        hold(member.id, "100", ttl_seconds=ttl)


def test_a_ttl_of_a_day_is_allowed(ctx):
    member = rich_member()
    assert hold(member.id, "100", ttl_seconds=86_400).record.expires_at == T0 + timedelta(days=1)


def test_capture_of_all_makes_a_points_payment(ctx):
    member = rich_member()
    row = hold(member.id, "200").record

    payment = holds.capture_hold(row.id, "S1", "PAY-1", now=T0 + timedelta(minutes=1)).record

    assert (payment.points, payment.money_amount, payment.status) == (D("200.00"), D("2.00"), "completed")
    assert balances(member.id)[0] == D("300.00") and held(member.id) == 0
    assert entries(member.id)[-1] == ("payment", D("-200.00"))
    assert holds.get_hold(row.id, now=T0)["status"] == "captured"
    assert holds.get_hold(row.id, now=T0)["captured_points"] == D("200.00")
    assert_ledger_ok()


def test_a_partial_capture_pays_part_and_gives_the_rest_back(ctx):
    member = rich_member()
    row = hold(member.id, "200").record

    holds.capture_hold(row.id, "S1", "PAY-1", D("50"), now=T0)

    assert balances(member.id)[0] == D("450.00") and held(member.id) == 0
    assert holds.get_hold(row.id, now=T0)["captured_points"] == D("50.00")
    assert lots(member.id) == [("available", D("500.00"), D("450.00"))]
    assert_ledger_ok()


def test_a_captured_payment_is_reversed_like_any_payment(ctx):
    member = rich_member()
    row = hold(member.id, "200").record
    payment = holds.capture_hold(row.id, "S1", "PAY-1", D("120"), now=T0).record

    service.reverse_payment(payment.id, "S1", now=T0 + timedelta(minutes=5))

    assert balances(member.id)[0] == D("500.00")
    assert lots(member.id) == [("available", D("500.00"), D("500.00"))]
    assert_ledger_ok()


def test_capture_replayed_returns_the_payment_and_a_second_capture_is_closed(ctx):
    member = rich_member()
    row = hold(member.id, "200").record
    first = holds.capture_hold(row.id, "S1", "PAY-1", now=T0).record

    again = holds.capture_hold(row.id, "S1", "PAY-1", now=T0)
    assert again.replayed is True and again.record.id == first.id
    with pytest.raises(HoldClosed):
        holds.capture_hold(row.id, "S1", "PAY-2", now=T0)
    with pytest.raises(HoldClosed):
        holds.release_hold(row.id, "S1", now=T0)
    assert balances(member.id)[0] == D("300.00")
    assert_ledger_ok()


def test_capture_more_than_held_is_refused(ctx):
    member = rich_member()
    row = hold(member.id, "200").record
    with pytest.raises(ValidationFailed):
        holds.capture_hold(row.id, "S1", "PAY-1", D("201"), now=T0)
    assert held(member.id) == D("200.00")


def test_capture_with_a_payment_number_already_used_is_a_conflict(ctx):
    member = rich_member()
    service.pay_with_points(member.id, "S1", "PAY-1", D("10"), now=T0)
    row = hold(member.id, "200").record
    with pytest.raises(Conflict):
        holds.capture_hold(row.id, "S1", "PAY-1", now=T0)
    assert held(member.id) == D("200.00")
    assert_ledger_ok()


def test_release_gives_the_points_back_and_repeats_as_a_replay(ctx):
    member = rich_member()
    row = hold(member.id, "200").record

    assert holds.release_hold(row.id, "S1", now=T0).record.status == "released"

    assert balances(member.id)[0] == D("500.00") and held(member.id) == 0
    assert holds.release_hold(row.id, "S1", now=T0).replayed is True
    with pytest.raises(HoldClosed):
        holds.capture_hold(row.id, "S1", "PAY-1", now=T0)
    assert_ledger_ok()


def test_another_store_cannot_use_a_hold(ctx):
    member = rich_member()
    row = hold(member.id, "200").record
    for action in (lambda: holds.capture_hold(row.id, "S2", "PAY-1", now=T0),
                   lambda: holds.release_hold(row.id, "S2", now=T0),
                   lambda: holds.get_hold(row.id, "S2", now=T0)):
        with pytest.raises(Forbidden):
            action()
    assert held(member.id) == D("200.00")


def test_an_expired_hold_reads_expired_and_cannot_be_captured(ctx):
    member = rich_member()
    row = hold(member.id, "200", ttl_seconds=60).record
    later = T0 + timedelta(seconds=61)

    assert holds.get_hold(row.id, now=later)["status"] == "expired"
    with pytest.raises(HoldExpired):
        holds.capture_hold(row.id, "S1", "PAY-1", now=later)
    with pytest.raises(HoldExpired):
        holds.release_hold(row.id, "S1", now=later)


def test_the_next_write_on_the_member_releases_an_expired_hold(ctx):
    member = rich_member()
    row = hold(member.id, "200", ttl_seconds=60).record
    later = T0 + timedelta(minutes=5)

    service.pay_with_points(member.id, "S1", "PAY-9", D("450"), now=later)  # needs the held points

    assert held(member.id) == 0 and balances(member.id)[0] == D("50.00")
    assert holds.get_hold(row.id, now=later)["status"] == "expired"
    assert_ledger_ok()


def test_reading_the_points_releases_an_expired_hold(ctx):
    member = rich_member()
    hold(member.id, "200", ttl_seconds=60)

    summary = service.points_summary(member.id, now=T0 + timedelta(minutes=5))

    assert (summary["available"], summary["held"]) == (D("500.00"), D("0.00"))
    assert_ledger_ok()


def test_the_job_releases_expired_holds_once(ctx):
    members = [rich_member() for _ in range(3)]
    due = [hold(m.id, "100", hold_no=f"H{n}", ttl_seconds=60).record.id for n, m in enumerate(members[:2])]
    kept = hold(members[2].id, "100", hold_no="H9", ttl_seconds=3600).record.id
    later = T0 + timedelta(minutes=2)

    assert jobs.release_holds(None, now=later)["holds_released"] == 2
    assert jobs.release_holds(None, now=later)["holds_released"] == 0

    assert [holds.get_hold(i, now=later)["status"] for i in due] == ["expired", "expired"]
    assert holds.get_hold(kept, now=later)["status"] == "held"
    assert [balances(m.id)[0] for m in members] == [D("500.00"), D("500.00"), D("400.00")]
    assert_ledger_ok()


def test_the_job_in_small_batches_releases_them_all(ctx):
    members = [rich_member() for _ in range(5)]
    for n, m in enumerate(members):
        hold(m.id, "10", hold_no=f"H{n}", ttl_seconds=60)
    assert jobs.release_holds(None, now=T0 + timedelta(minutes=2), batch=2)["holds_released"] == 5
    assert all(held(m.id) == 0 for m in members)
    assert_ledger_ok()


def test_held_points_are_not_paid_by_anything_else(ctx):
    member = rich_member("100")
    hold(member.id, "80")

    with pytest.raises(InsufficientPoints):
        service.pay_with_points(member.id, "S1", "PAY-1", D("30"), now=T0)
    assert balances(member.id)[0] == D("20.00")


def test_a_lot_expiring_during_a_hold_expires_when_the_hold_lets_go(ctx):
    use_rules(expiry_policy="days_after_available", expiry_days=1)
    member = rich_member("100")
    [lot] = lot_rows(member.id)
    row = hold(member.id, "80", ttl_seconds=7200, now=lot.expires_at - timedelta(hours=1)).record
    after_expiry = lot.expires_at + timedelta(minutes=1)

    jobs.expire_points(after_expiry.date(), now=after_expiry)  # the nightly job: only the free 20 go
    assert held(member.id) == D("80.00")
    assert entries(member.id)[-1] == ("expire", D("-20.00"))

    holds.release_hold(row.id, "S1", now=after_expiry)

    assert entries(member.id)[-1] == ("expire", D("-80.00"))
    assert balances(member.id)[0] == 0 and held(member.id) == 0
    assert db.session.get(Lot, lot.id, populate_existing=True).status == "expired"
    assert_ledger_ok()


def test_held_points_of_an_expired_lot_can_still_be_captured(ctx):
    use_rules(expiry_policy="days_after_available", expiry_days=1)
    member = rich_member("100")
    [lot] = lot_rows(member.id)
    row = hold(member.id, "80", ttl_seconds=7200, now=lot.expires_at - timedelta(hours=1)).record
    after_expiry = lot.expires_at + timedelta(minutes=1)

    holds.capture_hold(row.id, "S1", "PAY-1", D("50"), now=after_expiry)

    # The free 20 expire as the till's write settles the account; the 30 not captured on release.
    assert entries(member.id)[-3:] == [("expire", D("-20.00")), ("payment", D("-50.00")),
                                       ("expire", D("-30.00"))]
    assert balances(member.id)[0] == 0
    assert_ledger_ok()


def test_a_refund_while_points_are_held_leaves_them_held(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100", now=T0).record
    row = hold(member.id, "100").record

    service.refund_purchase(purchase.id, "S1", "RF1", D("100"), now=T0)

    assert held(member.id) == D("100.00")
    assert balances(member.id)[3] == D("100.00")  # the clawback is a debt, the held points stay
    assert_ledger_ok()
    holds.release_hold(row.id, "S1", now=T0)
    assert balances(member.id)[0] == 0 and balances(member.id)[3] == 0  # released points paid the debt
    assert_ledger_ok()


def test_the_job_pays_a_debt_from_released_points(ctx):
    member = factories.member(now=T0)
    purchase = factories.purchase(member.id, "100", now=T0).record
    hold(member.id, "100", ttl_seconds=60)
    service.refund_purchase(purchase.id, "S1", "RF1", D("40"), now=T0)

    jobs.release_holds(None, now=T0 + timedelta(minutes=2))

    assert balances(member.id)[0] == D("60.00") and balances(member.id)[3] == 0
    assert_ledger_ok()


def test_holds_take_whole_cents_only(ctx):
    member = rich_member()
    with pytest.raises(ValidationFailed):
        hold(member.id, "0.5")


def test_ledger_verify_knows_about_holds(ctx, runner):
    member = rich_member()
    hold(member.id, "200")
    assert_ledger_ok()
    account = db.session.get(Account, member.id)
    account.held -= D("50")  # a held column that disagrees with the open holds
    account.available += D("50")
    db.session.commit()

    problems = {broken.problem for broken in broken_accounts()}

    assert "held is not the points allocated to open holds" in problems
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code != 0 and "held" in result.output


def test_a_merge_moves_the_other_members_holds_closed_and_open_to_the_survivor(ctx):
    """Holds go where their lots go. An open one stays open: the till that placed it captures or
    releases it by its id, and the survivor pays or gets the points back."""
    keep, gone = rich_member(), rich_member()
    captured, released = hold(gone.id, "100", "H1").record, hold(gone.id, "50", "H2").record
    holds.capture_hold(captured.id, "S1", "PAY-1", D("60"), now=T0)
    holds.release_hold(released.id, "S1", now=T0)
    still_open, to_pay = hold(gone.id, "120", "H3").record, hold(gone.id, "80", "H4").record
    with pytest.raises(InsufficientPoints):
        hold(gone.id, "10000", "H5")
    assert (balances(gone.id)[0], held(gone.id)) == (D("240.00"), D("200.00"))

    merge_members(keep.id, gone.id, actor="test", now=T0 + timedelta(minutes=1))

    assert (balances(keep.id)[0], held(keep.id)) == (D("740.00"), D("200.00"))
    assert (balances(gone.id)[0], held(gone.id)) == (D("0.00"), D("0.00"))
    moved = {row.hold_no: (row.member_id, row.status)
             for row in db.session.scalars(sa.select(PointsHold).execution_options(populate_existing=True))}
    assert moved == {"H1": (keep.id, "captured"), "H2": (keep.id, "released"), "H3": (keep.id, "held"),
                     "H4": (keep.id, "held")}
    assert holds.get_hold(still_open.id, "S1")["member_id"] == keep.id
    assert_ledger_ok()
    with pytest.raises(InsufficientPoints):  # the refusal moved too: the same hold is refused again
        hold(keep.id, "10000", "H5")

    payment = holds.capture_hold(to_pay.id, "S1", "PAY-2", now=T0 + timedelta(minutes=2)).record
    holds.release_hold(still_open.id, "S1", now=T0 + timedelta(minutes=2))

    assert payment.member_id == keep.id
    assert (balances(keep.id)[0], held(keep.id)) == (D("860.00"), D("0.00"))
    assert_ledger_ok()


def test_an_open_hold_moved_by_a_merge_expires_on_the_survivor(ctx):
    keep, gone = rich_member(), rich_member()
    hold(gone.id, "100", ttl_seconds=60)
    merge_members(keep.id, gone.id, actor="test", now=T0)

    assert jobs.release_holds(None, now=T0 + timedelta(minutes=5))["holds_released"] == 1
    assert (balances(keep.id)[0], held(keep.id)) == (D("1000.00"), D("0.00"))
    assert_ledger_ok()


def test_a_capture_that_read_the_hold_before_a_merge_moved_it_pays_from_the_survivor(ctx, monkeypatch):
    """The race a till can lose on PostgreSQL, made certain: the capture found the hold on the other
    member, then waited for that member's lock while the merge moved the hold and committed."""
    keep, gone = rich_member(), rich_member()
    row = hold(gone.id, "100").record
    seen_before_the_merge = PointsHold(id=row.id, member_id=gone.id, store_id="S1")
    merge_members(keep.id, gone.id, actor="test", now=T0)
    monkeypatch.setattr(holds, "_own_hold", lambda hold_id, store_id: seen_before_the_merge)

    payment = holds.capture_hold(row.id, "S1", "PAY-1", now=T0 + timedelta(minutes=1)).record

    assert payment.member_id == keep.id
    assert (balances(keep.id)[0], held(keep.id), held(gone.id)) == (D("900.00"), 0, 0)
    assert_ledger_ok()
