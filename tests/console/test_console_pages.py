"""Every console page and form: who may open it, what it shows, that a refusal says the API's
sentence next to the field, and that a change is audit-logged with the staff member as the actor."""
import re
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.audit import AuditEntry
from loyalty.bulk_awards import service as award_service
from loyalty.bulk_awards.models import BulkAward
from loyalty.extensions import db
from loyalty.members.models import Member
from loyalty.points.service import points_summary
from loyalty.referrals.models import ReferralCampaign
from loyalty.rewards.models import Reward
from tests import factories
from tests.console.conftest import text

ADMIN_ACTOR = "staff:alice@example.com (admin)"
MARKETING_ACTOR = "staff:mark@example.com (marketing)"

MARKETING_PAGES = ["/console/", "/console/members", "/console/tiers", "/console/earning-rules", "/console/promotions",
                   "/console/promotions/new", "/console/promotions/simulate", "/console/referrals",
                   "/console/referrals/new", "/console/rewards", "/console/rewards/new", "/console/segments",
                   "/console/segments/tier:ordinary", "/console/segments/active"]
ADMIN_PAGES = ["/console/audit-log", "/console/webhooks", "/console/jobs", "/console/api-keys"]


@pytest.fixture
def member_id(app):
    with app.app_context():
        member = factories.member(name="Wang Fang", phone="+8613800138000", email="wang@example.com")
        factories.purchase(member.id, "199.50")
        db.session.remove()
    return member.id


def audit_entries(app, action):
    with app.app_context():
        rows = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)).all()
        db.session.remove()
    return rows


@pytest.mark.parametrize("path", MARKETING_PAGES + ADMIN_PAGES)
def test_admin_opens_every_page(admin, member_id, path):
    assert admin.get(path).status_code == 200


@pytest.mark.parametrize("path", MARKETING_PAGES)
def test_marketing_opens_marketing_pages(marketing, member_id, path):
    assert marketing.get(path).status_code == 200


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_marketing_is_refused_admin_pages_with_a_sentence(marketing, path):
    response = marketing.get(path)
    assert response.status_code == 403
    assert "Your role may not open this page" in text(response)


def test_navigation_names_the_pages_of_the_contract_per_role(admin, marketing):
    admin_page, marketing_page = text(admin.get("/console/?lang=en")), text(marketing.get("/console/?lang=en"))
    for label in ("Dashboard", "Members", "Tiers", "Earning rules", "Promotions", "Referrals", "Rewards", "Segments",
                  "Sign out"):
        assert f">{label}<" in admin_page and f">{label}<" in marketing_page
    for label in ("Audit log", "Webhooks", "Jobs", "API keys"):
        assert f">{label}<" in admin_page and f">{label}<" not in marketing_page


def test_every_form_field_has_a_visible_label(admin, member_id):
    for path in MARKETING_PAGES + ADMIN_PAGES + [f"/console/members/{member_id}"]:
        page = text(admin.get(path))
        for field_id in set(re.findall(r'<(?:input|select) id="(f-[^"]+)"', page)):
            assert f'<label for="{field_id}">' in page, (path, field_id)


def test_dashboard_shows_the_figures_and_the_charts_data(admin, member_id):
    page = text(admin.get("/console/?lang=en"))
    assert "Members by tier" in page and 'id="chart-data"' in page and "199.50" in page
    assert "vendor/echarts-5.5.1.min.js" in page and "http" not in page.split("<body")[0].replace("http-equiv", "")


def test_language_switch_is_remembered_and_accept_language_decides_otherwise(app, admin):
    assert ">仪表盘<" in text(admin.get("/console/?lang=zh"))
    assert ">仪表盘<" in text(admin.get("/console/"))  # remembered
    assert ">Dashboard<" in text(admin.get("/console/?lang=en"))
    fresh = app.test_client()
    assert "登录" in text(fresh.get("/console/sign-in", headers={"Accept-Language": "zh-CN,zh;q=0.9"}))
    assert ">Sign in<" in text(app.test_client().get("/console/sign-in", headers={"Accept-Language": "en-US"}))


def test_tier_names_are_the_programmes_own(admin, member_id):
    assert "普通" in text(admin.get("/console/?lang=en"))


@pytest.mark.parametrize("typed", ["138 0013 8000", "+86 138-0013-8000", "wang@EXAMPLE.com"])
def test_find_a_member_by_phone_in_any_spelling_or_email(admin, member_id, typed):
    response = admin.get("/console/members", query_string={"q": typed})
    assert response.location == f"/console/members/{member_id}"


def test_find_a_member_by_member_number_and_card_token(app, admin, member_id):
    with app.app_context():
        member = db.session.get(Member, member_id)
        number, card = member.member_no, member.card_token
    assert admin.get("/console/members", query_string={"q": number}).location == f"/console/members/{member_id}"
    assert admin.get("/console/members", query_string={"q": card}).location == f"/console/members/{member_id}"
    assert "No member matches" in text(admin.get("/console/members", query_string={"q": "nobody", "lang": "en"}))


def test_member_page_shows_points_expiry_tier_history_and_tags(admin, member_id):
    page = text(admin.get(f"/console/members/{member_id}?lang=en"))
    for expected in ("Wang Fang", "199.50", "Expiry", "普通", "History", "Redemptions", "Tags"):
        assert expected in page


def test_member_history_is_paged(app, admin, member_id):
    with app.app_context():
        for _ in range(25):
            factories.purchase(member_id, "1.00")
        db.session.remove()
    first = text(admin.get(f"/console/members/{member_id}?lang=en"))
    assert "Next page" in first
    cursor = first.split("cursor=")[1].split('"')[0]
    second = text(admin.get(f"/console/members/{member_id}?cursor={cursor}&lang=en"))
    assert "First page" in second and "Next page" not in second


def test_admin_adjusts_points_and_the_audit_log_names_the_staff_member(app, admin, member_id):
    response = admin.post(f"/console/members/{member_id}/adjust", {"points": "50.25", "reason": "goodwill"})
    assert response.status_code == 302
    with app.app_context():
        assert points_summary(member_id)["available"] == Decimal("249.75")
    assert [e.actor for e in audit_entries(app, "points.adjust")] == [ADMIN_ACTOR]


def test_an_adjustment_of_zero_is_refused_with_the_services_message_next_to_the_field(app, admin, member_id):
    response = admin.post(f"/console/members/{member_id}/adjust", {"points": "0", "reason": "goodwill"})
    assert response.status_code == 422
    assert "Must not be 0." in text(response)
    bad = admin.post(f"/console/members/{member_id}/adjust", {"points": "1.234", "reason": "x"})
    assert bad.status_code == 422
    page = text(bad)
    assert 'id="points-error"' in page and 'id="reason-error"' in page
    assert audit_entries(app, "points.adjust") == []


def test_marketing_may_not_adjust_points_set_tiers_or_merge(app, marketing, member_id):
    for path, data in ((f"/console/members/{member_id}/adjust", {"points": "5", "reason": "nice try"}),
                       (f"/console/members/{member_id}/tier", {"tier": "gold", "reason": "vip"}),
                       (f"/console/members/{member_id}/merge", {"from_member_id": "2"})):
        assert marketing.post(path, data).status_code == 403
    with app.app_context():
        assert points_summary(member_id)["available"] == Decimal("199.50")


def test_marketing_tags_and_untags_a_member(app, marketing, member_id):
    assert marketing.post(f"/console/members/{member_id}/tags", {"tag": "VIP"}).status_code == 302
    assert ">vip<" in text(marketing.get(f"/console/members/{member_id}"))
    assert [e.actor for e in audit_entries(app, "member.tags.add")] == [MARKETING_ACTOR]
    assert marketing.post(f"/console/members/{member_id}/tags", {"tag": "vip", "remove": "1"}).status_code == 302
    assert ">vip<" not in text(marketing.get(f"/console/members/{member_id}"))
    refused = marketing.post(f"/console/members/{member_id}/tags", {"tag": "not a tag!"})
    assert refused.status_code == 422


def test_admin_sets_a_tier_with_a_guarantee(app, admin, member_id):
    until = (clock.local_date(clock.now(), "Asia/Shanghai") + timedelta(days=90)).isoformat()
    response = admin.post(f"/console/members/{member_id}/tier", {"tier": "gold", "reason": "VIP guest",
                                                                  "guaranteed_until": until})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(Member, member_id).tier_code == "gold"
    assert [e.actor for e in audit_entries(app, "member.tier.set")] == [ADMIN_ACTOR]
    refused = admin.post(f"/console/members/{member_id}/tier", {"tier": "gold", "reason": "x",
                                                                 "guaranteed_until": "2001-01-01"})
    assert refused.status_code == 422


def test_admin_merges_a_second_record(app, admin, member_id):
    with app.app_context():
        other = factories.member(name="Wang Fang (old)")
        factories.purchase(other.id, "10.00")
        db.session.remove()
    assert admin.post(f"/console/members/{member_id}/merge", {"from_member_id": str(other.id)}).status_code == 302
    with app.app_context():
        assert db.session.get(Member, other.id).merged_into_id == member_id
    refused = admin.post(f"/console/members/{member_id}/merge", {"from_member_id": str(member_id)})
    assert refused.status_code == 422


def test_an_out_of_order_ladder_is_refused_next_to_the_field(app, marketing):
    response = marketing.post("/console/tiers/silver", {
        "name": "白银", "qualification.spend": "999999.00", "qualification.activities": "0",
        "qualification.mode": "any", "benefits.earn_multiplier": "1.2", "benefits.birthday_points": "0",
        "benefits.service_level": "", "benefits.perks": ""})
    assert response.status_code == 422
    page = text(response)
    section = page.split('id="tier-silver"')[1].split("</section>")[0]
    assert "field-error" in section and "thresholds must not be below" in section
    assert audit_entries(app, "tier.update") == []


def test_marketing_edits_a_tier(app, marketing):
    page = text(marketing.get("/console/tiers"))
    assert "白银" in page
    response = marketing.post("/console/tiers/silver", {
        "name": "白银会员", "qualification.spend": "3000.00", "qualification.activities": "10",
        "qualification.mode": "any", "benefits.earn_multiplier": "1.2", "benefits.birthday_points": "50",
        "benefits.service_level": "priority", "benefits.perks": "free gift wrap, birthday coupon"})
    assert response.status_code == 302, text(response)
    assert "白银会员" in text(marketing.get("/console/tiers"))
    assert [e.actor for e in audit_entries(app, "tier.update")] == [MARKETING_ACTOR]


def audit_entries_like(app, prefix):
    with app.app_context():
        rows = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action.startswith(prefix))).all()
        db.session.remove()
    return rows


def test_marketing_edits_the_earning_rules_with_the_apis_checks(app, marketing):
    form = {"points_per_unit": "2", "min_amount": "0.00", "pending_days": "0", "expiry_policy": "end_of_year",
            "expiry_days": "365", "payment_points_per_unit": "100", "excluded_categories": "tobacco, gift_card",
            "excluded_skus": ""}
    assert marketing.post("/console/earning-rules", form).status_code == 302
    page = text(marketing.get("/console/earning-rules"))
    assert "tobacco, gift_card" in page
    assert audit_entries_like(app, "earning_rules")[-1].actor == MARKETING_ACTOR
    refused = marketing.post("/console/earning-rules", {**form, "points_per_unit": "1000"})
    assert refused.status_code == 422
    assert 'id="points_per_unit-error"' in text(refused)


def test_marketing_creates_edits_and_stops_a_referral_campaign(app, marketing):
    refused = marketing.post("/console/referrals/new", {"name": "", "referrer_points": "abc", "referee_points": "10"})
    assert refused.status_code == 422
    assert 'id="referrer_points-error"' in text(refused) and 'id="name-error"' in text(refused)
    created = marketing.post("/console/referrals/new", {"name": "Bring a friend", "referrer_points": "100",
                                                        "referee_points": "50", "min_first_purchase": "20.00"})
    assert created.status_code == 302
    with app.app_context():
        campaign = db.session.scalars(sa.select(ReferralCampaign)).one()
        db.session.remove()
    page = text(marketing.get("/console/referrals?lang=en"))
    assert "Bring a friend" in page and "running" in page
    edited = marketing.post(f"/console/referrals/{campaign.id}", {"name": "Bring two friends", "referrer_points": "120",
                                                                  "referee_points": "50", "ends_at": ""})
    assert edited.status_code == 302
    assert marketing.post(f"/console/referrals/{campaign.id}/stop").status_code == 302
    with app.app_context():
        stopped = db.session.get(ReferralCampaign, campaign.id)
        assert stopped.name == "Bring two friends" and stopped.ends_at <= clock.now()
    actors = {e.actor for e in audit_entries_like(app, "referral_campaign")}
    assert actors == {MARKETING_ACTOR}


def test_a_second_running_campaign_is_refused_with_the_services_sentence(marketing):
    marketing.post("/console/referrals/new", {"name": "One", "referrer_points": "1", "referee_points": "1"})
    second = marketing.post("/console/referrals/new", {"name": "Two", "referrer_points": "1", "referee_points": "1"})
    assert second.status_code == 422
    assert 'class="flash error"' in text(second)


def test_marketing_adds_and_edits_a_reward(app, marketing):
    refused = marketing.post("/console/rewards/new", {"name": "Coffee", "kind": "coupon", "points_cost": "-5",
                                                      "active": "1"})
    assert refused.status_code == 422 and 'id="points_cost-error"' in text(refused)
    created = marketing.post("/console/rewards/new", {"name": "Coffee voucher", "kind": "coupon", "points_cost": "50",
                                                      "stock": "100", "limit_period": "month", "active": "1"})
    assert created.status_code == 302, text(created)
    with app.app_context():
        reward = db.session.scalars(sa.select(Reward)).one()
        db.session.remove()
    assert "Coffee voucher" in text(marketing.get("/console/rewards"))
    edited = marketing.post(f"/console/rewards/{reward.id}", {"name": "Coffee voucher", "kind": "coupon",
                                                              "points_cost": "60", "stock": "", "limit_period": "month"})
    assert edited.status_code == 302
    with app.app_context():
        reward = db.session.get(Reward, reward.id)
        assert reward.points_cost == Decimal("60.00") and reward.stock is None and reward.active is False
    assert {e.actor for e in audit_entries_like(app, "reward")} == {MARKETING_ACTOR}


def test_segments_list_counts_and_pages_and_csv(app, marketing, member_id):
    page = text(marketing.get("/console/segments?lang=en"))
    assert "tier:ordinary" in page
    members = text(marketing.get("/console/segments/tier:ordinary"))
    assert "Wang Fang" in members and "+86138****8000" in members
    csv = marketing.get("/console/segments/tier:ordinary/csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    assert 'filename="tier-ordinary.csv"' in csv.headers["Content-Disposition"]
    body = csv.get_data(as_text=True)
    assert body.startswith("member_no,name,phone") and "Wang Fang" in body and "13800138000" not in body
    assert marketing.get("/console/segments/nonsense").status_code == 404
    assert marketing.get("/console/segments/nonsense/csv").status_code == 404


def test_admin_creates_an_api_key_shown_once_and_revokes_it(app, admin):
    response = admin.post("/console/api-keys", {"role": "marketing", "name": "Campaign tool"})
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    key = text(response).split('id="new-key">')[1].split("<")[0]
    assert key.startswith("lk_")
    assert key not in text(admin.get("/console/api-keys"))
    assert app.test_client().get("/api/v1/reports/overview", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with app.app_context():
        from_db = db.session.execute(sa.text("SELECT id FROM api_keys WHERE name = 'Campaign tool'")).scalar()
        db.session.remove()
    assert admin.post(f"/console/api-keys/{from_db}/revoke").status_code == 302
    assert app.test_client().get("/api/v1/reports/overview", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert {e.actor for e in audit_entries_like(app, "api_key")} == {ADMIN_ACTOR}
    refused = admin.post("/console/api-keys", {"role": "pos", "name": "Till"})
    assert refused.status_code == 422 and "store" in text(refused)


def test_admin_runs_a_job_now_and_sees_its_run(admin, member_id):
    assert admin.post("/console/jobs/members.lifecycle/run").status_code == 302
    page = text(admin.get("/console/jobs?lang=en"))
    assert "members.lifecycle" in page and "succeeded" in page
    assert "There is no such job." in text(admin.post("/console/jobs/nope/run", follow_redirects=True))


def test_admin_sees_webhook_deliveries_and_replays_the_dead(app, admin, api):
    created = api.post("admin", "/webhooks", json={"url": "https://93.184.215.14/hook", "secret": "s" * 20,
                                                  "events": ["member.created"]})
    assert created.status_code == 201, created.json
    subscription_id = created.json["id"]
    api.post("app", "/members", json={"name": "Wang Fang"})
    page = text(admin.get(f"/console/webhooks/{subscription_id}"))
    assert "pending" in page or "待处理" in page
    response = admin.post(f"/console/webhooks/{subscription_id}/replay", follow_redirects=True)
    assert response.status_code == 200
    assert "https://93.184.215.14/hook" in text(admin.get("/console/webhooks"))


def test_audit_log_page_lists_and_filters(admin, member_id):
    admin.post(f"/console/members/{member_id}/adjust", {"points": "5", "reason": "goodwill"})
    page = text(admin.get("/console/audit-log?actor=alice"))
    assert ADMIN_ACTOR in page and "points.adjust" in page
    assert ADMIN_ACTOR not in text(admin.get("/console/audit-log?actor=nobody"))


def test_a_missing_record_is_a_404_page_not_json(admin):
    response = admin.get("/console/members/999999")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert admin.get("/console/rewards/999999").status_code == 404


def test_a_nul_in_a_form_is_refused_before_anything(admin, member_id):
    response = admin.post(f"/console/members/{member_id}/adjust", {"points": "5", "reason": "bad\x00"})
    assert response.status_code == 400


def test_staff_reads_of_a_member_and_segment_exports_are_audit_logged(app, marketing, member_id):
    marketing.get(f"/console/members/{member_id}")
    marketing.get("/console/segments/tier:ordinary/csv")
    reads = audit_entries(app, "personal_data.read")
    assert [(e.actor, e.entity_id, e.after["what"]) for e in reads] == [
        (MARKETING_ACTOR, str(member_id), "profile (console member page)"),
        (MARKETING_ACTOR, None, "segment tier:ordinary (console CSV)")]


def test_field_messages_are_shown_in_chinese_on_a_chinese_page(admin, member_id):
    admin.get("/console/?lang=zh")
    refused = admin.post(f"/console/members/{member_id}/adjust", {"points": "0", "reason": "goodwill"})
    assert refused.status_code == 422 and "不能为 0。" in text(refused)


def test_admin_cancels_a_bulk_award_from_the_jobs_page_and_retries_a_failed_one(app, admin, api, member_id):
    queued = api.post("marketing", "/bulk-awards", json={"award_no": "BA-1", "segment": "tier:ordinary",
                                                          "points": 5, "reason": "Anniversary"})
    assert queued.status_code == 202, queued.json
    page = text(admin.get("/console/jobs?lang=en"))
    assert "Bulk awards" in page and "BA-1" in page and "0 / 1" in page
    refused = text(admin.post(f"/console/bulk-awards/{queued.json['id']}/cancel", data={"reason": " "},
                              follow_redirects=True))
    assert "Say why the award is cancelled" in refused
    done = text(admin.post(f"/console/bulk-awards/{queued.json['id']}/cancel", data={"reason": "Wrong segment"},
                           follow_redirects=True))
    assert "Bulk award BA-1 cancelled: 0 of 1 members had been credited" in done
    assert "cancelled" in done and "Cancel award" not in done
    award = api.get("marketing", f"/bulk-awards/{queued.json['id']}").json
    assert (award["status"], award["awarded"]) == ("failed", 0) and award["cancelled_at"]
    assert audit_entries(app, "bulk_award.cancel")
    with app.app_context():  # another award, failed after its last attempt
        second = award_service.queue_award(award_service.Order("BA-2", "tier:ordinary", Decimal("5"), "Again"), "test")
        db.session.execute(sa.update(BulkAward).where(BulkAward.id == second.id).values(status="failed", attempts=5))
        db.session.commit()
        second_id = second.id
        db.session.remove()
    retried = text(admin.post(f"/console/bulk-awards/{second_id}/retry", follow_redirects=True))
    assert "Bulk award BA-2 queued again." in retried
    assert api.get("marketing", f"/bulk-awards/{second_id}").json["status"] == "queued"
