"""The figures the console adds to the reports: earned and burned per local day, every segment
with its count; and the one search box that finds a member by whatever staff type."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from loyalty import clock
from loyalty.errors import ValidationFailed
from loyalty.members import service as members
from loyalty.points import service as points
from loyalty.rewards import service as rewards
from loyalty.segments import service as segments
from tests import factories

# 12:00 in Shanghai on 1 September 2026; a local day starts at 16:00 UTC the day before.
NOW = datetime(2026, 9, 1, 4, 0, tzinfo=timezone.utc)


def test_daily_flows_put_each_entry_on_its_local_day_earned_and_burned(ctx):
    with clock.frozen_at(NOW - timedelta(days=3)):
        member = factories.member()
        factories.purchase(member.id, "100.00")  # 29 August: earned 100
    with clock.frozen_at(datetime(2026, 8, 31, 15, 59, tzinfo=timezone.utc)):  # 23:59 on 31 August, local
        points.record_activity(member.id, "sign_in", "e1")  # earned 0.5
    with clock.frozen_at(datetime(2026, 8, 31, 16, 0, tzinfo=timezone.utc)):  # 00:00 on 1 September, local
        reward = rewards.create_reward({"name": "Cup", "kind": "goods", "points_cost": Decimal("30")}, "test")
        rewards.redeem(member.id, reward.id)  # burned 30
        points.adjust_points(member.id, Decimal("5"), "kind", "test")  # an adjustment: neither
    days = {day["day"]: day for day in segments.daily_flows(30, now=NOW)}
    assert len(days) == 30 and min(days) == "2026-08-03" and max(days) == "2026-09-01"
    assert days["2026-08-29"] == {"day": "2026-08-29", "earned": Decimal("100.00"), "burned": Decimal("0.00")}
    assert days["2026-08-31"]["earned"] == Decimal("0.50")
    assert days["2026-09-01"] == {"day": "2026-09-01", "earned": Decimal("0.00"), "burned": Decimal("30.00")}
    assert sum(day["earned"] for day in days.values()) == Decimal("100.50")


def test_segment_counts_list_every_stage_segment_tier_and_tag(ctx):
    first, second = factories.member(), factories.member()
    segments.add_tags(first.id, ["vip"], "test")
    segments.add_tags(second.id, ["vip", "staff"], "test")
    counts = segments.segment_counts()
    assert [stage for stage, _ in counts["stages"]] == list(segments.STAGES)
    assert dict(counts["tiers"]) == {"ordinary": 2, "silver": 0, "gold": 0, "diamond": 0}
    assert counts["tags"] == [("staff", 1), ("vip", 2)]


@pytest.mark.parametrize("typed", ["+86 138 0013 8000", "13800138000", "0086-138-0013-8000", "WANG@example.com "])
def test_search_finds_a_member_by_phone_in_any_spelling_or_email(ctx, typed):

    member = factories.member(phone="+8613800138000", email="wang@example.com")
    assert [m.id for m in members.search(typed)] == [member.id]


def test_search_finds_by_member_number_and_card_token_and_refuses_nothing_typed(ctx):

    member = factories.member()
    assert members.search(member.member_no) == [member]
    assert members.search(member.card_token) == [member]
    assert members.search("81234567890") == []  # a member number's shape, but nobody's
    with pytest.raises(ValidationFailed):
        members.search("   ")
