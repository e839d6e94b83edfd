"""Personal data over HTTP and the CLI: export, erase, and every staff read in the audit log."""
import sqlalchemy as sa

from loyalty.extensions import db
from loyalty.members.models import Member


def register(api, **fields):
    body = {"name": "Han Meimei", "phone": "13800138000", "email": "Han@Example.com", "birthday": "1990-05-01",
            "external_ids": [{"channel": "wechat", "id": "oX1"}], **fields}
    response = api.post("app", "/members", json=body)
    assert response.status_code == 201, response.json
    return response.json


def buy(api, member_id, receipt_no="R1", amount="100.00"):
    response = api.post("pos", "/purchases", json={"member_id": member_id, "store_id": "S1",
                                                   "receipt_no": receipt_no, "amount": amount})
    assert response.status_code == 201, response.json
    return response.json


def audit_reads(api, **query):
    response = api.get("admin", "/audit-log", query_string={"action": "personal_data.read", **query})
    assert response.status_code == 200, response.json
    return response.json["items"]


def test_export_holds_every_personal_field_identity_tag_and_entry(api):
    member = register(api)
    buy(api, member["id"])
    assert api.post("marketing", f"/members/{member['id']}/tags", json={"tags": ["vip"]}).status_code == 200
    response = api.get("admin", f"/members/{member['id']}/export")
    assert response.status_code == 200, response.json
    export = response.json
    assert export["member"]["name"] == "Han Meimei"
    assert export["member"]["phone"] == "+8613800138000"
    assert export["member"]["email"] == "han@example.com"
    assert export["member"]["birthday"] == "1990-05-01"
    assert export["identities"] == [{"channel": "wechat", "external_id": "oX1"}]
    assert export["tags"] == ["vip"]
    assert [entry["type"] for entry in export["entries"]] == ["earn_purchase"]
    assert export["purchases"][0]["receipt_no"] == "R1"
    assert export["points"]["available"] == 100


def test_only_an_admin_may_export_or_erase(api):
    member = register(api)
    for role in ("marketing", "pos", "app"):
        assert api.get(role, f"/members/{member['id']}/export").status_code == 403
        assert api.post(role, f"/members/{member['id']}/erase", json={"reason": "asked"}).status_code == 403


def test_erase_removes_personal_data_and_lookups_find_nobody(api, app, assert_ledger_ok):
    member = register(api)
    buy(api, member["id"])
    with app.app_context():
        card = db.session.scalar(sa.select(Member.card_token).where(Member.id == member["id"]))
        db.session.remove()
    assert api.post("marketing", f"/members/{member['id']}/tags", json={"tags": ["vip"]}).status_code == 200
    response = api.post("admin", f"/members/{member['id']}/erase", json={"reason": "member's request of 28 Nov"})
    assert response.status_code == 200, response.json
    erased = response.json
    assert erased["status"] == "erased"
    assert (erased["name"], erased["phone"], erased["email"], erased["birthday"]) == ("", None, None, None)
    assert erased["external_ids"] == []
    assert erased["referral_code"] != member["referral_code"]
    assert erased["member_no"] == member["member_no"]
    assert erased["points"]["available"] == 100  # the account stays
    for query in ({"phone": "13800138000"}, {"email": "han@example.com"}, {"card": card},
                  {"channel": "wechat", "external_id": "oX1"}):
        found = api.get("pos", "/members", query_string=query)
        assert found.status_code == 200 and found.json["items"] == [], query
    assert api.get("marketing", f"/members/{member['id']}/tags").json["tags"] == []
    export = api.get("admin", f"/members/{member['id']}/export").json
    assert export["identities"] == [] and export["tags"] == [] and export["member"]["phone"] is None
    assert [entry["type"] for entry in export["entries"]] == ["earn_purchase"]
    assert_ledger_ok()
    # The phone is free again: the person may register anew, as a new member.
    again = register(api)
    assert again["id"] != member["id"]


def test_an_erased_member_cannot_be_given_personal_data_again(api):
    member = register(api)
    assert api.post("admin", f"/members/{member['id']}/erase", json={"reason": "asked"}).status_code == 200
    response = api.patch("app", f"/members/{member['id']}", json={"name": "Back Again"})
    assert response.status_code == 409
    assert "erased" in response.json["message"]
    assert api.post("marketing", f"/members/{member['id']}/tags", json={"tags": ["vip"]}).status_code == 409
    other = register(api, phone="13900139000", email="x@example.com", external_ids=[])
    assert api.post("admin", f"/members/{other['id']}/merge",
                    json={"from_member_id": member["id"]}).status_code == 409
    # Erasing twice changes nothing and answers the same.
    again = api.post("admin", f"/members/{member['id']}/erase", json={"reason": "asked"})
    assert again.status_code == 200 and again.json["status"] == "erased"


def test_erase_needs_a_reason(api):
    member = register(api)
    for body in ({}, {"reason": "  "}):
        response = api.post("admin", f"/members/{member['id']}/erase", json=body)
        assert response.status_code == 422
    assert api.get("admin", f"/members/{member['id']}").json["status"] == "active"


def test_erase_lapses_the_members_pending_referrals(api):
    campaign = api.post("marketing", "/referral-campaigns", json={
        "name": "Bring a friend", "starts_at": "2020-01-01T00:00:00Z", "referrer_points": 100,
        "referee_points": 50, "min_first_purchase": "10.00", "qualify_within_days": 30,
        "link_template": "https://shop.example/r/{code}"})
    assert campaign.status_code == 201, campaign.json
    referrer = register(api)
    referee = register(api, phone="13900139000", email="b@example.com", external_ids=[],
                       referral_code=referrer["referral_code"])
    assert api.post("admin", f"/members/{referee['id']}/erase", json={"reason": "asked"}).status_code == 200
    buy(api, referee["id"], amount="50.00")
    assert api.get("app", f"/members/{referrer['id']}/referral").json["qualified"] == 0
    # An erased member's (new) code refers nobody.
    code = api.get("admin", f"/members/{referrer['id']}").json["referral_code"]
    api.post("admin", f"/members/{referrer['id']}/erase", json={"reason": "asked"})
    erased_code = api.get("admin", f"/members/{referrer['id']}").json["referral_code"]
    assert erased_code != code
    response = api.post("app", "/members", json={"name": "C", "referral_code": erased_code})
    assert response.status_code == 422


def test_staff_reads_of_personal_data_are_in_the_audit_log_and_pos_reads_are_not(api):
    member = register(api)
    api.get("pos", f"/members/{member['id']}")
    api.get("app", f"/members/{member['id']}")
    api.get("pos", "/members", query_string={"phone": "13800138000"})
    assert audit_reads(api) == []
    api.get("marketing", f"/members/{member['id']}")
    api.get("admin", f"/members/{member['id']}/export")
    api.get("marketing", "/segments/new/members", query_string={"format": "csv"})
    reads = audit_reads(api)
    assert [read["after"]["what"] for read in reads] == ["segment new csv", "export", "profile"]
    assert all(read["action"] == "personal_data.read" for read in reads)
    assert "marketing" in reads[2]["actor"] and reads[2]["entity_id"] == str(member["id"])
    assert "admin" in reads[1]["actor"]


def test_erase_is_audit_logged_with_the_reason_and_without_the_data(api):
    member = register(api)
    api.post("admin", f"/members/{member['id']}/erase", json={"reason": "member's request"})
    items = api.get("admin", "/audit-log", query_string={"action": "member.erase"}).json["items"]
    assert len(items) == 1
    assert items[0]["after"]["reason"] == "member's request"
    assert "13800138000" not in str(items[0]) and "Han" not in str(items[0])


def test_the_cli_erases_a_member(api, runner, assert_ledger_ok):
    member = register(api)
    buy(api, member["id"])
    result = runner.invoke(args=["members", "erase", str(member["id"]), "--reason", "written request"])
    assert result.exit_code == 0, result.output
    assert "erased" in result.output
    assert api.get("admin", f"/members/{member['id']}").json["phone"] is None
    missing = runner.invoke(args=["members", "erase", "999999", "--reason", "x"])
    assert missing.exit_code != 0 and "No member" in missing.output
    verify = runner.invoke(args=["ledger", "verify"])
    assert verify.exit_code == 0, verify.output
    assert_ledger_ok()


def test_export_holds_the_members_points_holds_open_and_closed_with_their_captures_and_releases(api):
    member = register(api)
    buy(api, member["id"], amount="500.00")

    def hold(hold_no, points, ttl_seconds=900):
        response = api.post("pos", "/points-holds", json={"member_id": member["id"], "store_id": "S1",
                                                          "hold_no": hold_no, "points": points,
                                                          "ttl_seconds": ttl_seconds})
        return response.json

    captured, released, still_open = hold("H1", 100), hold("H2", 50), hold("H3", 20)
    payment = api.post("pos", f"/points-holds/{captured['hold_id']}/capture", json={"payment_no": "P1", "points": 60})
    assert api.post("pos", f"/points-holds/{released['hold_id']}/release").status_code == 200
    assert hold("H4", 10_000)["error"] == "insufficient_points"

    export = api.get("admin", f"/members/{member['id']}/export").json

    assert [(h["hold_no"], h["status"], h["points"], h["captured_points"], h["payment_id"])
            for h in export["points_holds"]] == [
        ("H1", "captured", 100, 60, payment.json["payment_id"]), ("H2", "released", 50, 0, None),
        ("H3", "held", 20, 0, None)]
    assert export["points_holds"][0]["closed_at"] and export["points_holds"][2]["closed_at"] is None
    assert [p["payment_no"] for p in export["points_payments"]] == ["P1"]
    assert [(r["hold_no"], r["error"], r["points"]) for r in export["points_hold_refusals"]] == [
        ("H4", "insufficient_points", 10_000)]
    assert export["points_payment_refusals"] == []
