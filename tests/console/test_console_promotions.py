"""The console's Promotions pages: who may open them, the list by status and its pages, create and
edit forms for every field (the API's schemas and the service's rules, messages next to the fields,
the staff member as the audit actor), stop after a confirmation, a promotion's stats, the simulator
(the same answer as quote_purchase) and the dashboard's active promotions."""
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.audit import AuditEntry
from loyalty.extensions import db
from loyalty.points.service import quote_purchase
from loyalty.promotions import service as promotions
from loyalty.promotions.models import Promotion
from tests import factories
from tests.console.conftest import text

ADMIN_ACTOR = "staff:alice@example.com (admin)"
MARKETING_ACTOR = "staff:mark@example.com (marketing)"
LONG_AGO = datetime(2020, 1, 1, tzinfo=timezone.utc)
D = Decimal

DOUBLE = {"name": "Double points weekend", "status": "active", "starts_at": "2020-01-01T00:00",
          "effect.type": "multiplier", "effect.value": "2", "stacking": "stack", "priority": "0"}


def make_promotion(app, **fields):
    values = {"name": "Double points", "status": "active", "starts_at": LONG_AGO,
              "effect": {"type": "multiplier", "value": D("2")}, **fields}
    with app.app_context():
        promotion = promotions.create_promotion(values, actor="test")
        db.session.remove()
    return promotion.id


def stored(app, promotion_id=None):
    with app.app_context():
        query = sa.select(Promotion).order_by(Promotion.id)
        rows = db.session.scalars(query).all()
        db.session.remove()
    return rows if promotion_id is None else next(row for row in rows if row.id == promotion_id)


def audit_actions(app, prefix="promotion"):
    with app.app_context():
        rows = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action.startswith(prefix))
                                  .order_by(AuditEntry.id)).all()
        db.session.remove()
    return [(row.action, row.actor) for row in rows if row.actor != "test"]  # not make_promotion's


# --- who may open what ----------------------------------------------------------------------------

@pytest.mark.parametrize("who", ["admin", "marketing"])
def test_marketing_and_admin_open_every_promotions_page(request, app, who):
    browser = request.getfixturevalue(who)
    promotion_id = make_promotion(app)
    for path in ("/console/promotions", "/console/promotions?status=ended", "/console/promotions/new",
                 "/console/promotions/simulate", f"/console/promotions/{promotion_id}",
                 f"/console/promotions/{promotion_id}/edit", f"/console/promotions/{promotion_id}/stop"):
        assert browser.get(path).status_code == 200, path
    assert ">Promotions<" in text(browser.get("/console/?lang=en"))


def test_signed_out_a_promotions_page_asks_to_sign_in(browser):
    response = browser.get("/console/promotions/new")
    assert response.status_code == 302 and "/console/sign-in" in response.location


def test_every_field_of_the_promotion_pages_has_a_label(admin, app):
    promotion_id = make_promotion(app)
    for path in ("/console/promotions", "/console/promotions/new", "/console/promotions/simulate",
                 f"/console/promotions/{promotion_id}/edit"):
        page = text(admin.get(path))
        for field_id in set(re.findall(r'<(?:input|select|textarea) id="(f-[^"]+)"', page)):
            assert f'<label for="{field_id}">' in page, (path, field_id)


def test_a_form_without_the_csrf_token_is_refused_and_changes_nothing(app, marketing):
    promotion_id = make_promotion(app)
    assert marketing.post("/console/promotions/new", DOUBLE, token=False).status_code == 400
    assert marketing.post(f"/console/promotions/{promotion_id}/stop", token=False).status_code == 400
    assert marketing.post(f"/console/promotions/{promotion_id}/edit", {**DOUBLE, "name": "x"},
                          token=False).status_code == 400
    assert [(p.name, p.status) for p in stored(app)] == [("Double points", "active")]


def test_a_missing_promotion_is_a_404_page(admin):
    for path in ("/console/promotions/999999", "/console/promotions/999999/edit", "/console/promotions/999999/stop"):
        response = admin.get(path)
        assert response.status_code == 404 and response.mimetype == "text/html", path


# --- create and edit ------------------------------------------------------------------------------

def test_marketing_creates_a_double_points_promotion_audit_logged_as_the_staff_member(app, marketing):
    now = clock.now().astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%dT")
    assert f'name="starts_at" type="datetime-local" value="{now}' in text(marketing.get("/console/promotions/new"))
    response = marketing.post("/console/promotions/new", DOUBLE)
    assert response.status_code == 302, text(response)
    (promotion,) = stored(app)
    assert response.location == f"/console/promotions/{promotion.id}"
    assert (promotion.name, promotion.status, promotion.effect) == ("Double points weekend", "active",
                                                                    {"type": "multiplier", "value": "2.00"})
    assert promotion.scope is None and promotion.schedule is None and promotion.per_member is None
    assert clock.as_utc(promotion.starts_at) == datetime(2019, 12, 31, 16, tzinfo=timezone.utc)  # Shanghai time
    assert audit_actions(app) == [("promotion.create", MARKETING_ACTOR)]
    page = text(marketing.get(f"/console/promotions/{promotion.id}?lang=en"))
    assert "Double points weekend" in page and "2× points" in page and "Promotion created." in page


def test_every_field_of_a_promotion_is_set_from_the_form(app, admin):
    form = {**DOUBLE, "name": "Tea time", "status": "draft", "ends_at": "2030-01-01T00:00",
            "schedule.days_of_week": ["6", "7"], "schedule.from": "14:00", "schedule.until": "17:30",
            "scope.stores": "S1, S2", "scope.channels": "store，online", "scope.tiers": ["gold", "diamond"],
            "scope.tags": "vip", "scope.categories": "tea\ncakes", "scope.skus": "", "scope.min_amount": "30.00",
            "scope.first_purchase_only": "1", "effect.type": "per_amount", "effect.value": "3",
            "effect.points": "10", "effect.per": "100.00", "limits.per_member": "2", "limits.per_member_period": "week",
            "limits.budget_points": "50000", "stacking": "exclusive", "priority": "-5"}
    response = admin.post("/console/promotions/new", form)
    assert response.status_code == 302, text(response)
    (promotion,) = stored(app)
    assert promotion.status == "draft" and promotion.ends_at is not None
    assert promotion.schedule == {"days_of_week": [6, 7], "from": "14:00", "until": "17:30"}
    assert promotion.scope == {"stores": ["S1", "S2"], "channels": ["store", "online"], "tiers": ["gold", "diamond"],
                               "tags": ["vip"], "categories": ["tea", "cakes"], "min_amount": "30.00",
                               "first_purchase_only": True}
    # the multiplier's box still held a number: only the chosen effect's values are sent
    assert promotion.effect == {"type": "per_amount", "points": "10.00", "per": "100.00"}
    assert (promotion.per_member, promotion.per_member_period, promotion.budget_points) == (2, "week", D("50000.00"))
    assert (promotion.stacking, promotion.priority) == ("exclusive", -5)
    assert audit_actions(app) == [("promotion.create", ADMIN_ACTOR)]
    # the edit form shows what is stored, field by field
    page = text(admin.get(f"/console/promotions/{promotion.id}/edit"))
    for shown in ('value="Tea time"', 'value="S1, S2"', 'value="store, online"', 'value="tea, cakes"',
                  'value="14:00"', 'value="17:30"', 'value="30.00"', 'value="100.00"', 'value="-5"',
                  'name="scope.tiers" value="gold" checked', 'name="schedule.days_of_week" value="6" checked',
                  'name="scope.first_purchase_only" value="1" checked', 'value="2030-01-01T00:00"'):
        assert shown in page, shown
    assert 'name="schedule.days_of_week" value="1" checked' not in page


def test_refusals_stand_next_to_their_fields_and_create_nothing(app, marketing):
    response = marketing.post("/console/promotions/new", {
        **DOUBLE, "name": "", "effect.value": "1", "schedule.from": "25:00", "scope.min_amount": "abc",
        "limits.per_member": "many", "priority": "1.5"})
    assert response.status_code == 422
    page = text(response)
    for field, message in (("name", "Missing data for required field."),
                           ("effect-value", "A multiplier must be more than 1 and at most 10."),
                           ("schedule-from", "Must be a local time HH:MM, from 00:00 to 23:59."),
                           ("scope-min_amount", None), ("limits-per_member", "Not a valid integer"),
                           ("priority", "Not a valid integer")):
        assert f'id="{field}-error"' in page, field
        if message:
            assert message in page.split(f'id="{field}-error">')[1].split("<")[0], field
    assert 'value="25:00"' in page  # what was typed is shown again
    assert stored(app) == [] and audit_actions(app) == []


def test_the_services_rules_between_fields_stand_next_to_the_field(app, marketing):
    ends_first = marketing.post("/console/promotions/new", {**DOUBLE, "ends_at": "2019-01-01T00:00"})
    assert ends_first.status_code == 422
    assert "Must be after starts_at." in text(ends_first).split('id="ends_at-error">')[1].split("<")[0]
    missing = marketing.post("/console/promotions/new", {**DOUBLE, "effect.type": "bonus"})
    assert "Required for a bonus effect." in text(missing).split('id="effect-points-error">')[1]
    period_alone = marketing.post("/console/promotions/new", {**DOUBLE, "limits.per_member_period": "day"})
    assert 'id="limits-per_member-error"' in text(period_alone)
    assert stored(app) == []


def test_messages_next_to_fields_are_in_chinese_on_a_chinese_page(marketing):
    marketing.get("/console/?lang=zh")
    page = text(marketing.post("/console/promotions/new", {**DOUBLE, "effect.value": "11"}))
    assert "倍数必须大于 1 且不超过 10。" in page and "有字段缺失或无效" in page


def test_marketing_edits_a_promotion_and_an_emptied_field_means_none(app, marketing):
    promotion_id = make_promotion(app, ends_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
                                  scope={"stores": ["S1"]}, limits={"per_member": 1})
    form = {**DOUBLE, "name": "Triple points", "effect.value": "3", "ends_at": "", "scope.stores": "",
            "limits.per_member": "", "limits.budget_points": "1000"}
    response = marketing.post(f"/console/promotions/{promotion_id}/edit", form)
    assert response.status_code == 302, text(response)
    promotion = stored(app, promotion_id)
    assert (promotion.name, promotion.effect["value"], promotion.ends_at, promotion.scope) == (
        "Triple points", "3.00", None, None)
    assert (promotion.per_member, promotion.budget_points) == (None, D("1000.00"))
    assert audit_actions(app) == [("promotion.update", MARKETING_ACTOR)]
    refused = marketing.post(f"/console/promotions/{promotion_id}/edit", {**form, "effect.value": "abc"})
    assert refused.status_code == 422 and 'id="effect-value-error"' in text(refused)
    assert stored(app, promotion_id).effect["value"] == "3.00"


# --- stop -----------------------------------------------------------------------------------------

def test_stop_asks_first_then_stops_for_good(app, marketing):
    promotion_id = make_promotion(app)
    confirm = text(marketing.get(f"/console/promotions/{promotion_id}/stop?lang=en"))
    assert "Stop Double points?" in confirm and "Stop the promotion" in confirm
    assert stored(app, promotion_id).status == "active"  # asking changes nothing
    response = marketing.post(f"/console/promotions/{promotion_id}/stop")
    assert response.status_code == 302 and response.location == f"/console/promotions/{promotion_id}"
    assert stored(app, promotion_id).status == "stopped"
    assert audit_actions(app) == [("promotion.stop", MARKETING_ACTOR)]
    page = text(marketing.get(f"/console/promotions/{promotion_id}?lang=en"))
    assert 'id="promotion-status">stopped<' in page and f"/console/promotions/{promotion_id}/edit" not in page
    assert marketing.post(f"/console/promotions/{promotion_id}/stop").status_code == 302  # twice: a no-op
    refused = marketing.post(f"/console/promotions/{promotion_id}/edit", {**DOUBLE, "name": "Again"})
    assert refused.status_code == 422 and "was stopped and cannot change" in text(refused)
    assert stored(app, promotion_id).name == "Double points"
    assert audit_actions(app) == [("promotion.stop", MARKETING_ACTOR)]


# --- the list, a promotion's page -----------------------------------------------------------------

def test_the_list_filters_by_status_and_pages(app, marketing):
    now = clock.now()
    draft = make_promotion(app, name="A draft", status="draft")
    ended = make_promotion(app, name="Last year", ends_at=now - timedelta(days=1))
    stopped = make_promotion(app, name="Stopped one")
    with app.app_context():
        promotions.stop_promotion(stopped, "test")
        db.session.remove()
    for _ in range(50):
        make_promotion(app, name="Running")
    first = text(marketing.get("/console/promotions?lang=en"))
    assert first.count('<tr id="promotion-') == 50 and "Next page" in first
    cursor = first.split("cursor=")[1].split('"')[0]
    second = text(marketing.get(f"/console/promotions?cursor={cursor}&lang=en"))
    assert second.count('<tr id="promotion-') == 3 and "Next page" not in second
    for status, expected in (("draft", draft), ("ended", ended), ("stopped", stopped)):
        page = text(marketing.get(f"/console/promotions?status={status}&lang=en"))
        assert re.findall(r'<tr id="promotion-(\d+)"', page) == [str(expected)], status
        assert f'<option value="{status}" selected>' in page
    active = text(marketing.get("/console/promotions?status=active"))
    assert active.count('<tr id="promotion-') == 50 and f'id="promotion-{ended}"' not in active
    assert marketing.get("/console/promotions?status=nonsense").status_code == 200  # all of them
    assert marketing.get("/console/promotions?cursor=@@@").status_code == 422


def make_member(app, **fields):
    with app.app_context():
        member = factories.member(name="Wang Fang", phone="+8613800138000", **fields)
        db.session.remove()
    return member.id


def buy(app, member_id, amount, **kwargs):
    with app.app_context():
        factories.purchase(member_id, amount, **kwargs)
        db.session.remove()


def test_a_promotions_page_shows_its_terms_and_stats(app, marketing):
    promotion_id = make_promotion(app, limits={"budget_points": D("500")}, scope={"tiers": ["ordinary", "gold"]})
    weekly = make_promotion(app, name="Midweek", status="draft",
                            schedule={"days_of_week": [1, 3], "from": "16:00", "until": "18:00"})
    buy(app, make_member(app), "120.00")
    page = text(marketing.get(f"/console/promotions/{promotion_id}?lang=en"))
    stats = page.split('id="promotion-stats"')[1]
    assert "普通, 黄金" in page and "2× points" in page and "All the time" in page
    assert re.search(r'id="points-granted">120.00<', stats) and "380.00" in stats  # budget left
    assert ">Monday, Wednesday\n      16:00–18:00<" in text(marketing.get(f"/console/promotions/{weekly}?lang=en"))


def test_the_dashboard_lists_the_active_promotions_with_the_points_they_gave(app, marketing):
    make_promotion(app, name="Double points", ends_at=clock.now() + timedelta(days=3))
    make_promotion(app, name="Fifty for everyone", effect={"type": "bonus", "points": D("50")})
    make_promotion(app, name="Still a draft", status="draft")
    make_promotion(app, name="Over", ends_at=clock.now() - timedelta(days=1))
    buy(app, make_member(app), "100.00")
    page = text(marketing.get("/console/?lang=en"))
    section = page.split('id="active-promotions"')[1].split("</section>")[0]
    rows = re.findall(r"<tr><td><a[^>]*>([^<]+)</a></td>\s*<td>([^<]+)</td><td>([^<]+)</td><td class=\"num\">([^<]+)<",
                      section)
    assert [(name, effect, points) for name, effect, _ends, points in rows] == [
        ("Double points", "2× points", "100.00"), ("Fifty for everyone", "+50 points a purchase", "50.00")]
    assert rows[1][2] == "Until stopped"
    assert "Active promotions" in page and "进行中的促销活动" in text(marketing.get("/console/?lang=zh"))


def test_the_dashboard_says_when_no_promotion_is_active(marketing):
    assert "No promotion is active." in text(marketing.get("/console/?lang=en"))


# --- the simulator --------------------------------------------------------------------------------

def lines_on(page):
    section = page.split('id="simulation"')[1]
    return [D(points.replace(",", "")) for points in re.findall(r'<td class="num">([^<]+)</td></tr>', section)], \
        D(section.split('id="simulated-total">')[1].split("<")[0].replace(",", ""))


def test_the_simulator_gives_what_quote_purchase_gives_line_by_line(app, marketing):
    double = make_promotion(app, scope={"categories": ["tea"]})
    draft = make_promotion(app, name="Draft bonus", status="draft", effect={"type": "bonus", "points": D("30")})
    member_id = make_member(app)
    buy(app, member_id, "10.00")
    items = "T-1, tea, 2, 60.00\nC-1, cakes, 1, 40.00"
    form = {"store_id": "S1", "amount": "100.00", "member": "138 0013 8000", "items": items}
    response = marketing.post("/console/promotions/simulate", form)
    assert response.status_code == 200, text(response)
    with app.app_context():
        quote = quote_purchase(member_id, "S1", D("100.00"), items=[
            {"sku": "T-1", "category": "tea", "quantity": 2, "amount": D("60.00")},
            {"sku": "C-1", "category": "cakes", "quantity": 1, "amount": D("40.00")}])
        with_drafts = quote_purchase(member_id, "S1", D("100.00"), include_drafts=True)
        db.session.remove()
    page = text(response)
    assert lines_on(page) == ([line["points"] for line in quote["breakdown"]], quote["points"])
    assert [line.get("promotion_id") for line in quote["breakdown"]] == [None, double]
    assert f'href="/console/promotions/{double}"' in page and f'href="/console/promotions/{draft}"' not in page
    drafts = text(marketing.post("/console/promotions/simulate", {"store_id": "S1", "amount": "100.00",
                                                                 "member": "138 0013 8000", "include_drafts": "1"}))
    assert lines_on(drafts) == ([line["points"] for line in with_drafts["breakdown"]], with_drafts["points"])
    assert f'href="/console/promotions/{draft}"' in drafts
    guest = text(marketing.post("/console/promotions/simulate", {"store_id": "S1", "amount": "100.00", "lang": "en"}))
    with app.app_context():
        assert lines_on(guest)[1] == quote_purchase(None, "S1", D("100.00"))["points"]
        db.session.remove()
    assert audit_actions(app) == []  # a simulation writes nothing


def test_the_simulator_says_what_is_wrong_next_to_the_field(app, marketing):
    missing = marketing.post("/console/promotions/simulate", {"amount": "-1"})
    assert missing.status_code == 422
    page = text(missing)
    assert 'id="amount-error"' in page
    no_store = text(marketing.post("/console/promotions/simulate", {"amount": "10.00"}))
    assert 'id="store_id-error"' in no_store and "Name the store this is for." in no_store
    nobody = text(marketing.post("/console/promotions/simulate", {"store_id": "S1", "amount": "10", "member": "nobody"}))
    assert "No member matches nobody." in nobody.split('id="member-error">')[1]
    bad_items = marketing.post("/console/promotions/simulate", {"store_id": "S1", "amount": "10", "items": "just a sku"})
    assert bad_items.status_code == 422 and 'id="items-error"' in text(bad_items)
    bad_amount = marketing.post("/console/promotions/simulate", {"store_id": "S1", "amount": "10",
                                                                "items": "A, , 1, x"})
    assert bad_amount.status_code == 422 and 'id="items-error"' in text(bad_amount)
    too_much = marketing.post("/console/promotions/simulate", {"store_id": "S1", "amount": "10",
                                                              "items": "A, , 1, 20.00"})
    assert too_much.status_code == 422 and 'class="flash error"' in text(too_much)
