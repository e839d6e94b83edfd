"""Behaviour points: sign-in, share, review and configured types, within caps counted in local time."""
from datetime import timedelta

import pytest

from loyalty.errors import NotFound, ValidationFailed
from loyalty.points import service
from loyalty.points.rules import ActivityType
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import (T0, assert_ledger_ok, balances, entries, entry_count,
                                          lot_rows, use_rules, utc)

pytestmark = pytest.mark.usefixtures("ctx")


def act(member_id, type_, event_id, now=T0, occurred_at=None):
    return service.record_activity(member_id, type_, event_id, occurred_at=occurred_at, now=now)


def awarded(outcome):
    return outcome.record.points_awarded, outcome.record.capped


def test_sign_in_earns_half_a_point(ctx):
    member = factories.member(now=T0)

    outcome = act(member.id, "sign_in", "e1")

    assert awarded(outcome) == (D("0.50"), False)
    assert balances(member.id) == (D("0.50"), D("0.00"), D("0.50"), D("0.00"))
    [entry], _ = service.history(member.id)
    assert (entry.type, entry.description) == ("earn_activity", "Daily sign-in")
    assert entry.reference == {"type": "activity", "id": str(outcome.record.id)}
    assert_ledger_ok()


def test_a_second_sign_in_the_same_day_is_capped_and_earns_nothing(ctx):
    member = factories.member(now=T0)
    act(member.id, "sign_in", "e1")

    second = act(member.id, "sign_in", "e2", now=T0 + timedelta(hours=3))

    assert second.replayed is False
    assert awarded(second) == (D("0.00"), True)
    assert balances(member.id)[0] == D("0.50")
    assert entries(member.id) == [("earn_activity", D("0.50"))]
    assert_ledger_ok()


def test_sign_in_again_the_next_day_earns_again(ctx):
    member = factories.member(now=T0)
    act(member.id, "sign_in", "e1")

    outcome = act(member.id, "sign_in", "e2", now=T0 + timedelta(days=1))

    assert awarded(outcome) == (D("0.50"), False)
    assert balances(member.id)[0] == D("1.00")
    assert_ledger_ok()


def test_the_sign_in_day_ends_at_local_midnight_not_utc_midnight(ctx):
    member = factories.member(now=T0)
    # 15:59 and 16:00 UTC on the same UTC day are 23:59 and 00:00 in Shanghai: two local days.
    first = act(member.id, "sign_in", "e1", now=utc(2026, 3, 10, 15, 59))
    second = act(member.id, "sign_in", "e2", now=utc(2026, 3, 10, 16, 0))
    # 16:00 UTC on the 10th and 15:59 UTC on the 11th are the same local day, the 11th.
    third = act(member.id, "sign_in", "e3", now=utc(2026, 3, 11, 15, 59))

    assert [awarded(o) for o in (first, second, third)] == [
        (D("0.50"), False), (D("0.50"), False), (D("0.00"), True)]
    assert (first.record.period, second.record.period) == ("2026-03-10", "2026-03-11")
    assert balances(member.id)[0] == D("1.00")
    assert_ledger_ok()


def test_a_backdated_sign_in_counts_in_the_day_it_happened(ctx):
    member = factories.member(now=T0 - timedelta(days=2))
    act(member.id, "sign_in", "today")

    yesterday = act(member.id, "sign_in", "yesterday", occurred_at=T0 - timedelta(days=1))

    assert awarded(yesterday) == (D("0.50"), False)
    assert yesterday.record.period == "2026-03-09"
    assert balances(member.id)[0] == D("1.00")
    assert_ledger_ok()


def test_share_is_capped_at_three_a_day(ctx):
    member = factories.member(now=T0)

    outcomes = [act(member.id, "share", f"s{n}", now=T0 + timedelta(minutes=n)) for n in range(5)]

    assert [o.record.capped for o in outcomes] == [False, False, False, True, True]
    assert sum(o.record.points_awarded for o in outcomes) == D("1.50")
    assert balances(member.id)[0] == D("1.50")
    assert act(member.id, "share", "tomorrow", now=T0 + timedelta(days=1)).record.capped is False
    assert_ledger_ok()


def test_caps_count_per_type(ctx):
    member = factories.member(now=T0)
    act(member.id, "sign_in", "e1")

    share = act(member.id, "share", "e1")

    assert awarded(share) == (D("0.50"), False)
    assert balances(member.id)[0] == D("1.00")
    assert_ledger_ok()


def test_review_is_capped_at_five_a_month(ctx):
    start = utc(2026, 3, 1, 2)  # 10:00 on 1 March, local
    member = factories.member(now=start)

    march = [act(member.id, "review", f"r{n}", now=start + timedelta(days=n)) for n in range(6)]

    assert [o.record.capped for o in march] == [False] * 5 + [True]
    assert balances(member.id)[0] == D("10.00")
    # 16:00 UTC on 31 March is 00:00 on 1 April in Shanghai: a new month, a new cap.
    last_of_march = act(member.id, "review", "late-march", now=utc(2026, 3, 31, 15, 59))
    first_of_april = act(member.id, "review", "april", now=utc(2026, 3, 31, 16, 0))
    assert awarded(last_of_march) == (D("0.00"), True)
    assert awarded(first_of_april) == (D("2.00"), False)
    assert first_of_april.record.period == "2026-04"
    assert_ledger_ok()


def test_a_duplicate_event_id_is_a_replay_not_a_second_credit(ctx):
    member = factories.member(now=T0)
    first = act(member.id, "share", "e1")

    again = act(member.id, "share", "e1", now=T0 + timedelta(minutes=5))

    assert again.replayed is True
    assert again.record.id == first.record.id
    assert awarded(again) == (D("0.50"), False)
    assert balances(member.id)[0] == D("0.50")
    # The replay does not use up the cap either.
    assert [act(member.id, "share", f"e{n}").record.capped for n in (2, 3, 4)] == [False, False, True]
    assert_ledger_ok()


def test_a_replayed_capped_event_stays_capped(ctx):
    member = factories.member(now=T0)
    act(member.id, "sign_in", "e1")
    capped = act(member.id, "sign_in", "e2")

    again = act(member.id, "sign_in", "e2", now=T0 + timedelta(days=1))

    assert again.replayed is True and again.record.id == capped.record.id
    assert awarded(again) == (D("0.00"), True)
    assert balances(member.id)[0] == D("0.50")


def test_the_same_event_id_for_another_type_is_another_event(ctx):
    member = factories.member(now=T0)
    act(member.id, "sign_in", "e1")

    share = act(member.id, "share", "e1")

    assert share.replayed is False
    assert balances(member.id)[0] == D("1.00")


def test_the_same_event_id_for_another_member_is_another_event(ctx):
    alice, bob = factories.member(now=T0), factories.member(now=T0)
    act(alice.id, "sign_in", "e1")

    outcome = act(bob.id, "sign_in", "e1")

    assert outcome.replayed is False
    assert balances(bob.id)[0] == D("0.50")


def test_an_unknown_activity_type_is_refused_and_changes_nothing(ctx):
    member = factories.member(now=T0)

    with pytest.raises(ValidationFailed) as refused:
        act(member.id, "dance", "e1")

    assert "sign_in, share, review" in refused.value.message
    assert "type" in refused.value.errors
    assert entry_count() == 0


def test_a_configured_activity_type_earns_its_points(ctx):
    use_rules(activities=(ActivityType("survey", D("3"), description="Answered a survey"),))
    member = factories.member(now=T0)

    outcomes = [act(member.id, "survey", f"q{n}") for n in range(4)]

    assert all(awarded(o) == (D("3.00"), False) for o in outcomes)  # no cap configured
    assert balances(member.id)[0] == D("12.00")
    with pytest.raises(ValidationFailed):
        act(member.id, "sign_in", "e1")  # no longer configured
    assert_ledger_ok()


def test_a_weekly_cap_counts_iso_weeks_in_local_time(ctx):
    use_rules(activities=(ActivityType("visit", D("1"), cap=1, cap_period="week"),))
    member = factories.member(now=T0)
    sunday_night = utc(2026, 3, 15, 15, 59)  # Sunday 23:59 local
    monday = utc(2026, 3, 15, 16, 0)  # Monday 00:00 local

    outcomes = [act(member.id, "visit", "a", now=sunday_night - timedelta(days=3)),
                act(member.id, "visit", "b", now=sunday_night),
                act(member.id, "visit", "c", now=monday)]

    assert [o.record.capped for o in outcomes] == [False, True, False]
    assert balances(member.id)[0] == D("2.00")


@pytest.mark.parametrize("offset", [timedelta(minutes=6), timedelta(days=-7, seconds=-1)])
def test_an_activity_in_the_future_or_over_a_week_old_is_refused(ctx, offset):
    member = factories.member(now=T0)

    with pytest.raises(ValidationFailed) as refused:
        act(member.id, "sign_in", "e1", occurred_at=T0 + offset)

    assert "occurred_at" in refused.value.errors
    assert entry_count() == 0


def test_an_activity_from_before_the_member_joined_is_refused(ctx):
    member = factories.member(now=T0)

    with pytest.raises(ValidationFailed) as refused:
        act(member.id, "sign_in", "e1", occurred_at=T0 - timedelta(hours=1), now=T0 + timedelta(hours=1))

    assert refused.value.errors == {"occurred_at": ["Must not be before the member joined."]}
    assert "before the member joined" in refused.value.message
    assert entry_count() == 0
    assert act(member.id, "sign_in", "e1", occurred_at=T0, now=T0 + timedelta(hours=1)).record.capped is False


def test_an_activity_a_device_clock_places_just_before_joining_counts(ctx):
    member = factories.member(now=T0)

    outcome = act(member.id, "sign_in", "e1", occurred_at=T0 - timedelta(minutes=4), now=T0)

    assert awarded(outcome) == (D("0.50"), False)


def test_activity_points_expire_like_other_points(ctx):
    use_rules(expiry_days=30)
    member = factories.member(now=T0)

    act(member.id, "sign_in", "e1")

    assert lot_rows(member.id)[0].expires_at == utc(2026, 4, 9, 16)  # end of 9 April, local


def test_a_sign_in_on_the_last_evening_of_a_month_keeps_the_month_to_expire(ctx):
    use_rules(expiry_policy="end_of_month")
    member = factories.member(now=T0)

    act(member.id, "sign_in", "e1", occurred_at=utc(2026, 3, 31, 15, 50), now=utc(2026, 3, 31, 16, 5))

    # Signed in on 31 March, recorded in April: the points must not be born expired.
    assert lot_rows(member.id)[0].expires_at == utc(2026, 4, 30, 16)
    act(member.id, "share", "e2", now=utc(2026, 4, 1, 2))
    assert balances(member.id)[0] == D("1.00")
    assert_ledger_ok()


def test_an_activity_for_an_unknown_member_is_not_found(ctx):
    with pytest.raises(NotFound):
        act(999_999, "sign_in", "e1")
