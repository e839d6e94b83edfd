"""The pure promotion rule: which promotions apply to a basket, and what each gives."""
from datetime import datetime, time, timezone
from decimal import Decimal

import pytest

from loyalty.points.rules import EarningRules
from loyalty.promotions import rules
from loyalty.promotions.rules import Basket, Effect, Item, PromotionRule, Schedule, Scope

D = Decimal
UTC = timezone.utc
SHANGHAI = "Asia/Shanghai"
RULES = EarningRules()
# Tuesday 2026-11-24 08:30 UTC is 16:30 in Shanghai.
TUESDAY_1630 = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)


def promo(id_=1, effect=None, scope=None, schedule=None, stacking="stack", priority=0, status="active",
          starts_at=datetime(2026, 1, 1, tzinfo=UTC), ends_at=None, **limits):
    return PromotionRule(id=id_, name=f"P{id_}", status=status, starts_at=starts_at, ends_at=ends_at,
                         schedule=schedule, scope=scope or Scope(),
                         effect=effect or Effect("multiplier", value=D("2")), stacking=stacking,
                         priority=priority, **limits)


def basket(amount="100.00", items=(), at=TUESDAY_1630, store="S1", channel="store", tier="ordinary",
           tags=frozenset(), first=True):
    return Basket(store_id=store, channel=channel, amount=D(amount), items=tuple(items), occurred_at=at,
                  tier=tier, tags=tags, first_purchase=first)


def awards(promotions, the_basket, **kwargs):
    return [(a.promotion_id, a.points) for a in rules.decide(promotions, the_basket, RULES, SHANGHAI, **kwargs)]


# --- effects --------------------------------------------------------------------------------------

def test_a_multiplier_of_2_gives_the_base_points_once_more():
    assert awards([promo(effect=Effect("multiplier", value=D("2")))], basket("100.00")) == [(1, D("100.00"))]


def test_a_multiplier_of_1_5_gives_half_the_base_points_rounded_down():
    assert awards([promo(effect=Effect("multiplier", value=D("1.5")))], basket("33.33")) == [(1, D("16.66"))]


def test_a_bonus_is_a_fixed_number_of_points():
    assert awards([promo(effect=Effect("bonus", points=D("50")))], basket("1.00")) == [(1, D("50.00"))]


@pytest.mark.parametrize("amount, expected", [("100.00", "5.00"), ("199.99", "9.99"), ("0.19", "0.00"),
                                              ("0.20", "0.01"), ("33.33", "1.66")])
def test_per_amount_is_pro_rata_rounded_down_to_the_hundredth(amount, expected):
    effect = Effect("per_amount", points=D("5"), per=D("100.00"))
    found = awards([promo(effect=effect)], basket(amount))
    assert found == ([(1, D(expected))] if D(expected) > 0 else [])


def test_below_the_programmes_minimum_no_promotion_applies():
    strict = EarningRules(min_amount=D("10.00"))
    assert rules.decide([promo(effect=Effect("bonus", points=D("5")))], basket("9.99"), strict, SHANGHAI) == ()


# --- time -----------------------------------------------------------------------------------------

def test_dates_bound_a_promotion_start_inclusive_end_exclusive():
    start, end = datetime(2026, 11, 24, 8, 30, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC)
    p = promo(starts_at=start, ends_at=end)
    assert rules.in_force(p, start, SHANGHAI)
    assert not rules.in_force(p, end, SHANGHAI)
    assert not rules.in_force(p, datetime(2026, 11, 24, 8, 29, 59, tzinfo=UTC), SHANGHAI)


def test_drafts_apply_only_when_asked_to_include_them():
    p = promo(status="draft")
    assert awards([p], basket()) == []
    assert awards([p], basket(), include_drafts=True) == [(1, D("100.00"))]


def test_tuesday_16_to_18_is_read_in_the_deployments_time_zone():
    schedule = Schedule(days_of_week=(2,), start=time(16), until=time(18))
    assert rules.on_schedule(schedule, TUESDAY_1630, SHANGHAI)  # 16:30 in Shanghai
    assert not rules.on_schedule(schedule, TUESDAY_1630, "UTC")  # 08:30 in UTC
    assert rules.on_schedule(schedule, datetime(2026, 11, 24, 16, 30, tzinfo=UTC), "UTC")
    assert not rules.on_schedule(schedule, datetime(2026, 11, 24, 10, 0, tzinfo=UTC), SHANGHAI)  # 18:00: until is exclusive
    assert rules.on_schedule(schedule, datetime(2026, 11, 24, 8, 0, tzinfo=UTC), SHANGHAI)  # 16:00: from is inclusive
    assert not rules.on_schedule(schedule, datetime(2026, 11, 25, 8, 30, tzinfo=UTC), SHANGHAI)  # a Wednesday


def test_a_window_across_midnight_belongs_to_the_day_it_opens():
    friday_night = Schedule(days_of_week=(5,), start=time(22), until=time(2))
    local = lambda d, h, m=0: datetime(2026, 11, d, h, m, tzinfo=UTC)  # noqa: E731 - UTC deployment
    assert rules.on_schedule(friday_night, local(27, 22), "UTC")  # Friday 22:00
    assert rules.on_schedule(friday_night, local(28, 1, 59), "UTC")  # Saturday 01:59: Friday's window
    assert not rules.on_schedule(friday_night, local(28, 2), "UTC")  # Saturday 02:00: over
    assert not rules.on_schedule(friday_night, local(28, 22), "UTC")  # Saturday 22:00: not a Friday
    assert not rules.on_schedule(friday_night, local(27, 1), "UTC")  # Friday 01:00: Thursday's window


def test_a_window_across_midnight_in_shanghai_from_utc_instants():
    # Friday 22:00 - 02:00 in Shanghai is Friday 14:00 - 18:00 UTC.
    friday_night = Schedule(days_of_week=(5,), start=time(22), until=time(2))
    assert rules.on_schedule(friday_night, datetime(2026, 11, 27, 17, 59, tzinfo=UTC), SHANGHAI)
    assert not rules.on_schedule(friday_night, datetime(2026, 11, 27, 18, 0, tzinfo=UTC), SHANGHAI)
    assert not rules.on_schedule(friday_night, datetime(2026, 11, 27, 13, 59, tzinfo=UTC), SHANGHAI)


def test_a_schedule_without_days_runs_every_day_and_without_until_runs_to_midnight():
    evenings = Schedule(start=time(20))
    assert rules.on_schedule(evenings, datetime(2026, 11, 24, 23, 59, tzinfo=UTC), "UTC")
    assert not rules.on_schedule(evenings, datetime(2026, 11, 24, 19, 59, tzinfo=UTC), "UTC")


# --- scope ----------------------------------------------------------------------------------------

def test_scope_keys_are_anded_and_values_inside_one_key_ored():
    p = promo(scope=Scope(stores=frozenset({"S1", "S2"}), tiers=frozenset({"gold", "diamond"})))
    assert awards([p], basket(store="S2", tier="gold"))
    assert awards([p], basket(store="S1", tier="diamond"))
    assert not awards([p], basket(store="S3", tier="gold"))
    assert not awards([p], basket(store="S1", tier="silver"))


def test_channels_tags_and_first_purchase():
    assert awards([promo(scope=Scope(channels=frozenset({"online"})))], basket(channel="ONLINE"))
    assert not awards([promo(scope=Scope(channels=frozenset({"online"})))], basket(channel="store"))
    tagged = promo(scope=Scope(tags=frozenset({"vip", "staff"})))
    assert awards([tagged], basket(tags=frozenset({"staff"})))
    assert not awards([tagged], basket(tags=frozenset({"complained"})))
    first = promo(scope=Scope(first_purchase_only=True), effect=Effect("bonus", points=D("100")))
    assert awards([first], basket(first=True)) == [(1, D("100.00"))]
    assert not awards([first], basket(first=False))


def test_categories_make_only_the_matching_items_count():
    beverages = promo(scope=Scope(categories=frozenset({"beverage"})), effect=Effect("multiplier", value=D("3")))
    items = [Item("TEA", "Beverage", D("30.00")), Item("CAKE", "bakery", D("50.00"))]
    found = rules.decide([beverages], basket("80.00", items), RULES, SHANGHAI)
    assert [(a.points, a.qualifying_amount) for a in found] == [(D("60.00"), D("30.00"))]
    assert not awards([beverages], basket("80.00"))  # no items: nothing matches


def test_categories_and_skus_are_two_keys_both_required_of_an_item():
    p = promo(scope=Scope(categories=frozenset({"beverage"}), skus=frozenset({"tea"})),
              effect=Effect("per_amount", points=D("1"), per=D("1.00")))
    items = [Item("TEA", "beverage", D("10.00")), Item("COLA", "beverage", D("5.00")), Item("TEA", "gift", D("7.00"))]
    assert awards([p], basket("22.00", items)) == [(1, D("10.00"))]


def test_items_the_earning_rules_exclude_never_qualify():
    strict = EarningRules(excluded_categories=("tobacco",))
    p = promo(effect=Effect("per_amount", points=D("1"), per=D("1.00")))
    items = [Item("CIG", "Tobacco", D("40.00")), Item("TEA", "beverage", D("10.00"))]
    assert [a.points for a in rules.decide([p], basket("50.00", items), strict, SHANGHAI)] == [D("10.00")]


def test_the_minimum_amount_is_of_the_qualifying_amount():
    p = promo(scope=Scope(min_amount=D("200.00")), effect=Effect("bonus", points=D("50")))
    assert awards([p], basket("200.00")) == [(1, D("50.00"))]
    assert awards([p], basket("199.99")) == []


# --- stacking, limits, budgets --------------------------------------------------------------------

def test_stacking_promotions_add_up_highest_priority_first():
    a = promo(1, Effect("bonus", points=D("10")), priority=1)
    b = promo(2, Effect("bonus", points=D("20")), priority=5)
    assert awards([a, b], basket()) == [(2, D("20.00")), (1, D("10.00"))]


def test_an_exclusive_promotion_wins_alone_by_priority_then_points():
    stack = promo(1, Effect("bonus", points=D("500")))
    low = promo(2, Effect("bonus", points=D("300")), stacking="exclusive", priority=1)
    high = promo(3, Effect("bonus", points=D("10")), stacking="exclusive", priority=2)
    rich = promo(4, Effect("bonus", points=D("20")), stacking="exclusive", priority=2)
    assert awards([stack, low], basket()) == [(2, D("300.00"))]
    assert awards([stack, low, high], basket()) == [(3, D("10.00"))]
    assert awards([stack, low, high, rich], basket()) == [(4, D("20.00"))]


def test_an_exclusive_promotion_that_does_not_match_leaves_the_stack_alone():
    stack = promo(1, Effect("bonus", points=D("5")))
    elsewhere = promo(2, Effect("bonus", points=D("50")), stacking="exclusive", scope=Scope(stores=frozenset({"S9"})))
    assert awards([stack, elsewhere], basket()) == [(1, D("5.00"))]


def test_a_used_up_member_limit_gives_nothing_and_lets_the_next_exclusive_win():
    first = promo(1, Effect("bonus", points=D("50")), stacking="exclusive", priority=9, per_member=1)
    second = promo(2, Effect("bonus", points=D("5")), stacking="exclusive", priority=1)
    assert awards([first, second], basket(), used={1: 0}) == [(1, D("50.00"))]
    assert awards([first, second], basket(), used={1: 1}) == [(2, D("5.00"))]


def test_a_budget_gives_what_is_left_then_nothing():
    p = promo(effect=Effect("bonus", points=D("50")), budget_points=D("120"))
    assert awards([p], basket(), budget_left={1: D("120")}) == [(1, D("50.00"))]
    assert awards([p], basket(), budget_left={1: D("20.50")}) == [(1, D("20.50"))]
    assert awards([p], basket(), budget_left={1: D("0")}) == []


def test_period_keys_follow_local_time():
    day = promo(per_member=1, per_member_period="day")
    whole = promo(per_member=1, per_member_period="promotion")
    late = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)  # 01:00 on the 25th in Shanghai
    assert rules.period_key(day, late, SHANGHAI) == "2026-11-25"
    assert rules.period_key(day, late, "UTC") == "2026-11-24"
    assert rules.period_key(promo(per_member=1, per_member_period="week"), late, SHANGHAI) == "2026-W48"
    assert rules.period_key(whole, late, SHANGHAI) == "all"
