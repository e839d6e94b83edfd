"""The tiers API as marketing, the tills, the member app and an admin use it: the ladder, editing a
rung of it, upgrades in the purchase's own answer, a member's tier page and a manual tier."""
import copy
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.audit import AuditEntry
from loyalty.extensions import db

D = Decimal
# 10:00 in Shanghai. The qualification window that ends today began at the start of 2025-03-11
# local time; a tier reached today is protected through 2027-03-10 local (until its end).
T0 = datetime(2026, 3, 10, 2, 0, tzinfo=timezone.utc)
T0_Z = "2026-03-10T02:00:00Z"
WINDOW_START = "2025-03-10T16:00:00Z"
PROTECTED_UNTIL = "2027-03-10T16:00:00Z"

ROLES = ("admin", "marketing", "pos", "app")
ORDINARY_BENEFITS = {"earn_multiplier": 1, "birthday_points": 0, "service_level": "Standard service",
                     "perks": []}
SILVER_BENEFITS = {"earn_multiplier": D("1.2"), "birthday_points": 20,
                   "service_level": "Priority queue at the service desk", "perks": ["free gift wrapping"]}


@pytest.fixture
def member_id(api):
    with clock.frozen_at(T0):
        response = api.post("app", "/members", json={"name": "Li Lei", "phone": "13800000001"})
    assert response.status_code == 201, response.json
    return response.json["id"]


def buy(api, member_id, amount, receipt_no, role="pos", **extra):
    response = api.post(role, "/purchases", json={"member_id": member_id, "receipt_no": receipt_no,
                                                   "amount": amount, **extra})
    assert response.status_code == 201, response.json
    return response.json


def ladder(api, role="marketing"):
    response = api.get(role, "/tiers")
    assert response.status_code == 200, response.json
    return response.json


def editable(api, code):
    """The body a client sends to PUT /tiers/{code}: the editable part of what GET answered."""
    tier = next(tier for tier in ladder(api) if tier["code"] == code)
    return copy.deepcopy({key: tier[key] for key in ("name", "qualification", "benefits")})


def member_tier(api, member_id, role="app"):
    response = api.get(role, f"/members/{member_id}/tier")
    assert response.status_code == 200, response.json
    return response.json


def audit_entries(app, action):
    with app.app_context():
        entries = [(entry.actor, entry.entity_type, entry.entity_id, entry.before, entry.after)
                   for entry in db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)
                                                   .order_by(AuditEntry.id))]
        db.session.remove()
    return entries


# --- GET /tiers -----------------------------------------------------------------------------------

def test_the_ladder_is_a_plain_list_of_the_four_tiers_lowest_rank_first(api):
    tiers = ladder(api, "app")

    assert isinstance(tiers, list)
    assert [(tier["code"], tier["name"], tier["rank"]) for tier in tiers] == [
        ("ordinary", "普通", 0), ("silver", "白银", 1), ("gold", "黄金", 2), ("diamond", "钻石", 3)]


def test_each_tier_shows_its_qualification_and_benefits(api):
    ordinary, silver, gold, diamond = ladder(api, "app")

    assert ordinary["qualification"] == {"spend": "0.00", "activities": 0, "mode": "all"}
    assert ordinary["benefits"] == ORDINARY_BENEFITS
    assert silver == {"code": "silver", "name": "白银", "rank": 1,
                      "qualification": {"spend": "3000.00", "activities": 0, "mode": "all"},
                      "benefits": SILVER_BENEFITS}
    assert gold["qualification"]["spend"] == "10000.00"
    assert gold["benefits"]["earn_multiplier"] == D("1.5")
    assert gold["benefits"]["perks"] == ["free gift wrapping", "free delivery"]
    assert diamond["qualification"]["spend"] == "30000.00"
    assert (diamond["benefits"]["earn_multiplier"], diamond["benefits"]["birthday_points"]) == (2, 100)
    assert diamond["benefits"]["service_level"] == "After-sales answered within 1 hour"


def test_spend_is_a_money_string_and_the_multiplier_a_json_number(api):
    raw = json.loads(api.get("app", "/tiers").get_data(as_text=True))  # plain json: floats, no Decimals

    silver = raw[1]
    assert silver["qualification"]["spend"] == "3000.00"
    assert silver["benefits"]["earn_multiplier"] == 1.2
    assert isinstance(silver["benefits"]["birthday_points"], int)
    assert raw[3]["benefits"]["earn_multiplier"] == 2


@pytest.mark.parametrize("role", ROLES)
def test_every_role_may_read_the_ladder(api, role):
    assert [tier["code"] for tier in ladder(api, role)] == ["ordinary", "silver", "gold", "diamond"]


def test_the_ladder_is_not_shown_without_a_key(client):
    response = client.get("/api/v1/tiers")

    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"


# --- PUT /tiers/{code} ----------------------------------------------------------------------------

def new_silver(api):
    body = editable(api, "silver")
    body["name"] = "银卡"
    body["qualification"] = {"spend": "2500.00", "activities": 0, "mode": "any"}
    body["benefits"] = {"earn_multiplier": D("1.25"), "birthday_points": D("30.5"),
                        "service_level": "Priority queue and a callback", "perks": ["free gift wrapping",
                                                                                     "free parking"]}
    return body


@pytest.mark.parametrize("role", ["marketing", "admin"])
def test_marketing_or_an_admin_changes_a_tier_and_gets_it_back(api, role):
    body = new_silver(api)

    response = api.put(role, "/tiers/silver", json=body)

    assert response.status_code == 200, response.json
    assert response.json == {"code": "silver", "rank": 1, **body}
    assert ladder(api, "app")[1] == response.json
    assert [tier["code"] for tier in ladder(api)] == ["ordinary", "silver", "gold", "diamond"]


def test_a_tier_change_is_in_the_audit_log_with_before_and_after(api, app):
    api.put("marketing", "/tiers/silver", json=new_silver(api))

    [(actor, entity_type, entity_id, before, after)] = audit_entries(app, "tier.update")
    assert "test marketing" in actor and "marketing" in actor
    assert (entity_type, entity_id) == ("tier", "silver")
    assert before["name"] == "白银" and after["name"] == "银卡"
    assert before["qualification"] == {"spend": "3000.00", "activities": 0, "mode": "all"}
    assert after["qualification"] == {"spend": "2500.00", "activities": 0, "mode": "any"}
    assert D(before["benefits"]["earn_multiplier"]) == D("1.2")
    assert D(after["benefits"]["earn_multiplier"]) == D("1.25")
    assert after["benefits"]["perks"] == ["free gift wrapping", "free parking"]


def thresholds_below_the_tier_under_it(body):
    body["qualification"]["spend"] = "2000.00"  # gold below silver's 3000.00


def thresholds_equal_to_the_tier_under_it(body):
    body["qualification"]["spend"] = "3000.00"  # gold the same as silver


def multiplier_below_one(body):
    body["benefits"]["earn_multiplier"] = D("0.9")


def multiplier_below_the_tier_under_it(body):
    body["benefits"]["earn_multiplier"] = D("1.1")  # silver earns 1.2


def mode_neither_all_nor_any(body):
    body["qualification"]["mode"] = "either"


def negative_spend(body):
    body["qualification"]["spend"] = "-1.00"


def spend_as_a_float_with_three_places(body):
    body["qualification"]["spend"] = "10000.005"


def an_unknown_field(body):
    body["colour"] = "gold"


def an_unknown_qualification_field(body):
    body["qualification"]["window_months"] = 6


def no_benefits(body):
    del body["benefits"]


def no_qualifying_spend(body):
    del body["qualification"]["spend"]


def an_empty_name(body):
    body["name"] = ""


# (how the body of PUT /tiers/gold is spoiled, what the message says, what `errors` says)
REFUSED_GOLD = [
    (thresholds_below_the_tier_under_it, "The gold thresholds must not be below the silver ones.",
     {"tier": ["The gold thresholds must not be below the silver ones."]}),
    (thresholds_equal_to_the_tier_under_it, "The gold thresholds must be above the silver ones.",
     {"tier": ["The gold thresholds must be above the silver ones."]}),
    (multiplier_below_one, "see 'errors'",
     {"benefits": {"earn_multiplier": ["Must be greater than or equal to 1 and less than or equal to 10."]}}),
    (multiplier_below_the_tier_under_it, "The gold earn multiplier must not be below the silver one.",
     {"tier": ["The gold earn multiplier must not be below the silver one."]}),
    (mode_neither_all_nor_any, "see 'errors'", {"qualification": {"mode": ["Must be one of: all, any."]}}),
    (negative_spend, "see 'errors'", {"qualification": {"spend": ["Must not be negative."]}}),
    (spend_as_a_float_with_three_places, "see 'errors'",
     {"qualification": {"spend": ["Must have at most 2 decimal places."]}}),
    (an_unknown_field, "see 'errors'", {"colour": ["Unknown field."]}),
    (an_unknown_qualification_field, "see 'errors'", {"qualification": {"window_months": ["Unknown field."]}}),
    (no_benefits, "see 'errors'", {"benefits": ["Missing data for required field."]}),
    (no_qualifying_spend, "see 'errors'", {"qualification": {"spend": ["Missing data for required field."]}}),
    (an_empty_name, "see 'errors'", {"name": ["Length must be between 1 and 50."]}),
]


@pytest.mark.parametrize("spoil, message, errors", REFUSED_GOLD, ids=[spoil.__name__ for spoil, *_ in REFUSED_GOLD])
def test_a_tier_change_that_breaks_the_ladder_or_the_schema_is_refused_and_changes_nothing(
        api, app, spoil, message, errors):
    before = ladder(api)
    body = editable(api, "gold")
    body["name"] = "金卡"  # a valid change riding along with the invalid one
    spoil(body)

    response = api.put("marketing", "/tiers/gold", json=body)

    assert response.status_code == 422, response.json
    assert response.json["error"] == "validation_error"
    assert message in response.json["message"]
    assert response.json["errors"] == errors
    assert ladder(api) == before
    assert audit_entries(app, "tier.update") == []


def test_the_lowest_tier_may_not_ask_for_anything(api):
    before = ladder(api)
    body = editable(api, "ordinary")
    body["qualification"]["spend"] = "100.00"

    response = api.put("marketing", "/tiers/ordinary", json=body)

    assert response.status_code == 422
    assert response.json["message"] == ("The ordinary tier is where every member starts: its spend and "
                                         "activities must both be 0.")
    assert ladder(api) == before


def test_a_higher_tier_may_not_ask_for_nothing(api):
    body = editable(api, "gold")
    body["qualification"] = {"spend": "0.00", "activities": 0, "mode": "all"}

    response = api.put("marketing", "/tiers/gold", json=body)

    assert response.status_code == 422
    assert "The gold tier needs a spend or an activity threshold above 0." in response.json["message"]


def test_only_the_editable_part_is_accepted_so_code_and_rank_cannot_be_changed(api):
    body = {**editable(api, "gold"), "code": "platinum", "rank": 9}

    response = api.put("marketing", "/tiers/gold", json=body)

    assert response.status_code == 422
    assert set(response.json["errors"]) == {"code", "rank"}
    assert [(tier["code"], tier["rank"]) for tier in ladder(api)][2] == ("gold", 2)


def put_qualification(api, code, spend, activities, mode):
    body = editable(api, code)
    body["qualification"] = {"spend": spend, "activities": activities, "mode": mode}
    response = api.put("marketing", f"/tiers/{code}", json=body)
    assert response.status_code == 200, response.json
    return response.json


def test_tiers_may_count_activities_as_well_as_spend(api):
    put_qualification(api, "diamond", "30000.00", 20, "all")
    put_qualification(api, "gold", "10000.00", 10, "all")
    silver = put_qualification(api, "silver", "3000.00", 3, "any")

    assert silver["qualification"] == {"spend": "3000.00", "activities": 3, "mode": "any"}
    assert [tier["qualification"]["activities"] for tier in ladder(api, "app")] == [0, 3, 10, 20]


def test_a_tier_may_count_activities_though_the_tier_above_counts_only_spend(api):
    # A threshold of 0 means the tier does not ask for that figure: gold (spend only) is not
    # "below" a silver that can also be reached by 12 activities.
    response = api.put("marketing", "/tiers/silver", json={**editable(api, "silver"), "qualification": {
        "spend": "3000.00", "activities": 12, "mode": "any"}})

    assert response.status_code == 200, response.json
    assert response.json["qualification"] == {"spend": "3000.00", "activities": 12, "mode": "any"}


def test_an_unknown_tier_is_a_404_naming_the_tiers(api):
    response = api.put("marketing", "/tiers/platinum", json=editable(api, "gold"))

    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    assert "ordinary, silver, gold, diamond" in response.json["message"]


@pytest.mark.parametrize("role", ["pos", "app"])
def test_a_till_or_the_app_may_not_change_a_tier(api, app, role):
    before = ladder(api)

    response = api.put(role, "/tiers/silver", json=new_silver(api))

    assert response.status_code == 403
    assert response.json["error"] == "forbidden"
    assert ladder(api) == before
    assert audit_entries(app, "tier.update") == []


def test_a_tier_change_needs_a_key(client, api):
    response = client.put("/api/v1/tiers/silver", json=new_silver(api))

    assert response.status_code == 401


# --- upgrades in the purchase's own answer ------------------------------------------------------

def test_the_purchase_that_crosses_silver_answers_with_the_new_tier(api, member_id):
    with clock.frozen_at(T0):
        below = buy(api, member_id, "2999.99", "R1")
        crossing = buy(api, member_id, "0.01", "R2")

    assert below["member"]["tier"] == {"code": "ordinary", "name": "普通"}
    assert crossing["member"]["tier"] == {"code": "silver", "name": "白银"}
    assert crossing["points_earned"] == D("0.01")  # the crossing purchase earns at the old multiplier
    assert api.get("pos", f"/members/{member_id}").json["tier"] == {"code": "silver", "name": "白银"}


def test_one_big_purchase_goes_straight_to_diamond(api, member_id):
    with clock.frozen_at(T0):
        bought = buy(api, member_id, "35000.00", "R1")
        page = member_tier(api, member_id)

    assert bought["member"]["tier"] == {"code": "diamond", "name": "钻石"}
    assert bought["points_earned"] == 35000
    assert [(change["from"], change["to"], change["reason"]) for change in page["history"]] == [
        ("ordinary", "diamond", "upgrade")]


@pytest.mark.parametrize("benefit, value, accepted", [
    ("earn_multiplier", 10, True), ("earn_multiplier", "10.01", False), ("earn_multiplier", 100, False),
    ("birthday_points", 100000, True), ("birthday_points", "100000.01", False), ("birthday_points", 10**9, False)])
def test_tier_benefits_have_documented_bounds(api, benefit, value, accepted):
    body = editable(api, "diamond")
    body["benefits"][benefit] = value

    response = api.put("marketing", "/tiers/diamond", json=body)

    assert response.status_code == (200 if accepted else 422), response.json
    if not accepted:
        assert benefit in response.json["errors"]["benefits"]
        assert api.get("app", "/tiers").json[3]["benefits"][benefit] == (2 if benefit == "earn_multiplier" else 100)


def test_the_largest_purchase_at_the_largest_rate_and_multiplier_earns_without_overflow(api, member_id):
    body = editable(api, "diamond")
    body["benefits"]["earn_multiplier"] = 10
    assert api.put("marketing", "/tiers/diamond", json=body).status_code == 200
    rules = api.get("marketing", "/earning-rules").json
    assert api.put("marketing", "/earning-rules", json={**rules, "points_per_unit": 100}).status_code == 200
    api.put("admin", f"/members/{member_id}/tier", json={"tier": "diamond", "reason": "VIP"})

    bought = buy(api, member_id, "99999999.99", "R-MAX")
    refund = api.post("pos", f"/purchases/{bought['purchase_id']}/refunds",
                      json={"refund_no": "F1", "amount": "33333333.33"})

    assert bought["points_earned"] == Decimal("99999999990")  # 1e8 x 100 x 10, to the cent
    assert refund.status_code == 201, refund.json
    assert refund.json["points_reversed"] == Decimal("33333333330")


def test_the_new_multiplier_applies_from_the_next_purchase(api, member_id):
    crossing = buy(api, member_id, "3000.00", "R1")
    next_one = buy(api, member_id, "100.00", "R2")

    assert crossing["points_earned"] == 3000
    assert next_one["points_earned"] == 120
    assert next_one["member"]["points"]["available"] == 3120


def test_a_replayed_crossing_purchase_upgrades_once(api, member_id):
    first = buy(api, member_id, "3000.00", "R1")
    again = buy(api, member_id, "3000.00", "R1")

    assert again["purchase_id"] == first["purchase_id"]
    assert again["member"]["tier"]["code"] == "silver"
    assert [change["to"] for change in member_tier(api, member_id)["history"]] == ["silver"]


def test_only_purchases_inside_the_window_count_towards_a_tier(api, member_id):
    with clock.frozen_at(T0):
        before = buy(api, member_id, "10000.00", "R1", occurred_at="2025-03-10T15:59:59Z")  # a second early
        inside = buy(api, member_id, "3000.00", "R2", occurred_at=WINDOW_START)
        page = member_tier(api, member_id)

    assert before["member"]["tier"]["code"] == "ordinary"
    assert inside["member"]["tier"]["code"] == "silver"
    assert page["qualifying"]["spend"] == "3000.00"


def test_a_refund_lowers_the_qualifying_spend_but_downgrades_no_one_whose_tier_it_did_not_buy(api, member_id):
    buy(api, member_id, "3000.00", "R1")
    later = buy(api, member_id, "1000.00", "R2")

    refund = api.post("pos", f"/purchases/{later['purchase_id']}/refunds", json={"refund_no": "F1",
                                                                                  "amount": "1000.00"})
    page = member_tier(api, member_id)

    assert refund.status_code == 201
    assert refund.json["member"]["tier"]["code"] == "silver"
    assert page["tier"]["code"] == "silver"
    assert page["qualifying"]["spend"] == "3000.00"
    assert page["keep"] == {"spend_needed": "0.00", "activities_needed": 0}
    assert page["next"]["spend_needed"] == "7000.00"


def test_a_refund_that_returns_the_spend_of_an_upgrade_undoes_it_in_its_own_answer(api, member_id):
    bought = buy(api, member_id, "3000.00", "R1")

    refund = api.post("pos", f"/purchases/{bought['purchase_id']}/refunds", json={"refund_no": "F1",
                                                                                   "amount": "1000.00"})
    page = member_tier(api, member_id)

    assert refund.status_code == 201
    assert refund.json["member"]["tier"]["code"] == "ordinary"
    assert page["tier"]["code"] == "ordinary" and page["valid_until"] is None
    assert page["qualifying"]["spend"] == "2000.00"
    assert [(h["from"], h["to"], h["reason"], h["purchase_id"]) for h in page["history"]] == [
        ("silver", "ordinary", "refund", bought["purchase_id"]),
        ("ordinary", "silver", "upgrade", bought["purchase_id"])]
    assert "refunded" in page["history"][0]["note"]


def activity(api, member_id, type_, event_id):
    response = api.post("app", f"/members/{member_id}/activities", json={"type": type_, "event_id": event_id})
    assert response.status_code == 201, response.json
    return response.json


def test_the_activity_that_crosses_a_threshold_answers_with_the_new_tier(api, member_id):
    put_qualification(api, "diamond", "30000.00", 20, "all")
    put_qualification(api, "gold", "10000.00", 10, "all")
    put_qualification(api, "silver", "3000.00", 3, "any")

    with clock.frozen_at(T0):
        first = activity(api, member_id, "sign_in", "E1")
        capped = activity(api, member_id, "sign_in", "E2")  # one sign-in a day: does not count
        second = activity(api, member_id, "share", "E3")
        third = activity(api, member_id, "share", "E4")
        page = member_tier(api, member_id)

    assert capped["capped"] is True
    assert [answer["member"]["tier"]["code"] for answer in (first, capped, second)] == ["ordinary"] * 3
    assert third["member"]["tier"] == {"code": "silver", "name": "白银"}
    assert page["qualifying"]["activities"] == 3
    assert page["next"] == {"code": "gold", "name": "黄金", "mode": "all", "spend_needed": "10000.00",
                            "activities_needed": 7}


def test_a_gold_member_earns_one_and_a_half_times(api, member_id):
    buy(api, member_id, "10000.00", "R1")

    assert buy(api, member_id, "99.99", "R2")["points_earned"] == D("149.98")  # 149.985 rounded down


def test_a_changed_tier_applies_to_the_next_purchase(api, member_id):
    buy(api, member_id, "3000.00", "R1")
    body = editable(api, "silver")
    body["name"] = "银卡"
    body["benefits"]["earn_multiplier"] = D("1.25")
    assert api.put("marketing", "/tiers/silver", json=body).status_code == 200

    bought = buy(api, member_id, "100.00", "R2")

    assert bought["points_earned"] == 125
    assert bought["member"]["tier"] == {"code": "silver", "name": "银卡"}


def test_a_lowered_threshold_upgrades_at_the_next_purchase(api, member_id):
    buy(api, member_id, "2500.00", "R1")
    body = editable(api, "silver")
    body["qualification"]["spend"] = "2000.00"
    assert api.put("marketing", "/tiers/silver", json=body).status_code == 200

    bought = buy(api, member_id, "1.00", "R2")

    assert bought["points_earned"] == 1
    assert bought["member"]["tier"]["code"] == "silver"


# --- GET /members/{id}/tier -----------------------------------------------------------------------

def test_a_new_member_is_ordinary_and_is_told_what_silver_needs(api, member_id):
    with clock.frozen_at(T0):
        page = member_tier(api, member_id)

    assert page == {
        "tier": {"code": "ordinary", "name": "普通", "rank": 0, "benefits": ORDINARY_BENEFITS},
        "since": T0_Z,
        "valid_until": None,
        "guaranteed": None,
        "qualifying": {"spend": "0.00", "activities": 0, "window_start": WINDOW_START},
        "keep": {"spend_needed": "0.00", "activities_needed": 0},
        "next": {"code": "silver", "name": "白银", "mode": "all", "spend_needed": "3000.00",
                 "activities_needed": 0},
        "history": [],
    }


def test_a_silver_member_sees_since_when_until_when_and_what_gold_needs(api, member_id):
    with clock.frozen_at(T0):
        buy(api, member_id, "4000.00", "R1")
        page = member_tier(api, member_id)

    assert page["tier"] == {"code": "silver", "name": "白银", "rank": 1, "benefits": SILVER_BENEFITS}
    assert (page["since"], page["valid_until"]) == (T0_Z, PROTECTED_UNTIL)
    assert page["qualifying"] == {"spend": "4000.00", "activities": 0, "window_start": WINDOW_START}
    assert page["keep"] == {"spend_needed": "0.00", "activities_needed": 0}
    assert page["next"] == {"code": "gold", "name": "黄金", "mode": "all", "spend_needed": "6000.00",
                            "activities_needed": 0}
    [change] = page["history"]
    assert {key: change[key] for key in ("from", "to", "reason", "at")} == {
        "from": "ordinary", "to": "silver", "reason": "upgrade", "at": T0_Z}
    assert "4000.00" in change["note"]


def test_spend_outside_the_window_does_not_count(api, member_id):
    with clock.frozen_at(T0):
        buy(api, member_id, "1000.00", "R1")
    with clock.frozen_at(T0 + timedelta(days=366)):
        page = member_tier(api, member_id)

    assert page["qualifying"]["spend"] == "0.00"
    assert page["next"]["spend_needed"] == "3000.00"


def test_at_diamond_there_is_no_next_tier(api, member_id):
    buy(api, member_id, "35000.00", "R1")

    page = member_tier(api, member_id)

    assert page["tier"]["code"] == "diamond"
    assert page["tier"]["benefits"]["earn_multiplier"] == 2
    assert page["next"] is None


def test_the_tier_history_is_newest_first(api, member_id):
    with clock.frozen_at(T0):
        buy(api, member_id, "3000.00", "R1")
    with clock.frozen_at(T0 + timedelta(days=1)):
        buy(api, member_id, "7000.00", "R2")
    with clock.frozen_at(T0 + timedelta(days=2)):
        api.put("admin", f"/members/{member_id}/tier", json={"tier": "diamond", "reason": "Brand ambassador"})
        page = member_tier(api, member_id)

    assert [{key: change[key] for key in ("from", "to", "reason", "at")} for change in page["history"]] == [
        {"from": "gold", "to": "diamond", "reason": "manual", "at": "2026-03-12T02:00:00Z"},
        {"from": "silver", "to": "gold", "reason": "upgrade", "at": "2026-03-11T02:00:00Z"},
        {"from": "ordinary", "to": "silver", "reason": "upgrade", "at": T0_Z},
    ]
    assert page["history"][0]["note"] == "Brand ambassador"


@pytest.mark.parametrize("role", ROLES)
def test_every_role_may_read_a_members_tier(api, member_id, role):
    assert member_tier(api, member_id, role)["tier"]["code"] == "ordinary"


def test_an_unknown_members_tier_is_a_404(api, member_id):
    response = api.get("app", "/members/999999/tier")

    assert response.status_code == 404
    assert response.json["error"] == "not_found"
    assert "999999" in response.json["message"]


def test_a_members_tier_is_not_shown_without_a_key(client, member_id):
    assert client.get(f"/api/v1/members/{member_id}/tier").status_code == 401


# --- PUT /members/{id}/tier -----------------------------------------------------------------------

def test_an_admin_puts_a_member_in_a_tier_with_a_reason_and_a_guarantee(api, app, member_id):
    with clock.frozen_at(T0):
        response = api.put("admin", f"/members/{member_id}/tier",
                           json={"tier": "gold", "reason": "Compensation for a lost parcel",
                                 "guaranteed_until": "2027-06-30"})

    assert response.status_code == 200, response.json
    page = response.json
    assert page["tier"]["code"] == "gold" and page["tier"]["name"] == "黄金" and page["tier"]["rank"] == 2
    assert page["since"] == T0_Z
    assert page["guaranteed"] == {"tier": "gold", "until": "2027-06-30T16:00:00Z"}  # through the local day
    assert page["valid_until"] == "2027-06-30T16:00:00Z"
    assert page["next"]["code"] == "diamond"
    assert page["history"] == [{"from": "ordinary", "to": "gold", "reason": "manual",
                                "note": "Compensation for a lost parcel", "purchase_id": None, "at": T0_Z}]
    assert api.get("app", f"/members/{member_id}").json["tier"] == {"code": "gold", "name": "黄金"}
    [(actor, entity_type, entity_id, before, after)] = audit_entries(app, "member.tier.set")
    assert "test admin" in actor
    assert (entity_type, entity_id) == ("member", str(member_id))
    assert before == {"tier": "ordinary", "guaranteed_tier": None, "guaranteed_until": None}
    assert after["tier"] == "gold" and after["reason"] == "Compensation for a lost parcel"


def test_without_a_guarantee_a_manual_tier_holds_for_the_protection_period(api, member_id):
    with clock.frozen_at(T0):
        response = api.put("admin", f"/members/{member_id}/tier", json={"tier": "silver", "reason": "Staff"})

    assert response.status_code == 200, response.json
    assert response.json["guaranteed"] is None
    assert response.json["valid_until"] == PROTECTED_UNTIL


def test_a_manual_tier_earns_its_multiplier_on_the_next_purchase(api, member_id):
    api.put("admin", f"/members/{member_id}/tier", json={"tier": "diamond", "reason": "VIP"})

    assert buy(api, member_id, "100.00", "R1")["points_earned"] == 200


def test_a_guarantee_may_end_today_in_local_time_but_not_yesterday(api, member_id):
    # 04:00 on 11 March in Shanghai, still 10 March in UTC: "today" is the 11th.
    with clock.frozen_at(datetime(2026, 3, 10, 20, 0, tzinfo=timezone.utc)):
        yesterday = api.put("admin", f"/members/{member_id}/tier",
                            json={"tier": "gold", "reason": "Promotion", "guaranteed_until": "2026-03-10"})
        today = api.put("admin", f"/members/{member_id}/tier",
                        json={"tier": "gold", "reason": "Promotion", "guaranteed_until": "2026-03-11"})

    assert yesterday.status_code == 422
    assert yesterday.json["errors"] == {"guaranteed_until": ["Must not be in the past."]}
    assert today.status_code == 200
    assert today.json["guaranteed"] == {"tier": "gold", "until": "2026-03-11T16:00:00Z"}


REFUSED_MANUAL = [
    ({"tier": "platinum", "reason": "VIP"}, {"tier": ["Must be one of: ordinary, silver, gold, diamond."]}),
    ({"tier": "gold", "reason": "VIP", "guaranteed_until": "2026-03-09"},
     {"guaranteed_until": ["Must not be in the past."]}),
    ({"tier": "gold"}, {"reason": ["Missing data for required field."]}),
    ({"tier": "gold", "reason": ""}, {"reason": ["Length must be between 1 and 200."]}),
    ({"reason": "VIP"}, {"tier": ["Missing data for required field."]}),
    ({"tier": "gold", "reason": "VIP", "guaranteed_until": "30/06/2027"}, {"guaranteed_until": ["Not a valid date."]}),
    ({"tier": "gold", "reason": "VIP", "held_until": "2027-06-30"}, {"held_until": ["Unknown field."]}),
]


@pytest.mark.parametrize("body, errors", REFUSED_MANUAL)
def test_a_manual_tier_that_makes_no_sense_is_refused_and_changes_nothing(api, app, member_id, body, errors):
    with clock.frozen_at(T0):
        response = api.put("admin", f"/members/{member_id}/tier", json=body)
        page = member_tier(api, member_id)

    assert response.status_code == 422, response.json
    assert response.json["error"] == "validation_error"
    assert response.json["errors"] == errors
    assert response.json["message"]
    assert page["tier"]["code"] == "ordinary" and page["history"] == []
    assert audit_entries(app, "member.tier.set") == []


def test_an_unknown_tier_names_the_tiers_to_choose_from(api, member_id):
    response = api.put("admin", f"/members/{member_id}/tier", json={"tier": "platinum", "reason": "VIP"})

    assert response.json["message"] == "No tier 'platinum'; choose one of: ordinary, silver, gold, diamond."


def test_a_manual_tier_for_an_unknown_member_is_a_404(api):
    response = api.put("admin", "/members/999999/tier", json={"tier": "gold", "reason": "VIP"})

    assert response.status_code == 404
    assert response.json["error"] == "not_found"


@pytest.mark.parametrize("role", ["marketing", "app", "pos"])
def test_only_an_admin_may_set_a_members_tier(api, app, member_id, role):
    response = api.put(role, f"/members/{member_id}/tier", json={"tier": "diamond", "reason": "Self-service"})

    assert response.status_code == 403
    assert response.json["error"] == "forbidden"
    assert member_tier(api, member_id)["tier"]["code"] == "ordinary"
    assert audit_entries(app, "member.tier.set") == []


# --- the OpenAPI document -------------------------------------------------------------------------

@pytest.mark.parametrize("path, methods", [
    ("/api/v1/tiers", {"get"}),
    ("/api/v1/tiers/{code}", {"put"}),
    ("/api/v1/members/{member_id}/tier", {"get", "put"}),
])
def test_the_openapi_document_describes_the_tier_paths(client, path, methods):
    spec = client.get("/api/v1/openapi.json").json

    assert path in spec["paths"]
    assert methods <= set(spec["paths"][path])
    for method in methods:
        assert spec["paths"][path][method]["summary"]
        assert "200" in spec["paths"][path][method]["responses"]
