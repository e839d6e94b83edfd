"""Marketing's reports over HTTP (issue #7): segments as JSON pages and as CSV, tags, the overview
and the liability report, and the admin's audit log of every marketing and admin change.

Roles (API.md, and what the views declare with @roles): segments, tags and both reports are for
marketing (and admin, who may do everything); the audit log is for admin only. The scripted world
of tests/service/test_segments.py gives the figures; its docstring explains them."""
import csv
import io
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.auth import ApiKey
from loyalty.extensions import db
from loyalty.members.models import Member
from tests.factories import D
from tests.service.ledger_helpers import utc
from tests.service.test_segments import HEADER, N, build_world

ROLES = ("admin", "marketing", "pos", "app")
STATUS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity"}
MARKETING = {"marketing", "admin"}

# Every endpoint of the issue, with the roles that may call it.
ENDPOINTS = [
    ("get", "/segments/new/members", MARKETING),
    ("get", "/segments/new/members?format=csv", MARKETING),
    ("get", "/members/{member}/tags", MARKETING),
    ("post", "/members/{member}/tags", MARKETING),
    ("delete", "/members/{member}/tags", MARKETING),
    ("get", "/reports/overview", MARKETING),
    ("get", "/reports/liability", MARKETING),
    ("get", "/audit-log", {"admin"}),
]


# --- helpers --------------------------------------------------------------------------------------

@pytest.fixture
def world(app, keys):
    with app.app_context():
        made = build_world()
        db.session.remove()
    return made


@pytest.fixture
def member_id(api):
    response = api.post("app", "/members", json={"name": "Li Lei", "phone": "13800000001"})
    assert response.status_code == 201, response.json
    return response.json["id"]


def assert_error(response, status, error):
    body = response.json
    assert response.status_code == status, body
    assert response.mimetype == "application/json"
    assert (body["code"], body["status"], body["error"]) == (status, STATUS[status], error), body
    assert isinstance(body["message"], str) and body["message"]
    return body


def numbers(app, *member_ids):
    with app.app_context():
        found = {m.id: m.member_no for m in db.session.scalars(sa.select(Member).where(Member.id.in_(member_ids)))}
        db.session.remove()
    return [found[i] for i in member_ids]


def actor(app, key_name):
    """What the audit log says of a key's changes: its name, then its id and role."""
    with app.app_context():
        key = db.session.scalar(sa.select(ApiKey).where(ApiKey.name == key_name))
        db.session.remove()
    return f"{key_name} (key {key.id}, {key.role})"


def get_ok(api, role, path, **kwargs):
    response = api.get(role, path, **kwargs)
    assert response.status_code == 200, response.json
    return response.json


def all_pages(api, path, role="admin", **query):
    """Follow next_cursor to the end: every item, and how many pages it took."""
    items, pages, cursor = [], 0, None
    while True:
        page = get_ok(api, role, path, query_string={**query, **({"cursor": cursor} if cursor else {})})
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages


def tags_of(api, member_id):
    return get_ok(api, "marketing", f"/members/{member_id}/tags")["tags"]


# --- roles ----------------------------------------------------------------------------------------

def test_each_endpoint_allows_its_roles_and_refuses_the_others(api, client, member_id):
    for method, path, allowed in ENDPOINTS:
        path = path.format(member=member_id)
        body = {"json": {"tags": ["vip"]}} if method in ("post", "delete") else {}
        call = getattr(api, method)

        for role in ROLES:
            if role not in allowed:
                forbidden = assert_error(call(role, path, **body), 403, "forbidden")
                assert "admin" in forbidden["message"], (method, path, role)
        assert_error(getattr(client, method)("/api/v1" + path, **body), 401, "unauthorized")
        assert_error(getattr(client, method)("/api/v1" + path, headers={"Authorization": "Bearer lk_nonsense"},
                                             **body), 401, "unauthorized")
        assert tags_of(api, member_id) == []  # a refused request changes nothing
        for role in sorted(allowed):
            response = call(role, path, **body)
            response.get_data()  # a streamed CSV is read to its end, as a client would
            assert response.status_code == 200, (method, path, role, response.json)
            api.delete("marketing", f"/members/{member_id}/tags", json={"tags": ["vip"]})


# --- segments as JSON -----------------------------------------------------------------------------

def test_a_segment_page_shows_each_member_with_masked_phone_and_exact_figures(api, app, world):
    with clock.frozen_at(N):
        page = get_ok(api, "marketing", "/segments/dormant/members")

    [no_b] = numbers(app, world.b)
    assert page == {"items": [{
        "id": world.b, "member_no": no_b, "name": '王, "Big" B', "phone": "+86139****0002", "tier": "ordinary",
        "lifecycle_stage": "dormant", "value_segment": "high_value", "available_points": D("460"),
        "spend_12_months": "760.00", "last_purchase_at": "2026-07-03T04:00:00Z"}], "next_cursor": None}


def test_points_are_json_numbers_and_money_strings(api, world):
    with clock.frozen_at(N):
        raw = json.loads(api.get("marketing", "/segments/new/members").get_data(as_text=True))

    chen, gao = raw["items"]
    assert (chen["available_points"], chen["spend_12_months"]) == (30.5, "50.00")
    assert (gao["available_points"], gao["spend_12_months"]) == (0, "80.50")


SEGMENTS = {"new": "cg", "active": "a", "stage:potential": "d", "churned": "e", "high_value": "b",
            "segment:low_value": "acg", "at_risk": "e", "tier:gold": "d", "tier:diamond": ""}


def test_stages_segments_and_tiers_by_name(api, world):
    got = {name: [item["id"] for item in all_pages(api, f"/segments/{name}/members", role="marketing")[0]]
           for name in SEGMENTS}

    assert got == {name: [getattr(world, letter) for letter in letters] for name, letters in SEGMENTS.items()}


def test_a_segment_is_paged_with_cursors_until_next_cursor_is_null(api, world):
    first = get_ok(api, "marketing", "/segments/tier:ordinary/members", query_string={"limit": 2})
    items, pages = all_pages(api, "/segments/tier:ordinary/members", role="marketing", limit=2)
    exact, _ = all_pages(api, "/segments/tier:ordinary/members", role="marketing", limit=5)

    assert [item["id"] for item in first["items"]] == [world.a, world.b] and first["next_cursor"]
    assert [item["id"] for item in items] == [world.a, world.b, world.c, world.e, world.g]
    assert pages == 3
    assert [item["id"] for item in exact] == [world.a, world.b, world.c, world.e, world.g]  # one page, no empty one


# --- segments as CSV ------------------------------------------------------------------------------

def test_the_csv_is_text_csv_with_a_header_row_and_parses_with_the_csv_module(api, app, world):
    with clock.frozen_at(N):
        response = api.get("marketing", "/segments/tier:ordinary/members", query_string={"format": "csv"})
        text = response.get_data(as_text=True)

    assert response.status_code == 200
    assert response.content_type == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="tier-ordinary.csv"'
    a, b, c, e, g = numbers(app, world.a, world.b, world.c, world.e, world.g)
    assert list(csv.reader(io.StringIO(text))) == [
        HEADER,
        [a, "An", "+86138****0001", "ordinary", "active", "low_value", "200.00", "300.00", "2026-08-22T04:00:00Z"],
        [b, '王, "Big" B', "+86139****0002", "ordinary", "dormant", "high_value", "460.00", "760.00",
         "2026-07-03T04:00:00Z"],
        [c, "Chen", "+86138****0003", "ordinary", "new", "low_value", "30.50", "50.00", "2026-07-23T04:00:00Z"],
        [e, "Ed", "+86138****0005", "ordinary", "churned", "at_risk", "30.00", "30.00", "2026-05-04T04:00:00Z"],
        [g, "Gao", "+86138****0007", "ordinary", "new", "low_value", "0.00", "80.50", "2026-08-30T04:00:00Z"],
    ]
    by_name = {row["name"]: row for row in csv.DictReader(io.StringIO(text))}
    assert by_name['王, "Big" B']["spend_12_months"] == "760.00"
    assert "13922220002" not in text and "8613811110001" not in text  # no phone in clear


def test_the_csv_has_every_member_whatever_the_limit(api, world):
    response = api.get("marketing", "/segments/low_value/members", query_string={"format": "csv", "limit": 1})

    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [row["name"] for row in rows] == ["An", "Chen", "Gao"]


def test_a_csv_by_tag_and_an_empty_one(api, world, member_id):
    assert api.post("marketing", f"/members/{world.e}/tags", json={"tags": ["winback"]}).status_code == 200

    tagged = api.get("marketing", "/segments/tag:winback/members?format=csv")
    tagged_text = tagged.get_data(as_text=True)  # a streamed answer is read before the next request
    empty = api.get("marketing", "/segments/tier:diamond/members?format=csv").get_data(as_text=True)

    assert tagged.headers["Content-Disposition"] == 'attachment; filename="tag-winback.csv"'
    assert [row[1] for row in csv.reader(io.StringIO(tagged_text))] == ["name", "Ed"]
    assert list(csv.reader(io.StringIO(empty))) == [HEADER]


# --- segments: errors -----------------------------------------------------------------------------

def test_an_unknown_segment_is_a_404_with_the_json_error_body(api, member_id):
    for query in ({}, {"format": "csv"}):
        response = api.get("marketing", "/segments/sleepers/members", query_string=query)

        body = assert_error(response, 404, "not_found")
        assert body["message"].startswith(
            "No segment 'sleepers'. Segments: high_value, potential, low_value, at_risk,"), query
        assert "errors" not in body


def test_an_unknown_tier_is_a_404(api, member_id):
    response = api.get("marketing", "/segments/tier:platinum/members?format=csv")
    response.get_data()  # read to the end: a streamed answer left open would upset the next tests

    assert_error(response, 404, "not_found")


def test_a_segment_name_that_cannot_be_a_file_name_is_a_404_not_a_500(api, member_id):
    for path in ("/segments/tier:a%0D%0AX-Evil:%201/members?format=csv", '/segments/tier:a"b/members?format=csv'):
        response = api.get("marketing", path)
        response.get_data()

        assert_error(response, 404, "not_found")


def test_the_openapi_document_describes_the_csv_answer(api):
    document = api.client.get("/api/v1/openapi.json").json
    segment = document["paths"]["/api/v1/segments/{name}/members"]["get"]

    assert set(segment["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert {parameter["name"] for parameter in segment["parameters"]} >= {"limit", "cursor", "format"}
    audit = document["paths"]["/api/v1/audit-log"]["get"]
    assert {parameter["name"] for parameter in audit["parameters"]} >= {"entity_type", "action", "actor", "since",
                                                                          "until", "limit", "cursor"}


BAD_CURSORS = ["!!!", "not-a-cursor", "MA", "LTE", "OTk5OTk5OTk5OTk5OTk5OTk5OTk5"]  # "", 0, -1, 2**63 and more


def test_a_cursor_the_service_did_not_give_is_a_422(api, member_id):
    for cursor in BAD_CURSORS:
        response = api.get("marketing", "/segments/new/members", query_string={"cursor": cursor})

        body = assert_error(response, 422, "validation_error")
        assert body["errors"] == {"cursor": ["Invalid cursor."]}, cursor


def test_a_bad_format_or_limit_is_a_422(api, member_id):
    for query, field in [({"format": "xml"}, "format"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
                         ({"limit": "ten"}, "limit")]:
        response = api.get("marketing", "/segments/new/members", query_string=query)

        assert list(assert_error(response, 422, "validation_error")["errors"]) == [field], query


# --- tags -----------------------------------------------------------------------------------------

def test_marketing_puts_and_takes_off_tags_and_lists_members_by_tag(api, app, member_id):
    put = api.post("marketing", f"/members/{member_id}/tags", json={"tags": ["VIP", "Event-2026"]})
    again = api.post("marketing", f"/members/{member_id}/tags", json={"tags": ["vip"]})

    assert (put.status_code, put.json) == (200, {"tags": ["event-2026", "vip"]})
    assert (again.status_code, again.json) == (200, {"tags": ["event-2026", "vip"]})
    assert tags_of(api, member_id) == ["event-2026", "vip"]
    assert [item["id"] for item in get_ok(api, "marketing", "/segments/tag:vip/members")["items"]] == [member_id]

    taken = api.delete("marketing", f"/members/{member_id}/tags", json={"tags": ["vip", "never-had"]})
    taken_again = api.delete("marketing", f"/members/{member_id}/tags", json={"tags": ["vip"]})

    assert (taken.status_code, taken.json) == (200, {"tags": ["event-2026"]})
    assert (taken_again.status_code, taken_again.json) == (200, {"tags": ["event-2026"]})
    assert get_ok(api, "marketing", "/segments/tag:vip/members")["items"] == []
    log = [e for e in get_ok(api, "admin", "/audit-log", query_string={"entity_type": "member"})["items"]
           if e["action"] != "personal_data.read"]  # the segment pages read are there too
    who = actor(app, "test marketing")
    assert [(e["action"], e["entity_id"], e["actor"], e["before"], e["after"]) for e in log] == [
        ("member.tags.remove", str(member_id), who, ["event-2026", "vip"], ["event-2026"]),
        ("member.tags.add", str(member_id), who, [], ["event-2026", "vip"]),
    ]


BAD_TAGS = [
    ({"tags": ["has space"]}, {"tags": ["Invalid tag."]}),
    ({"tags": ["ok", "-dash-first"]}, {"tags": ["Invalid tag."]}),
    ({"tags": ["x" * 41]}, {"tags": {"0": ["Length must be between 1 and 40."]}}),
    ({"tags": []}, {"tags": ["Length must be between 1 and 50."]}),
    ({"tags": "vip"}, {"tags": ["Not a valid list."]}),
    ({"tags": [7]}, {"tags": {"0": ["Not a valid string."]}}),
    ({}, {"tags": ["Missing data for required field."]}),
]


@pytest.mark.parametrize("method", ["post", "delete"])
def test_bad_tags_are_a_422_that_changes_nothing(api, app, member_id, method):
    api.post("marketing", f"/members/{member_id}/tags", json={"tags": ["keep", "ok"]})

    for body, errors in BAD_TAGS:
        response = getattr(api, method)("marketing", f"/members/{member_id}/tags", json=body)

        assert assert_error(response, 422, "validation_error")["errors"] == errors, body
    assert tags_of(api, member_id) == ["keep", "ok"]
    assert len(get_ok(api, "admin", "/audit-log", query_string={"entity_type": "member"})["items"]) == 1


def test_tags_of_an_unknown_member_are_a_404(api, member_id):
    for method in ("get", "post", "delete"):
        response = getattr(api, method)("marketing", "/members/999999/tags",
                                        **({} if method == "get" else {"json": {"tags": ["vip"]}}))

        assert "999999" in assert_error(response, 404, "not_found")["message"], method


# --- the reports ----------------------------------------------------------------------------------

def test_the_overview_over_http(api, world):
    with clock.frozen_at(N):
        report = get_ok(api, "marketing", "/reports/overview")

    assert report["members"]["total"] == 6
    assert report["members"]["by_tier"] == {"ordinary": 5, "silver": 0, "gold": 1, "diamond": 0}
    assert report["members"]["by_lifecycle_stage"] == {"active": 1, "dormant": 1, "new": 2, "potential": 1,
                                                       "churned": 1}
    assert report["points"] == {"outstanding": 811, "available": D("730.5"), "pending": D("80.5"), "held": 0,
                                "debt": 0,
                                "outstanding_money_value": {"amount": "8.11", "currency": "CNY"},
                                "expiring_30_days": 10}
    assert report["last_30_days"] == {"earned": 281, "redeemed": 20, "paid": 300, "expired": 100,
                                      "reversed": -250, "adjusted": 0, "imported": 0}
    assert report["referrals"] is None
    assert report["as_of"] == "2026-09-01T04:00:00Z"


def test_the_overview_shows_the_funnel_of_the_running_campaign(api):
    with clock.frozen_at(utc(2026, 3, 10, 4)):  # 12:00 in Shanghai
        campaign = api.post("marketing", "/referral-campaigns", json={
            "name": "Bring a friend", "starts_at": "2026-03-01T00:00:00Z", "referrer_points": 100,
            "referee_points": 50, "min_first_purchase": "100.00", "qualify_within_days": 30,
            "link_template": "https://shop.example/join?ref={code}"}).json
        referrer = api.post("app", "/members", json={"name": "Li Lei", "phone": "13800000001"}).json
        friend = api.post("app", "/members", json={"name": "Han Meimei", "phone": "13800000002",
                                                   "referral_code": referrer["referral_code"]}).json
        api.post("app", "/members", json={"name": "Lin Tao", "phone": "13800000003",
                                          "referral_code": referrer["referral_code"]})
        bought = api.post("pos", "/purchases", json={"member_id": friend["id"], "receipt_no": "R1", "amount": "120.00"})
        assert bought.status_code == 201, bought.json
        funnel = get_ok(api, "marketing", "/reports/overview")["referrals"]

    assert funnel == get_ok(api, "marketing", f"/referral-campaigns/{campaign['id']}/stats")
    assert (funnel["campaign_id"], funnel["invited"], funnel["pending"], funnel["qualified"], funnel["rewarded"],
            funnel["points_granted"]) == (campaign["id"], 2, 1, 1, 1, 150)


def test_the_liability_by_expiry_month_over_http(api, world):
    with clock.frozen_at(N):
        report = get_ok(api, "marketing", "/reports/liability")

    assert report == {"items": [{"month": "2026-09", "points": 10}, {"month": "2027-05", "points": 450},
                                {"month": "2027-07", "points": 40}, {"month": "2027-08", "points": D("200.5")},
                                {"month": "2027-09", "points": D("80.5")}],
                      "never_expires": 30, "total": 811, "as_of": "2026-09-01T04:00:00Z"}


# --- the audit log --------------------------------------------------------------------------------

A0 = utc(2021, 6, 1, 2)  # 10:00 in Shanghai, years before the test keys were made (at the real time)
DURING = {"since": "2021-06-01T02:00:00Z", "until": "2021-06-02T02:00:00Z"}  # the day of the changes below


def at(hour):
    return A0 + timedelta(hours=hour)


def iso(instant):
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def ok(response, status=200):
    assert response.status_code == status, response.json
    return response.json


def make_every_kind_of_change(api, runner):
    """One change of each kind the issue lists, an hour apart, by the keys that may make them."""
    with clock.frozen_at(at(0)):
        keep = ok(api.post("app", "/members", json={"name": "Li Lei", "phone": "13800000001"}), 201)["id"]
        other = ok(api.post("app", "/members", json={"name": "Lei Li", "phone": "13800000002"}), 201)["id"]
    with clock.frozen_at(at(1)):
        silver = next(t for t in ok(api.get("marketing", "/tiers")) if t["code"] == "silver")
        ok(api.put("marketing", "/tiers/silver", json={"name": "银卡", "qualification": silver["qualification"],
                                                      "benefits": silver["benefits"]}))
    with clock.frozen_at(at(2)):
        ok(api.put("marketing", "/earning-rules", json={**ok(api.get("marketing", "/earning-rules")),
                                                        "pending_days": 3}))
    with clock.frozen_at(at(3)):
        campaign = ok(api.post("marketing", "/referral-campaigns", json={
            "name": "Bring a friend", "starts_at": "2021-06-01T00:00:00Z", "referrer_points": 100,
            "referee_points": 50, "min_first_purchase": "100.00", "qualify_within_days": 30,
            "link_template": "https://shop.example/join?ref={code}"}), 201)["id"]
    with clock.frozen_at(at(4)):
        ok(api.patch("marketing", f"/referral-campaigns/{campaign}", json={"name": "Bring two friends"}))
    with clock.frozen_at(at(5)):
        reward = ok(api.post("marketing", "/rewards", json={"name": "Tote bag", "kind": "goods", "points_cost": 100,
                                                            "voucher_valid_days": 30}), 201)["id"]
    with clock.frozen_at(at(6)):
        ok(api.patch("marketing", f"/rewards/{reward}", json={"points_cost": 120}))
    with clock.frozen_at(at(7)):
        ok(api.post("admin", f"/members/{keep}/adjustments", json={"points": 25, "reason": "goodwill"}), 201)
    with clock.frozen_at(at(8)):
        ok(api.put("admin", f"/members/{keep}/tier", json={"tier": "gold", "reason": "VIP"}))
    with clock.frozen_at(at(9)):
        ok(api.post("admin", f"/members/{keep}/merge", json={"from_member_id": other}))
    with clock.frozen_at(at(10)):
        created = runner.invoke(args=["api-keys", "create", "--role", "marketing", "--name", "Campaign tool"])
        assert created.exit_code == 0, created.output
        key_id = int(created.output.split("Created API key ")[1].split(" ")[0])
        plaintext = created.output.strip().splitlines()[-1]
    with clock.frozen_at(at(11)):
        assert runner.invoke(args=["api-keys", "revoke", str(key_id)]).exit_code == 0
    with clock.frozen_at(at(12)):
        ok(api.post("marketing", f"/members/{keep}/tags", json={"tags": ["vip"]}))
    return keep, other, campaign, reward, key_id, plaintext


@pytest.fixture
def changes(api, runner):
    return make_every_kind_of_change(api, runner)


def test_every_kind_of_change_is_in_the_audit_log_newest_first_with_who_and_when(api, app, changes):
    keep, other, campaign, reward, key_id, _ = changes
    marketing, admin = actor(app, "test marketing"), actor(app, "test admin")

    items, _ = all_pages(api, "/audit-log", **DURING)

    assert [(e["action"], e["entity_type"], e["entity_id"], e["actor"], e["created_at"]) for e in items] == [
        ("member.tags.add", "member", str(keep), marketing, iso(at(12))),
        ("api_key.revoke", "api_key", str(key_id), "cli", iso(at(11))),
        ("api_key.create", "api_key", str(key_id), "cli", iso(at(10))),
        ("member.merge", "member", str(keep), admin, iso(at(9))),
        ("member.tier.set", "member", str(keep), admin, iso(at(8))),
        ("points.adjust", "member", str(keep), admin, iso(at(7))),
        ("reward.update", "reward", str(reward), marketing, iso(at(6))),
        ("reward.create", "reward", str(reward), marketing, iso(at(5))),
        ("referral_campaign.update", "referral_campaign", str(campaign), marketing, iso(at(4))),
        ("referral_campaign.create", "referral_campaign", str(campaign), marketing, iso(at(3))),
        ("earning_rules.update", "earning_rules", "1", marketing, iso(at(2))),
        ("tier.update", "tier", "silver", marketing, iso(at(1))),
    ]
    assert [e["id"] for e in items] == sorted((e["id"] for e in items), reverse=True)


def test_each_entry_says_what_was_before_and_after(api, changes):
    keep, other, campaign, reward, key_id, plaintext = changes

    items, _ = all_pages(api, "/audit-log", **DURING)
    log = {e["action"]: (e["before"], e["after"]) for e in items}

    before, after = log["tier.update"]
    assert (before["name"], after["name"]) == ("白银", "银卡")
    before, after = log["earning_rules.update"]
    assert (before["pending_days"], after["pending_days"]) == (0, 3)
    before, after = log["referral_campaign.create"]
    assert before is None and after["name"] == "Bring a friend" and after["id"] == campaign
    before, after = log["referral_campaign.update"]
    assert (before["name"], after["name"]) == ("Bring a friend", "Bring two friends")
    before, after = log["reward.create"]
    assert before is None and (after["name"], D(after["points_cost"])) == ("Tote bag", 100)
    before, after = log["reward.update"]
    assert (D(before["points_cost"]), D(after["points_cost"])) == (100, 120)
    before, after = log["points.adjust"]
    assert (D(after["points"]), after["reason"]) == (25, "goodwill") and after["entry_id"]
    assert (D(before["available"]), D(after["available"])) == (0, 25)
    before, after = log["member.tier.set"]
    assert (before["tier"], after["tier"], after["reason"]) == ("ordinary", "gold", "VIP")
    before, after = log["member.merge"]
    assert (before["survivor"]["member_id"], before["other"]["member_id"]) == (keep, other)
    assert (D(before["survivor"]["available"]), D(after["survivor"]["available"])) == (25, 25)
    before, after = log["api_key.create"]
    assert before is None
    assert (after["id"], after["name"], after["role"], after["revoked"]) == (key_id, "Campaign tool", "marketing", False)
    before, after = log["api_key.revoke"]
    assert (before["revoked"], after["revoked"]) == (False, True)
    assert plaintext not in json.dumps(items) and plaintext[8:] not in json.dumps(items)  # at most the hint
    assert log["member.tags.add"] == ([], ["vip"])


FILTERS = [
    ({"entity_type": "reward"}, ["reward.update", "reward.create"]),
    ({"entity_type": "api_key"}, ["api_key.revoke", "api_key.create"]),
    ({"action": "tier.update"}, ["tier.update"]),
    ({"action": "member.merge"}, ["member.merge"]),
    ({"actor": "test admin"}, ["member.merge", "member.tier.set", "points.adjust"]),
    ({"actor": "cli"}, ["api_key.revoke", "api_key.create"]),
    ({"entity_type": "member", "actor": "test marketing"}, ["member.tags.add"]),
    ({"until": "2021-06-01T03:00:00Z"}, []),  # until is exclusive: the tier changed at 03:00
    ({"until": "2021-06-01T03:00:01Z"}, ["tier.update"]),
    ({"since": "2021-06-01T05:00:00Z", "until": "2021-06-01T07:00:00Z"},
     ["referral_campaign.update", "referral_campaign.create"]),
    ({"since": "2021-06-01T14:00:00Z"}, ["member.tags.add"]),
    ({"since": "2021-06-01T20:30:00+08:00"}, ["member.tags.add", "api_key.revoke"]),  # 12:30Z, with an offset
    ({"entity_type": "webhook"}, []),
]


def test_the_audit_log_is_filtered_by_entity_action_actor_and_time(api, changes):
    for query, actions in FILTERS:
        items, _ = all_pages(api, "/audit-log", **{**DURING, **query})  # DURING: not the test keys

        assert [e["action"] for e in items] == actions, query


def test_the_audit_log_is_paged_with_cursors(api, changes):
    everything, _ = all_pages(api, "/audit-log", **DURING)

    first = get_ok(api, "admin", "/audit-log", query_string={**DURING, "limit": 5})
    paged, pages = all_pages(api, "/audit-log", **DURING, limit=5)
    exact, exact_pages = all_pages(api, "/audit-log", **DURING, limit=12)

    assert len(first["items"]) == 5 and first["next_cursor"]
    assert (paged, pages) == (everything, 3)
    assert (exact, exact_pages) == (everything, 1)
    assert len(everything) == 12


def test_the_audit_log_also_has_the_keys_made_outside_any_request(api, keys):
    items, _ = all_pages(api, "/audit-log", entity_type="api_key")

    assert sorted(e["after"]["name"] for e in items) == ["member app", "test admin", "test marketing",
                                                         "till 1", "till 9"]
    assert {(e["action"], e["actor"]) for e in items} == {("api_key.create", "cli")}


def test_bad_audit_log_queries_are_a_422(api, keys):
    for query, field in [({"since": "yesterday"}, "since"), ({"until": "2021-06-01"}, "until"), ({"limit": 0}, "limit"),
                         ({"limit": 501}, "limit"), ({"cursor": "!!"}, "cursor"), ({"action": "x" * 51}, "action")]:
        response = api.get("admin", "/audit-log", query_string=query)

        assert list(assert_error(response, 422, "validation_error")["errors"]) == [field], query
