"""The tier rule on its own: which tier a window qualifies for, what is missing, where the
recompute puts a member, and which ladders make sense. No app, no database."""
from dataclasses import replace
from datetime import date
from decimal import Decimal as D

import pytest

from loyalty.tiers.rules import (DEFAULT_LADDER, TierRule, months_after, months_before, next_tier,
                                 shortfall, target_rank, tier_for, validate_ladder)

ORDINARY, SILVER, GOLD, DIAMOND = DEFAULT_LADDER


@pytest.mark.parametrize("spend, expected", [
    ("0.00", "ordinary"), ("2999.99", "ordinary"), ("3000.00", "silver"), ("9999.99", "silver"),
    ("10000.00", "gold"), ("30000.00", "diamond"), ("1000000.00", "diamond"),
])
def test_the_default_ladder_goes_by_spend(spend, expected):
    assert tier_for(D(spend), 0, DEFAULT_LADDER).code == expected


def test_mode_all_needs_both_thresholds():
    silver = replace(SILVER, activities=10, mode="all")
    ladder = (ORDINARY, silver, GOLD, DIAMOND)

    assert tier_for(D("5000"), 9, ladder).code == "ordinary"
    assert tier_for(D("2000"), 30, ladder).code == "ordinary"
    assert tier_for(D("5000"), 10, ladder).code == "silver"


def test_mode_any_needs_either_threshold():
    silver = replace(SILVER, activities=10, mode="any")
    ladder = (ORDINARY, silver, GOLD, DIAMOND)

    assert tier_for(D("0"), 10, ladder).code == "silver"
    assert tier_for(D("3000"), 0, ladder).code == "silver"
    assert tier_for(D("2999.99"), 9, ladder).code == "ordinary"


def test_mode_any_ignores_a_threshold_of_zero():
    """"any" with activities 0 must not let everyone in through the activities door."""
    silver = replace(SILVER, activities=0, mode="any")
    assert tier_for(D("0"), 0, (ORDINARY, silver)).code == "ordinary"


def test_a_window_can_skip_tiers():
    assert tier_for(D("45000"), 0, DEFAULT_LADDER).code == "diamond"


def test_the_ladder_is_read_in_rank_order_whatever_order_it_comes_in():
    assert tier_for(D("12000"), 0, (DIAMOND, ORDINARY, GOLD, SILVER)).code == "gold"
    assert next_tier("silver", (DIAMOND, ORDINARY, GOLD, SILVER)).code == "gold"
    assert next_tier("diamond", DEFAULT_LADDER) is None


def test_shortfall_is_what_is_missing_and_zero_once_met():
    assert shortfall(GOLD, D("4200.50"), 3) == (D("5799.50"), 0)
    assert shortfall(GOLD, D("12000"), 0) == (D("0.00"), 0)
    both = replace(GOLD, activities=20)
    assert shortfall(both, D("12000"), 5) == (D("0.00"), 15)


def test_shortfall_in_mode_any_names_only_the_ways_in():
    either = replace(SILVER, activities=12, mode="any")
    assert shortfall(either, D("1000"), 4) == (D("2000.00"), 8)
    spend_only = replace(SILVER, activities=0, mode="any")
    assert shortfall(spend_only, D("1000"), 4) == (D("2000.00"), None)


@pytest.mark.parametrize("current, qualified, protected, max_drop, expected", [
    (1, 3, False, 1, 3),   # up at once, skipping a tier
    (1, 3, True, 1, 3),    # protection never stops an upgrade
    (3, 0, True, 1, 3),    # protected: held
    (3, 0, False, 1, 2),   # one tier at a time
    (3, 0, False, 2, 1),   # the setting allows two
    (3, 2, False, 2, 2),   # never below what the window earns
    (2, 2, False, 1, 2),   # qualifies: stays
])
def test_where_the_recompute_puts_a_member(current, qualified, protected, max_drop, expected):
    assert target_rank(current, qualified, protected, max_drop) == expected


@pytest.mark.parametrize("current, qualified, max_drop, floor, expected", [
    (3, 0, 1, 2, 2),   # diamond above a gold guarantee: down to gold, as usual
    (2, 0, 1, 2, 2),   # at the guaranteed tier: held
    (3, 0, 3, 2, 2),   # a big drop stops at the guarantee
    (1, 0, 1, 2, 1),   # below a guarantee already: no lower, and no upgrade either
])
def test_a_guaranteed_tier_is_a_floor(current, qualified, max_drop, floor, expected):
    assert target_rank(current, qualified, False, max_drop, floor) == expected


def test_the_default_ladder_is_valid():
    assert validate_ladder(DEFAULT_LADDER) == []


@pytest.mark.parametrize("ladder, complaint", [
    ((ORDINARY, SILVER, replace(GOLD, spend=D("2000")), DIAMOND), "gold thresholds must not be below"),
    ((ORDINARY, SILVER, replace(GOLD, spend=D("3000")), DIAMOND), "gold thresholds must be above"),
    ((ORDINARY, replace(SILVER, earn_multiplier=D("0.9")), GOLD, DIAMOND), "at least 1"),
    ((ORDINARY, SILVER, replace(GOLD, earn_multiplier=D("1.1")), DIAMOND), "must not be below the silver"),
    ((replace(ORDINARY, spend=D("1")), SILVER, GOLD, DIAMOND), "every member starts"),
    ((ORDINARY, replace(SILVER, spend=D("0")), GOLD, DIAMOND), "needs a spend or an activity threshold"),
    ((ORDINARY, replace(SILVER, mode="most"), GOLD, DIAMOND), "'all' or 'any'"),
    ((ORDINARY, replace(SILVER, rank=2), GOLD, DIAMOND), "share a rank"),
])
def test_a_ladder_that_makes_no_sense_is_refused_with_a_reason(ladder, complaint):
    problems = validate_ladder(ladder)
    assert any(complaint in problem for problem in problems), problems


@pytest.mark.parametrize("day, months, expected", [
    (date(2026, 11, 23), 12, date(2025, 11, 23)),
    (date(2026, 3, 31), 1, date(2026, 2, 28)),
    (date(2024, 2, 29), 12, date(2023, 2, 28)),
    (date(2026, 1, 15), 13, date(2024, 12, 15)),
])
def test_months_before_keeps_the_day_or_the_month_end(day, months, expected):
    assert months_before(day, months) == expected


def test_months_after_is_the_inverse_on_ordinary_days():
    assert months_after(date(2025, 11, 23), 12) == date(2026, 11, 23)
    assert months_after(date(2026, 1, 31), 1) == date(2026, 2, 28)


def test_a_tier_rule_compares_by_its_qualification_not_its_perks():
    assert TierRule("x", 1, perks=("a",)) == TierRule("x", 1, perks=("b",))


def test_a_ladder_with_a_multiplier_or_birthday_gift_beyond_its_bound_is_refused():
    from dataclasses import replace

    from loyalty.tiers.rules import DEFAULT_LADDER, MAX_BIRTHDAY_POINTS, MAX_EARN_MULTIPLIER, validate_ladder

    ordinary, silver, gold, diamond = DEFAULT_LADDER
    at_bounds = (ordinary, silver, gold, replace(diamond, earn_multiplier=MAX_EARN_MULTIPLIER,
                                                 birthday_points=MAX_BIRTHDAY_POINTS))
    beyond = (ordinary, silver, gold, replace(diamond, earn_multiplier=MAX_EARN_MULTIPLIER + 1,
                                              birthday_points=MAX_BIRTHDAY_POINTS + 1))

    assert validate_ladder(at_bounds) == []
    assert validate_ladder(beyond) == ["The diamond earn multiplier must be at most 10.",
                                       "The diamond birthday points must be 0 to 100000."]
