"""`loyalty jobs` as operations use it: the list of jobs, and the tier recompute run by hand for a
given day, moving members down one tier at a time once their protection has run out."""
import re
from datetime import date, datetime, timezone

import pytest

from loyalty import clock
from loyalty.extensions import db
from loyalty.tiers import service as tiers
from tests import factories

D = factories.D

# The nightly run for 23 November 2026 happens at 02:30 on the 24th in Shanghai.
NIGHT_OF_23 = datetime(2026, 11, 23, 18, 30, tzinfo=timezone.utc)
SUMMARY = re.compile(r"^tiers\.recompute as of (\d{4}-\d\d-\d\d): members (\d+), upgraded (\d+), "
                     r"downgraded (\d+) in \d+\.\d s$")


def recompute(runner, as_of="2026-11-23", at=NIGHT_OF_23):
    """Run the job as operations would; answer (day, members, upgraded, downgraded) from its summary."""
    with clock.frozen_at(at):
        result = runner.invoke(args=["jobs", "run", "tiers.recompute", "--as-of", as_of])
    assert result.exit_code == 0, result.output
    summary = SUMMARY.match(result.output.strip().splitlines()[-1])
    assert summary, result.output
    day, *counts = summary.groups()
    return (day, *map(int, counts))


@pytest.fixture
def lapsed_gold(app):
    """A member put in gold on 1 January 2025 who has bought nothing since: the tier's protection
    ran out at the end of 1 January 2026."""
    with app.app_context():
        with clock.frozen_at(datetime(2024, 12, 1, 2, 0, tzinfo=timezone.utc)):
            member = factories.member()
        tiers.set_member_tier(member.id, "gold", "Launch promotion", "test",
                              now=datetime(2025, 1, 1, 2, 0, tzinfo=timezone.utc))
        member_id = member.id
        db.session.remove()
    return member_id


def tier_page(app, member_id, at=NIGHT_OF_23):
    with app.app_context():
        page = tiers.member_tier(member_id, now=at)
        db.session.remove()
    return page


def moves(page):
    return [(change["from"], change["to"], change["reason"]) for change in page["history"]]


# --- jobs list ------------------------------------------------------------------------------------

def test_the_job_list_names_the_tier_recompute_and_when_it_runs(runner):
    result = runner.invoke(args=["jobs", "list"])

    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("tiers.recompute")]
    assert "30 2 * * *" in line
    assert "tier" in line.split("\t")[-1]


# --- jobs run -------------------------------------------------------------------------------------

def test_a_recompute_of_an_empty_programme_says_so_in_one_line(runner):
    assert recompute(runner) == ("2026-11-23", 0, 0, 0)


def test_a_recompute_with_no_one_to_move_counts_the_members_and_moves_no_one(app, runner):
    with app.app_context(), clock.frozen_at(datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)):
        member = factories.member()
        factories.purchase(member.id, "3500.00")  # silver at once, and still silver
        db.session.remove()

    assert recompute(runner)[1:] == (1, 0, 0)


def test_a_lapsed_gold_member_goes_down_one_tier_not_straight_to_ordinary(app, runner, lapsed_gold):
    assert recompute(runner) == ("2026-11-23", 1, 0, 1)

    page = tier_page(app, lapsed_gold)
    assert page["tier"]["code"] == "silver"
    assert moves(page)[0] == ("gold", "silver", "downgrade")
    assert page["history"][0]["at"] == NIGHT_OF_23


def test_a_second_run_for_the_same_day_changes_nothing(app, runner, lapsed_gold):
    recompute(runner)
    first = tier_page(app, lapsed_gold)

    again = recompute(runner, at=NIGHT_OF_23.replace(minute=45))

    assert again == ("2026-11-23", 1, 0, 0)
    assert tier_page(app, lapsed_gold) == first


def test_the_next_nights_run_goes_down_one_more_tier(app, runner, lapsed_gold):
    recompute(runner)

    assert recompute(runner, "2026-11-24", datetime(2026, 11, 24, 18, 30, tzinfo=timezone.utc))[1:] == (1, 0, 1)

    page = tier_page(app, lapsed_gold, at=datetime(2026, 11, 24, 18, 30, tzinfo=timezone.utc))
    assert page["tier"]["code"] == "ordinary"
    assert moves(page) == [("silver", "ordinary", "downgrade"), ("gold", "silver", "downgrade"),
                           ("ordinary", "gold", "manual")]


def test_a_member_still_protected_keeps_the_tier(app, runner):
    with app.app_context():
        member = factories.member()
        tiers.set_member_tier(member.id, "gold", "Promotion", "test",
                              now=datetime(2026, 1, 2, 2, 0, tzinfo=timezone.utc))  # protected until 2027-01-02
        member_id = member.id
        db.session.remove()

    assert recompute(runner)[1:] == (1, 0, 0)
    assert tier_page(app, member_id)["tier"]["code"] == "gold"


def test_an_admin_guarantee_holds_past_the_protection_period(app, runner):
    with app.app_context():
        member = factories.member()
        tiers.set_member_tier(member.id, "gold", "Compensation", "test", guaranteed_until=date(2026, 12, 31),
                              now=datetime(2025, 1, 1, 2, 0, tzinfo=timezone.utc))
        member_id = member.id
        db.session.remove()

    assert recompute(runner)[1:] == (1, 0, 0)
    assert tier_page(app, member_id)["tier"]["code"] == "gold"


def test_an_upgrade_does_not_cancel_an_admins_guarantee_of_the_tier_below(app, runner):
    with app.app_context():
        with clock.frozen_at(datetime(2025, 12, 1, 2, 0, tzinfo=timezone.utc)):
            member = factories.member()
        tiers.set_member_tier(member.id, "gold", "Compensation", "test", guaranteed_until=date(2028, 12, 31),
                              now=datetime(2026, 1, 1, 2, 0, tzinfo=timezone.utc))
        with clock.frozen_at(datetime(2026, 2, 1, 2, 0, tzinfo=timezone.utc)):
            factories.purchase(member.id, "30000.00")  # diamond, protected through 1 February 2027
        member_id = member.id
        db.session.remove()

    recompute(runner, "2027-02-02", datetime(2027, 2, 2, 18, 30, tzinfo=timezone.utc))  # diamond -> gold: fine
    recompute(runner, "2027-02-03", datetime(2027, 2, 3, 18, 30, tzinfo=timezone.utc))

    page = tier_page(app, member_id, at=datetime(2027, 2, 3, 19, 0, tzinfo=timezone.utc))
    assert page["tier"]["code"] == "gold"  # guaranteed through 2028-12-31; today it is silver


def test_a_recompute_upgrades_a_member_a_lowered_threshold_now_admits(app, runner):
    with app.app_context():
        member = factories.member()
        with clock.frozen_at(datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)):
            factories.purchase(member.id, "2500.00")
        silver = tiers.read_ladder()[1]
        tiers.update_tier("silver", silver.name, {"spend": D("2000.00"), "activities": 0, "mode": "all"},
                          {"earn_multiplier": silver.earn_multiplier, "birthday_points": silver.birthday_points,
                           "service_level": silver.service_level, "perks": silver.perks}, "test")
        member_id = member.id
        db.session.remove()

    assert recompute(runner) == ("2026-11-23", 1, 1, 0)
    page = tier_page(app, member_id)
    assert page["tier"]["code"] == "silver"
    assert moves(page) == [("ordinary", "silver", "upgrade")]


def test_without_as_of_the_job_runs_for_today_in_the_deployments_time_zone(runner):
    with clock.frozen_at(NIGHT_OF_23):  # 02:30 on the 24th in Shanghai, still the 23rd in UTC
        result = runner.invoke(args=["jobs", "run", "tiers.recompute"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("tiers.recompute as of 2026-11-24: ")


# --- refusals -------------------------------------------------------------------------------------

def test_an_unknown_job_is_refused_naming_the_known_ones(runner):
    result = runner.invoke(args=["jobs", "run", "tiers.recompte", "--as-of", "2026-11-23"])

    assert result.exit_code != 0
    assert "No job 'tiers.recompte'" in result.output
    assert "tiers.recompute" in result.output


@pytest.mark.parametrize("as_of", ["2026-13-01", "23/11/2026", "yesterday", ""])
def test_a_bad_as_of_day_is_refused_and_nothing_runs(app, runner, lapsed_gold, as_of):
    result = runner.invoke(args=["jobs", "run", "tiers.recompute", "--as-of", as_of])

    assert result.exit_code != 0
    assert "--as-of" in result.output
    assert tier_page(app, lapsed_gold)["tier"]["code"] == "gold"


def test_a_day_that_has_not_come_yet_is_refused_and_nobody_moves(app, runner):
    with app.app_context(), clock.frozen_at(datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)):
        member = factories.member()
        factories.purchase(member.id, "12000.00")  # gold, protected through 20 November 2027
        member_id = member.id
        db.session.remove()

    with clock.frozen_at(NIGHT_OF_23):
        result = runner.invoke(args=["jobs", "run", "tiers.recompute", "--as-of", "2030-01-01"])

    page = tier_page(app, member_id)
    assert page["tier"]["code"] == "gold"  # today it is silver, "valid until" 2030-01-01
    assert result.exit_code != 0
