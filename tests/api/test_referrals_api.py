"""Referrals through the HTTP API (issue #5): marketing runs a campaign, the app shows a member's
code, link and QR, a new member registers with the code (or enters it later), the till's first
purchase rewards both, a refund claws back, and the campaign's stats say how it went."""
import io
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
import zxingcpp
from PIL import Image

from loyalty import clock
from loyalty.audit import AuditEntry
from loyalty.extensions import db
from loyalty.referrals.models import Referral, ReferralCampaign

D = Decimal
T0 = datetime(2026, 3, 10, 4, 0, tzinfo=timezone.utc)  # 12:00 in Shanghai
DAY = timedelta(days=1)
LINK = "https://shop.example/join?ref={code}"
CAMPAIGN = {
    "name": "Bring a friend", "starts_at": "2026-03-01T00:00:00Z", "referrer_points": 100,
    "referee_points": 50, "min_first_purchase": "100.00", "qualify_within_days": 30,
    "link_template": LINK,
}
ROLES = ("admin", "marketing", "pos", "app")


# --- helpers --------------------------------------------------------------------------------------

def create_campaign(api, role="marketing", **changes):
    response = api.post(role, "/referral-campaigns", json={**CAMPAIGN, **changes})
    assert response.status_code == 201, response.json
    return response.json


def register(api, at=T0, role="app", **fields):
    fields.setdefault("name", "Li Lei")
    with clock.frozen_at(at):
        response = api.post(role, "/members", json=fields)
    assert response.status_code == 201, response.json
    return response.json


def buy(api, member_id, amount, receipt_no, at):
    with clock.frozen_at(at):
        response = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": receipt_no,
                                                        "amount": amount})
    assert response.status_code == 201, response.json
    return response.json


def referral_page(api, member_id, role="app"):
    with clock.frozen_at(T0):
        response = api.get(role, f"/members/{member_id}/referral")
    assert response.status_code == 200, response.json
    return response.json


def stats(api, campaign_id):
    response = api.get("marketing", f"/referral-campaigns/{campaign_id}/stats")
    assert response.status_code == 200, response.json
    return response.json


def available(api, member_id):
    return api.get("app", f"/members/{member_id}").json["points"]["available"]


def history(api, member_id):
    response = api.get("app", f"/members/{member_id}/points/history")
    assert response.status_code == 200, response.json
    return [(e["type"], e["points"], (e["reference"] or {}).get("type"), (e["reference"] or {}).get("id"))
            for e in reversed(response.json["items"])]


def scan(png):
    barcodes = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(barcodes) == 1
    assert barcodes[0].format == zxingcpp.BarcodeFormat.QRCode
    return barcodes[0].text


def assert_error(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.json
    assert (body["code"], body["error"]) == (status, code)
    assert body["message"] and body["status"]
    return body


def audit_entries(app, action):
    with app.app_context():
        found = [(e.actor, e.entity_type, e.entity_id, e.before, e.after) for e in db.session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))]
        db.session.remove()
    return found


def campaign_count(app):
    with app.app_context():
        count = db.session.scalar(sa.select(sa.func.count()).select_from(ReferralCampaign))
        db.session.remove()
    return count


def referral_id(app, referee_id):
    with app.app_context():
        found = db.session.scalar(sa.select(Referral.id).where(Referral.referee_id == referee_id))
        db.session.remove()
    return str(found)


# --- the whole story ------------------------------------------------------------------------------

def test_a_referral_campaign_from_creation_to_stats(api, app, assert_ledger_ok):
    # Marketing starts a campaign.
    created = api.post("marketing", "/referral-campaigns", json={
        **CAMPAIGN, "max_rewards_per_referrer": 2, "ambassador_threshold": 2, "ambassador_bonus_points": 500,
        "link_template": "https://shop.example/join?ref={code}&utm=friends"})
    assert created.status_code == 201, created.json
    campaign = created.json
    assert campaign["min_first_purchase"] == "100.00"
    assert (campaign["referrer_points"], campaign["referee_points"], campaign["return_window_days"]) == (100, 50, 30)
    assert (campaign["starts_at"], campaign["ends_at"]) == ("2026-03-01T00:00:00Z", None)
    assert api.get("marketing", "/referral-campaigns").json["items"] == [campaign]
    assert api.get("marketing", f"/referral-campaigns/{campaign['id']}").json == campaign

    # A member shares their code: the app shows it, the link and the QR.
    referrer = register(api, phone="13800000001", at=T0 - DAY)
    assert referrer["ambassador"] is False
    page = referral_page(api, referrer["id"])
    link = f"https://shop.example/join?ref={referrer['referral_code']}&utm=friends"
    assert {k: page[k] for k in ("code", "link", "invited", "qualified", "ambassador")} == {
        "code": referrer["referral_code"], "link": link, "invited": 0, "qualified": 0, "ambassador": False}
    with clock.frozen_at(T0):
        assert scan(api.get("app", f"/members/{referrer['id']}/referral/qr.png").data) == link

    # Three friends join: two with the code, one enters it after registering.
    first = register(api, phone="13800000002", referral_code=referrer["referral_code"])
    second = register(api, phone="13800000003", referral_code=referrer["referral_code"].lower())
    third = register(api, phone="13800000004")
    with clock.frozen_at(T0):
        entered = api.put("app", f"/members/{third['id']}/referral", json={"referral_code": referrer["referral_code"]})
    assert entered.status_code == 200, entered.json
    assert entered.json["id"] == third["id"] and entered.json["ambassador"] is False
    assert referral_page(api, referrer["id"])["invited"] == 3

    # The first buys enough: both rewarded in the purchase's own answer and history.
    bought = buy(api, first["id"], "150.00", "R1", T0 + DAY)
    # points_earned is the sum of the answer's lines, the welcome reward included (API.md, Promotions).
    assert bought["points_earned"] == 200
    assert [(line["source"], line["points"]) for line in bought["breakdown"]] == [("base", 150), ("referral", 50)]
    assert bought["member"]["points"]["available"] == 200
    first_referral = referral_id(app, first["id"])
    assert history(api, first["id"]) == [("earn_purchase", 150, "purchase", str(bought["purchase_id"])),
                                        ("bonus", 50, "referral", first_referral)]
    assert history(api, referrer["id"]) == [("bonus", 100, "referral", first_referral)]

    # The second buys too: two qualified referrals make the referrer an ambassador, with the bonus.
    buy(api, second["id"], "100.00", "R2", T0 + 2 * DAY)
    member = api.get("app", f"/members/{referrer['id']}").json
    assert member["ambassador"] is True
    assert member["points"]["available"] == 100 + 100 + 500
    assert referral_page(api, referrer["id"])["ambassador"] is True
    assert [entry[:3] for entry in history(api, referrer["id"])][-1] == ("bonus", 500, "ambassador")

    # The third buys over the referrer's cap of two: the friend is rewarded, the referrer is not.
    buy(api, third["id"], "300.00", "R3", T0 + 3 * DAY)
    assert available(api, third["id"]) == 350
    assert available(api, referrer["id"]) == 700

    summary = stats(api, campaign["id"])
    assert {k: summary[k] for k in ("invited", "qualified", "rewarded", "expired", "points_granted",
                                    "conversion_rate")} == {
        "invited": 3, "qualified": 3, "rewarded": 2, "expired": 0, "points_granted": 150 + 150 + 50,
        "conversion_rate": 1}
    assert (summary["referrer_over_cap"], summary["clawed_back"], summary["pending"], summary["missed"]) == (1, 0, 0, 0)

    # The first returns most of the purchase within the return window: both rewards go back.
    with clock.frozen_at(T0 + 10 * DAY):
        refunded = api.post("pos", f"/purchases/{bought['purchase_id']}/refunds",
                            json={"refund_no": "RF1", "amount": "100.00"})
    assert refunded.status_code == 201, refunded.json
    assert refunded.json["member"]["points"]["available"] == 200 - 100 - 50
    assert available(api, referrer["id"]) == 600
    assert history(api, referrer["id"])[-1] == ("reverse", -100, "referral", first_referral)

    assert stats(api, campaign["id"])["clawed_back"] == 1
    page = referral_page(api, referrer["id"])
    assert (page["invited"], page["qualified"], page["ambassador"]) == (3, 2, True)
    assert_ledger_ok()


def test_stats_show_expired_and_missed_referrals_and_the_conversion_rate(api, runner):
    campaign = create_campaign(api, qualify_within_days=7)
    referrer = register(api, phone="13800000001", at=T0 - DAY)
    friends = [register(api, phone=f"1380000001{n}", referral_code=referrer["referral_code"]) for n in range(4)]
    buy(api, friends[0]["id"], "120.00", "R1", T0 + DAY)
    buy(api, friends[1]["id"], "20.00", "R2", T0 + DAY)
    with clock.frozen_at(T0 + 8 * DAY):
        result = runner.invoke(args=["jobs", "run", "referrals.expire", "--as-of", "2026-03-18"])
    assert result.exit_code == 0, result.output

    summary = stats(api, campaign["id"])

    assert {k: summary[k] for k in ("invited", "qualified", "rewarded", "missed", "expired", "pending",
                                    "points_granted", "conversion_rate")} == {
        "invited": 4, "qualified": 1, "rewarded": 1, "missed": 1, "expired": 2, "pending": 0,
        "points_granted": 150, "conversion_rate": D("0.25")}


# --- campaigns: validation ------------------------------------------------------------------------

@pytest.mark.parametrize("changes, field, words", [
    ({"link_template": "https://shop.example/join"}, "link_template", "{code}"),
    ({"ends_at": "2026-02-01T00:00:00Z"}, "ends_at", "after starts_at"),
    ({"ends_at": "2026-03-01T00:00:00Z"}, "ends_at", "after starts_at"),
    ({"referrer_points": 0, "referee_points": 0}, "referrer_points", "reward"),
    ({"referrer_points": -5}, "referrer_points", ""),
    ({"referee_points": 1.005}, "referee_points", "2 decimal places"),
    ({"min_first_purchase": "-1.00"}, "min_first_purchase", "negative"),
    ({"min_first_purchase": "ten"}, "min_first_purchase", "decimal"),
    ({"qualify_within_days": 0}, "qualify_within_days", ""),
    ({"return_window_days": -1}, "return_window_days", ""),
    ({"max_rewards_per_referrer": 0}, "max_rewards_per_referrer", ""),
    ({"ambassador_threshold": 0}, "ambassador_threshold", ""),
    ({"ambassador_bonus_points": -1}, "ambassador_bonus_points", ""),
    ({"starts_at": "next monday"}, "starts_at", ""),
    ({"name": ""}, "name", ""),
], ids=lambda value: value if isinstance(value, str) else None)
def test_an_invalid_campaign_is_a_422_naming_the_field_and_stores_nothing(api, app, changes, field, words):
    response = api.post("marketing", "/referral-campaigns", json={**CAMPAIGN, **changes})

    body = assert_error(response, 422, "validation_error")
    assert field in body["errors"]
    assert words in body["message"] + " ".join(body["errors"][field])
    assert campaign_count(app) == 0
    assert audit_entries(app, "referral_campaign.create") == []


def test_a_campaign_without_its_required_fields_lists_each_one(api):
    response = api.post("marketing", "/referral-campaigns", json={"name": "Bring a friend"})

    body = assert_error(response, 422, "validation_error")
    assert set(body["errors"]) == {"referrer_points", "referee_points"}


def test_a_campaign_needs_only_its_name_and_rewards_and_the_rest_has_documented_defaults(api, app):
    app.config["LOYALTY_REFERRAL_LINK"], before = "https://shop.test/r/{code}", app.config["LOYALTY_REFERRAL_LINK"]
    try:
        response = api.post("marketing", "/referral-campaigns",
                            json={"name": "Bring a friend", "referrer_points": 100, "referee_points": 50})
    finally:
        app.config["LOYALTY_REFERRAL_LINK"] = before

    assert response.status_code == 201, response.json
    campaign = response.json
    assert (campaign["min_first_purchase"], campaign["qualify_within_days"], campaign["return_window_days"]) == (
        "0.00", 30, 30)
    assert campaign["link_template"] == "https://shop.test/r/{code}"
    assert campaign["ends_at"] is None
    started = datetime.fromisoformat(campaign["starts_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - started).total_seconds()) < 60  # it runs from now


@pytest.mark.parametrize("method, path, body", [
    ("post", "/referral-campaigns", {**CAMPAIGN, "budget": 1000}),
    ("patch", "/referral-campaigns/{campaign}", {"budget": 1000}),
    ("put", "/members/{member}/referral", {"referral_code": "ABCDEFGH", "budget": 1000}),
])
def test_unknown_fields_are_refused_by_name(api, app, method, path, body):
    campaign = create_campaign(api, name="Existing", starts_at="2025-01-01T00:00:00Z", ends_at="2025-02-01T00:00:00Z")
    member = register(api, phone="13800000001")
    role = "app" if "members" in path else "marketing"

    response = getattr(api, method)(role, path.format(campaign=campaign["id"], member=member["id"]), json=body)

    body = assert_error(response, 422, "validation_error")
    assert body["errors"] == {"budget": ["Unknown field."]}
    assert campaign_count(app) == 1


def test_a_patch_is_checked_against_the_campaign_it_changes(api, app):
    campaign = create_campaign(api)

    ends_first = api.patch("marketing", f"/referral-campaigns/{campaign['id']}",
                           json={"ends_at": "2026-02-01T00:00:00Z"})
    no_code = api.patch("marketing", f"/referral-campaigns/{campaign['id']}",
                        json={"link_template": "https://shop.example/join?ref=code"})

    assert "ends_at" in assert_error(ends_first, 422, "validation_error")["errors"]
    assert "{code}" in assert_error(no_code, 422, "validation_error")["message"]
    assert api.get("marketing", f"/referral-campaigns/{campaign['id']}").json == campaign
    assert audit_entries(app, "referral_campaign.update") == []


def test_a_patch_changes_only_what_it_sends(api):
    campaign = create_campaign(api)

    with clock.frozen_at(T0):
        response = api.patch("marketing", f"/referral-campaigns/{campaign['id']}",
                             json={"referrer_points": 200, "ends_at": "2026-06-01T00:00:00Z"})

    assert response.status_code == 200, response.json
    assert response.json == {**campaign, "referrer_points": 200, "ends_at": "2026-06-01T00:00:00Z",
                             "updated_at": "2026-03-10T04:00:00Z"}
    assert api.get("marketing", f"/referral-campaigns/{campaign['id']}").json == response.json


def test_a_second_campaign_at_the_same_time_is_a_409_that_names_the_first(api, app):
    first = create_campaign(api)

    response = api.post("marketing", "/referral-campaigns", json={
        **CAMPAIGN, "name": "Spring", "starts_at": "2026-04-01T00:00:00Z", "ends_at": "2026-05-01T00:00:00Z"})

    body = assert_error(response, 409, "conflict")
    assert str(first["id"]) in body["message"] and "Bring a friend" in body["message"]
    assert campaign_count(app) == 1
    # Ending the first campaign makes room for the next.
    assert api.patch("marketing", f"/referral-campaigns/{first['id']}",
                     json={"ends_at": "2026-04-01T00:00:00Z"}).status_code == 200
    create_campaign(api, name="Spring", starts_at="2026-04-01T00:00:00Z")


def test_an_unknown_campaign_is_a_json_404(api):
    for response in (api.get("marketing", "/referral-campaigns/999"),
                     api.patch("marketing", "/referral-campaigns/999", json={"name": "X"}),
                     api.get("marketing", "/referral-campaigns/999/stats")):
        assert_error(response, 404, "not_found")


# --- campaigns: audit log -------------------------------------------------------------------------

def test_creating_and_changing_a_campaign_is_in_the_audit_log(api, app):
    campaign = create_campaign(api)
    api.patch("marketing", f"/referral-campaigns/{campaign['id']}", json={"referee_points": 80})

    [(actor, entity_type, entity_id, before, after)] = audit_entries(app, "referral_campaign.create")
    assert "test marketing" in actor
    assert (entity_type, entity_id, before) == ("referral_campaign", str(campaign["id"]), None)
    assert after["name"] == "Bring a friend" and after["link_template"] == LINK
    assert D(after["referee_points"]) == 50

    [(actor, entity_type, entity_id, before, after)] = audit_entries(app, "referral_campaign.update")
    assert "test marketing" in actor and entity_id == str(campaign["id"])
    assert (D(before["referee_points"]), D(after["referee_points"])) == (50, 80)
    assert before["referrer_points"] == after["referrer_points"]


# --- codes at registration and later --------------------------------------------------------------

def test_registering_with_an_unknown_code_is_a_422_and_registers_nobody(api):
    create_campaign(api)

    with clock.frozen_at(T0):
        response = api.post("app", "/members", json={"name": "X", "phone": "13800000009",
                                                      "referral_code": "ZZZZZZZZ"})

    body = assert_error(response, 422, "validation_error")
    assert body["errors"] == {"referral_code": ["Unknown referral code."]}
    assert api.get("pos", "/members", query_string={"phone": "13800000009"}).json["items"] == []


@pytest.mark.parametrize("campaign", [None, {"starts_at": "2026-04-01T00:00:00Z"},
                                      {"starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-03-01T00:00:00Z"}],
                         ids=["none", "not-yet", "over"])
def test_registering_with_a_code_outside_any_campaign_is_a_422(api, campaign):
    if campaign is not None:
        create_campaign(api, **campaign)
    referrer = register(api, phone="13800000001", at=T0 - DAY)

    with clock.frozen_at(T0):
        response = api.post("app", "/members", json={"name": "X", "phone": "13800000009",
                                                      "referral_code": referrer["referral_code"]})

    body = assert_error(response, 422, "validation_error")
    assert "campaign" in body["message"]
    assert "referral_code" in body["errors"]


@pytest.mark.parametrize("referrer_fields, referee_fields", [
    ({"phone": "13800000001"}, {"phone": "138 0000 0001"}),
    ({"email": "li@example.com"}, {"email": "Li@Example.com"}),
    ({"external_ids": [{"channel": "wechat", "id": "wx-1"}]}, {"external_ids": [{"channel": "wechat", "id": "wx-1"}]}),
], ids=["phone", "email", "channel-identity"])
def test_registering_with_ones_own_code_is_refused(api, referrer_fields, referee_fields):
    create_campaign(api)
    referrer = register(api, at=T0 - DAY, **referrer_fields)

    with clock.frozen_at(T0):
        response = api.post("app", "/members", json={"name": "Li Lei", "referral_code": referrer["referral_code"],
                                                      **referee_fields})

    body = assert_error(response, 422, "validation_error")
    assert body["errors"] == {"referral_code": ["This is the member's own code."]}


def test_entering_a_code_twice_or_after_a_purchase_is_a_409(api):
    create_campaign(api)
    referrer = register(api, phone="13800000001", at=T0 - DAY)
    other = register(api, phone="13800000002", at=T0 - DAY)
    newcomer = register(api, phone="13800000003")
    shopper = register(api, phone="13800000004")
    buy(api, shopper["id"], "10.00", "R1", T0)

    with clock.frozen_at(T0):
        first = api.put("app", f"/members/{newcomer['id']}/referral", json={"referral_code": referrer["referral_code"]})
        again = api.put("app", f"/members/{newcomer['id']}/referral", json={"referral_code": other["referral_code"]})
        late = api.put("app", f"/members/{shopper['id']}/referral", json={"referral_code": referrer["referral_code"]})
        own = api.put("app", f"/members/{other['id']}/referral", json={"referral_code": other["referral_code"]})
        nobody = api.put("app", "/members/999/referral", json={"referral_code": referrer["referral_code"]})
        empty = api.put("app", f"/members/{other['id']}/referral", json={})

    assert first.status_code == 200, first.json
    assert "already" in assert_error(again, 409, "conflict")["message"]
    assert "first purchase" in assert_error(late, 409, "conflict")["message"]
    assert "referral_code" in assert_error(own, 422, "validation_error")["errors"]
    assert_error(nobody, 404, "not_found")
    assert "referral_code" in assert_error(empty, 422, "validation_error")["errors"]
    assert (referral_page(api, referrer["id"])["invited"], referral_page(api, other["id"])["invited"]) == (1, 0)


# --- the member's referral page and QR ------------------------------------------------------------

def test_the_referral_qr_png_decodes_to_the_exact_link_and_the_svg_is_served(api):
    create_campaign(api, link_template="https://shop.example/join?ref={code}&from=qr")
    member = register(api, phone="13800000001")
    link = f"https://shop.example/join?ref={member['referral_code']}&from=qr"

    with clock.frozen_at(T0):
        png = api.get("app", f"/members/{member['id']}/referral/qr.png")
        svg = api.get("app", f"/members/{member['id']}/referral/qr.svg")

    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert scan(png.data) == link == referral_page(api, member["id"])["link"]
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    root = ElementTree.fromstring(svg.data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("{http://www.w3.org/2000/svg}path") is not None
    assert png.headers["Cache-Control"] == "private, max-age=300"


def test_without_any_campaign_the_link_uses_the_deployments_template(api, app):
    member = register(api, phone="13800000001")

    page = referral_page(api, member["id"])

    assert page["link"] == app.config["LOYALTY_REFERRAL_LINK"].replace("{code}", member["referral_code"])
    assert member["referral_code"] in page["link"]
    with clock.frozen_at(T0):
        assert scan(api.get("app", f"/members/{member['id']}/referral/qr.png").data) == page["link"]


@pytest.mark.parametrize("path", ["/members/999/referral", "/members/999/referral/qr.png",
                                  "/members/999/referral/qr.svg"])
def test_the_referral_page_of_nobody_is_a_json_404(api, path):
    assert_error(api.get("app", path), 404, "not_found")


def test_every_member_answer_carries_the_ambassador_badge(api):
    create_campaign(api, ambassador_threshold=1, ambassador_bonus_points=200)
    referrer = register(api, phone="13800000001", at=T0 - DAY)
    friend = register(api, phone="13800000002", referral_code=referrer["referral_code"])
    assert (referrer["ambassador"], friend["ambassador"]) == (False, False)

    purchase = buy(api, friend["id"], "150.00", "R1", T0 + DAY)
    assert purchase["member"]["ambassador"] is False  # the friend is not the ambassador

    answers = {
        "get": api.get("app", f"/members/{referrer['id']}").json,
        "get as marketing": api.get("marketing", f"/members/{referrer['id']}").json,
        "lookup": api.get("pos", "/members", query_string={"phone": "13800000001"}).json["items"][0],
        "patch": api.patch("app", f"/members/{referrer['id']}", json={"name": "Li Lei Sr"}).json,
        "purchase": buy(api, referrer["id"], "10.00", "R2", T0 + 2 * DAY)["member"],
    }
    assert {name: answer["ambassador"] for name, answer in answers.items()} == dict.fromkeys(answers, True)
    assert referral_page(api, referrer["id"])["ambassador"] is True
    assert available(api, referrer["id"]) == 100 + 200 + 10


# --- who may call what ----------------------------------------------------------------------------

ENDPOINTS = {
    # name: (method, path, body, allowed roles, success status)
    "list campaigns": ("get", "/referral-campaigns", None, {"marketing", "admin"}, 200),
    "create campaign": ("post", "/referral-campaigns", "campaign", {"marketing", "admin"}, 201),
    "read campaign": ("get", "/referral-campaigns/{campaign}", None, {"marketing", "admin"}, 200),
    "change campaign": ("patch", "/referral-campaigns/{campaign}", {"name": "Renamed"}, {"marketing", "admin"}, 200),
    "campaign stats": ("get", "/referral-campaigns/{campaign}/stats", None, {"marketing", "admin"}, 200),
    "referral page": ("get", "/members/{member}/referral", None, {"app", "admin"}, 200),
    "enter code": ("put", "/members/{member}/referral", "code", {"app", "admin"}, 200),
    "referral qr png": ("get", "/members/{member}/referral/qr.png", None, {"app", "admin"}, 200),
    "referral qr svg": ("get", "/members/{member}/referral/qr.svg", None, {"app", "admin"}, 200),
}


@pytest.fixture
def world(api):
    """A campaign, a referrer and a newcomer who has not entered a code yet."""
    campaign = create_campaign(api, starts_at="2020-01-01T00:00:00Z", ends_at="2029-01-01T00:00:00Z")
    referrer = register(api, phone="13800000001", at=datetime.now(timezone.utc) - DAY)
    newcomer = register(api, phone="13800000002", at=datetime.now(timezone.utc) - DAY)
    return {"campaign": campaign["id"], "member": newcomer["id"], "code": referrer["referral_code"]}


def call(api, world, name, role, round_=0):
    method, path, body, _, _ = ENDPOINTS[name]
    if body == "campaign":  # each successful create needs dates of its own
        year = 2030 + round_
        body = {**CAMPAIGN, "starts_at": f"{year}-01-01T00:00:00Z", "ends_at": f"{year}-02-01T00:00:00Z"}
    elif body == "code":
        body = {"referral_code": world["code"]}
    kwargs = {} if body is None else {"json": body}
    return api._call(method, role, path.format(**world), **kwargs)


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_each_endpoint_needs_a_key(api, world, client, name):
    method, path, body, _, _ = ENDPOINTS[name]

    missing = call(api, world, name, None)
    unknown = getattr(client, method)("/api/v1" + path.format(**world), headers={"Authorization": "Bearer lk_nope"},
                                      **({} if body is None else {"json": {}}))

    assert_error(missing, 401, "unauthorized")
    assert_error(unknown, 401, "unauthorized")


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_each_endpoint_refuses_the_other_roles_with_403_and_changes_nothing(api, app, world, name):
    allowed = ENDPOINTS[name][3]
    for role in sorted(set(ROLES) - allowed):
        assert_error(call(api, world, name, role), 403, "forbidden")
    assert campaign_count(app) == 1
    assert api.get("marketing", f"/referral-campaigns/{world['campaign']}").json["name"] == CAMPAIGN["name"]
    assert referral_page(api, world["member"], role="admin")["invited"] == 0
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Referral)) == 0
        db.session.remove()


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_each_endpoint_answers_its_roles(api, world, name):
    allowed, success = ENDPOINTS[name][3], ENDPOINTS[name][4]
    for round_, role in enumerate(sorted(allowed)):
        if name == "enter code" and round_:
            world = {**world, "member": register(api, phone=f"1380000010{round_}",
                                                 at=datetime.now(timezone.utc) - DAY)["id"]}
        response = call(api, world, name, role, round_)
        assert response.status_code == success, (role, response.get_data(as_text=True))


def test_the_openapi_document_describes_the_referral_endpoints(api):
    paths = api.client.get("/api/v1/openapi.json").json["paths"]

    for path in ("/api/v1/referral-campaigns", "/api/v1/referral-campaigns/{campaign_id}",
                 "/api/v1/referral-campaigns/{campaign_id}/stats", "/api/v1/members/{member_id}/referral",
                 "/api/v1/members/{member_id}/referral/qr.png", "/api/v1/members/{member_id}/referral/qr.svg"):
        assert path in paths, sorted(paths)


# --- the list (issue 14) --------------------------------------------------------------------------

def test_campaigns_are_listed_latest_start_first_a_page_at_a_time(api):
    march = create_campaign(api, name="March", starts_at="2026-03-01T00:00:00Z")
    january = create_campaign(api, name="January", starts_at="2026-01-01T00:00:00Z",
                              ends_at="2026-01-31T00:00:00Z")
    february = create_campaign(api, name="February", starts_at="2026-02-01T00:00:00Z",
                               ends_at="2026-02-28T00:00:00Z")

    first = api.get("marketing", "/referral-campaigns?limit=2").json
    assert [c["name"] for c in first["items"]] == ["March", "February"] and first["next_cursor"]
    second = api.get("marketing", f"/referral-campaigns?limit=2&cursor={first['next_cursor']}").json
    assert (second["items"], second["next_cursor"]) == ([january], None)
    whole = api.get("marketing", "/referral-campaigns").json
    assert (whole["items"], whole["next_cursor"]) == ([march, february, january], None)
    assert api.get("marketing", "/referral-campaigns?limit=3").json["next_cursor"] is None


@pytest.mark.parametrize("query, field", [("limit=0", "limit"), ("limit=201", "limit"), ("limit=ten", "limit"),
                                          ("cursor=not-ours", "cursor"), ("cursor=OTk5", "cursor")])
def test_a_bad_page_of_campaigns_is_refused(api, query, field):
    create_campaign(api)

    response = api.get("marketing", f"/referral-campaigns?{query}")
    assert response.status_code == 422 and field in response.json["errors"], response.json
