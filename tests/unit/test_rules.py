"""The earning rules as pure functions: no app, no database."""
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from loyalty.points.rules import (EarningRules, cap_period_key, expires_at, payment_money_value,
                                  purchase_points, reversal_points)

TZ = "Asia/Shanghai"  # UTC+8, no daylight saving
RULES = EarningRules()


def D(value):
    return Decimal(str(value))


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


def item(sku, amount, category=None):
    return {"sku": sku, "category": category, "quantity": 1, "amount": D(amount)}


# --- purchase points ----------------------------------------------------------------------------

def test_purchase_earns_one_point_per_currency_unit_by_default():
    assert purchase_points(D("199.00"), None, RULES) == (D("199.00"), D("199.00"))


def test_purchase_points_follow_the_configured_rate_and_multiplier():
    rules = replace(RULES, points_per_unit=D("2"))
    assert purchase_points(D("10.00"), None, rules, multiplier=D("1.5")) == (D("10.00"), D("30.00"))


def test_purchase_points_are_rounded_down_to_the_hundredth():
    rules = replace(RULES, points_per_unit=D("0.333"))
    eligible, points = purchase_points(D("10.00"), None, rules)
    assert points == D("3.33")  # 3.33 exactly, not 3.34
    eligible, points = purchase_points(D("0.03"), None, replace(RULES, points_per_unit=D("0.5")))
    assert points == D("0.01")  # 0.015 rounds down


def test_purchase_below_the_minimum_amount_earns_nothing():
    rules = replace(RULES, min_amount=D("50.00"))
    assert purchase_points(D("49.99"), None, rules) == (D("0.00"), D("0.00"))
    assert purchase_points(D("50.00"), None, rules) == (D("50.00"), D("50.00"))


def test_excluded_skus_and_categories_earn_nothing():
    rules = replace(RULES, excluded_skus=("GIFTCARD",), excluded_categories=("tobacco",))
    items = [item("MILK", "20.00", "food"), item("GIFTCARD", "50.00"), item("CIG", "30.00", "tobacco")]
    assert purchase_points(D("100.00"), items, rules) == (D("20.00"), D("20.00"))


def test_excluded_skus_and_categories_match_case_folded():
    rules = replace(RULES, excluded_skus=("GiftCard",), excluded_categories=("tobacco", "STRASSE"))
    items = [item("giftcard", "50.00"), item("CIG", "30.00", "TOBACCO"), item("X", "5.00", "straße"),
             item("MILK", "20.00", "Food")]
    assert purchase_points(D("105.00"), items, rules) == (D("20.00"), D("20.00"))


def test_items_that_are_not_excluded_do_not_change_the_points():
    rules = replace(RULES, excluded_skus=("GIFTCARD",))
    items = [item("MILK", "20.00", "food"), item("BREAD", "10.50", "food")]
    assert purchase_points(D("30.50"), items, rules) == (D("30.50"), D("30.50"))


def test_a_purchase_of_only_excluded_items_earns_nothing():
    rules = replace(RULES, excluded_categories=("tobacco",))
    assert purchase_points(D("30.00"), [item("CIG", "30.00", "tobacco")], rules)[1] == D("0.00")


# --- refunds --------------------------------------------------------------------------------------

def test_a_full_refund_reverses_all_points():
    assert reversal_points(D("100.00"), D("100.00"), D("0"), D("100.00"), D("0")) == D("100.00")


def test_a_partial_refund_reverses_points_pro_rata():
    assert reversal_points(D("100.00"), D("200.00"), D("0"), D("50.00"), D("0")) == D("25.00")


def test_three_thirds_refunded_add_up_exactly_to_the_points_earned():
    earned, amount = D("100.00"), D("100.00")
    refunded = reversed_ = D("0")
    parts = []
    for refund in (D("33.33"), D("33.33"), D("33.34")):
        points = reversal_points(earned, amount, refunded, refund, reversed_)
        parts.append(points)
        refunded += refund
        reversed_ += points
    assert parts == [D("33.33"), D("33.33"), D("33.34")]
    assert sum(parts) == earned


@pytest.mark.parametrize("refunds", [
    ["0.01"] * 7 + ["9.93"],
    ["3.33", "3.33", "3.34"],
    ["1.00", "2.00", "3.00", "4.00"],
    ["9.99", "0.01"],
])
def test_several_partial_refunds_never_reverse_more_than_earned(refunds):
    earned, amount = D("7.77"), D("10.00")
    refunded = reversed_ = D("0")
    for refund in map(D, refunds):
        points = reversal_points(earned, amount, refunded, refund, reversed_)
        assert points >= 0
        refunded += refund
        reversed_ += points
        assert reversed_ <= earned
        assert reversed_ == (earned * refunded / amount).quantize(D("0.01"), rounding="ROUND_DOWN") \
            or refunded == amount
    assert reversed_ == earned


def test_a_refund_of_a_purchase_that_earned_nothing_reverses_nothing():
    assert reversal_points(D("0.00"), D("10.00"), D("0"), D("10.00"), D("0")) == D("0.00")


# --- expiry ---------------------------------------------------------------------------------------

def test_days_after_available_expires_at_the_end_of_the_local_day():
    rules = replace(RULES, expiry_policy="days_after_available", expiry_days=365)
    # 2026-03-10 23:30 in Shanghai is 15:30 UTC; the last day is 2027-03-10 local.
    available = utc(2026, 3, 10, 15, 30)
    assert expires_at(available, available, rules, TZ) == utc(2027, 3, 10, 16, 0)


def test_days_after_available_counts_from_the_local_date_not_the_utc_date():
    rules = replace(RULES, expiry_policy="days_after_available", expiry_days=30)
    # 2026-03-10 17:00 UTC is already 2026-03-11 01:00 in Shanghai.
    available = utc(2026, 3, 10, 17, 0)
    assert expires_at(available, available, rules, TZ) == utc(2026, 4, 10, 16, 0)


def test_days_after_available_counts_from_availability_not_earning():
    rules = replace(RULES, expiry_policy="days_after_available", expiry_days=10)
    earned, available = utc(2026, 3, 1, 4), utc(2026, 3, 15, 4)
    assert expires_at(available, earned, rules, TZ) == utc(2026, 3, 25, 16)


def test_end_of_month_expires_when_the_local_month_ends():
    rules = replace(RULES, expiry_policy="end_of_month")
    earned = utc(2026, 2, 10, 4)
    assert expires_at(earned, earned, rules, TZ) == utc(2026, 2, 28, 16)  # 2026-03-01 00:00 local


def test_end_of_month_uses_the_local_month_at_the_utc_boundary():
    rules = replace(RULES, expiry_policy="end_of_month")
    earned = utc(2026, 1, 31, 16, 30)  # 2026-02-01 00:30 in Shanghai: a February earning
    assert expires_at(earned, earned, rules, TZ) == utc(2026, 2, 28, 16)


def test_end_of_month_in_december_expires_at_the_new_year():
    rules = replace(RULES, expiry_policy="end_of_month")
    earned = utc(2026, 12, 5, 4)
    assert expires_at(earned, earned, rules, TZ) == utc(2026, 12, 31, 16)


def test_end_of_year_expires_when_the_local_year_ends():
    rules = replace(RULES, expiry_policy="end_of_year")
    earned = utc(2026, 6, 1, 4)
    assert expires_at(earned, earned, rules, TZ) == utc(2026, 12, 31, 16)
    new_years_morning = utc(2026, 12, 31, 16, 30)  # 2027-01-01 00:30 local
    assert expires_at(new_years_morning, new_years_morning, rules, TZ) == utc(2027, 12, 31, 16)


def test_never_policy_has_no_expiry():
    rules = replace(RULES, expiry_policy="never")
    assert expires_at(utc(2026, 1, 1), utc(2026, 1, 1), rules, TZ) is None


@pytest.mark.parametrize("policy", ["end_of_month", "end_of_year"])
def test_points_earned_late_in_a_period_do_not_expire_before_they_are_available(policy):
    rules = replace(RULES, expiry_policy=policy)
    earned = utc(2026, 12, 31, 15, 50)  # 23:50 local on new year's eve
    available = utc(2026, 12, 31, 16, 10)  # recorded 20 minutes later, in the new year
    assert expires_at(available, earned, rules, TZ) > available


def test_an_unknown_expiry_policy_is_refused():
    with pytest.raises(ValueError):
        expires_at(utc(2026, 1, 1), utc(2026, 1, 1), replace(RULES, expiry_policy="sometimes"), TZ)


# --- cap periods ----------------------------------------------------------------------------------

def test_cap_periods_are_labelled_in_local_time():
    late_evening_utc = utc(2026, 11, 22, 16, 30)  # 2026-11-23 00:30 in Shanghai
    assert cap_period_key(late_evening_utc, "day", TZ) == "2026-11-23"
    assert cap_period_key(late_evening_utc, "week", TZ) == "2026-W48"
    assert cap_period_key(late_evening_utc, "month", TZ) == "2026-11"
    assert cap_period_key(late_evening_utc, "year", TZ) == "2026"


def test_the_local_day_boundary_splits_cap_periods():
    assert cap_period_key(utc(2026, 11, 22, 15, 59), "day", TZ) == "2026-11-22"
    assert cap_period_key(utc(2026, 11, 22, 16, 0), "day", TZ) == "2026-11-23"
    assert cap_period_key(utc(2026, 11, 30, 15, 59), "month", TZ) == "2026-11"
    assert cap_period_key(utc(2026, 11, 30, 16, 0), "month", TZ) == "2026-12"


def test_iso_weeks_at_the_turn_of_the_year():
    assert cap_period_key(utc(2026, 12, 31, 16, 0), "week", TZ) == "2026-W53"  # Fri 2027-01-01
    assert cap_period_key(utc(2027, 1, 3, 16, 0), "week", TZ) == "2027-W01"  # Mon 2027-01-04


def test_an_unknown_cap_period_is_refused():
    with pytest.raises(ValueError):
        cap_period_key(utc(2026, 1, 1), "fortnight", TZ)


# --- points as money ------------------------------------------------------------------------------

def test_one_hundred_points_pay_one_currency_unit():
    assert payment_money_value(D("100"), RULES) == D("1.00")
    assert payment_money_value(D("1250"), RULES) == D("12.50")
    assert payment_money_value(D("1"), RULES) == D("0.01")


def test_points_that_are_not_whole_cents_have_no_money_value():
    assert payment_money_value(D("0.50"), RULES) is None
    assert payment_money_value(D("150.5"), RULES) is None


def test_money_value_follows_the_configured_rate():
    rules = replace(RULES, payment_points_per_unit=D("10"))
    assert payment_money_value(D("25"), rules) == D("2.50")
    assert payment_money_value(D("0.1"), rules) == D("0.01")
    assert payment_money_value(D("0.05"), rules) is None


def test_rules_survive_a_round_trip_through_their_stored_document():
    rules = replace(RULES, points_per_unit=D("1.5"), excluded_skus=("X",), pending_days=7,
                    expiry_policy="end_of_year")
    assert EarningRules.from_document(rules.to_document()) == rules
