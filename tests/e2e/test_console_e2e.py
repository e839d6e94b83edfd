"""A marketer's and an admin's day in a real browser: sign in (wrong password, lockout), the
first-sign-in password change, find a member and adjust points, a referral campaign and a
reward, a double-points promotion seen on the dashboard and in the simulator, a segment's CSV, the
language switch, sign out."""
import re

import sqlalchemy as sa
from playwright.sync_api import expect

from loyalty.extensions import db
from loyalty.points.service import points_summary
from loyalty.promotions.models import Promotion
from loyalty.referrals.models import ReferralCampaign
from loyalty.rewards.models import Reward
from loyalty.staff import service as staff_service
from tests import factories

PASSWORD = "a long enough password"


def create_staff(app, email, role):
    with app.app_context():
        _, once = staff_service.create_staff(email, role)
        db.session.remove()
    return once


def sign_in(page, email, password):
    page.goto("/console/sign-in?lang=en")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def first_sign_in(page, email, once):
    sign_in(page, email, once)
    expect(page).to_have_url(re.compile(r"/console/password$"))
    page.get_by_label("Current password").fill(once)
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_label("New password again").fill(PASSWORD)
    page.get_by_role("button", name="Save the new password").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_wrong_password_then_lockout_after_five(app, page):
    once = create_staff(app, "lock@example.com", "marketing")
    sign_in(page, "lock@example.com", "wrong password")
    expect(page.get_by_role("alert")).to_have_text("The email or the password is wrong.")
    for _ in range(4):
        sign_in(page, "lock@example.com", "wrong password")
    expect(page.get_by_role("alert")).to_contain_text("locked for 15 minutes")
    sign_in(page, "lock@example.com", once)  # the right one, but locked
    expect(page.get_by_role("alert")).to_contain_text("locked")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))


def test_admin_finds_a_member_by_phone_and_adjusts_points(app, page):
    with app.app_context():
        member = factories.member(name="Wang Fang", phone="+8613800138000")
        factories.purchase(member.id, "199.50")
        db.session.remove()
    first_sign_in(page, "alice@example.com", create_staff(app, "alice@example.com", "admin"))
    page.get_by_role("navigation").get_by_role("link", name="Members").click()
    page.get_by_label("Phone, member number, email or card token").fill("138 0013 8000")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("heading", name=re.compile("Wang Fang"))).to_be_visible()
    expect(page.locator("#available")).to_have_text("199.50")
    page.get_by_label("Points (negative to remove)").fill("0")
    page.locator("form[action$='/adjust']").get_by_label("Reason").fill("goodwill")
    page.get_by_role("button", name="Adjust", exact=True).click()
    expect(page.locator("form[action$='/adjust']")).to_contain_text("0 changes nothing")
    page.get_by_label("Points (negative to remove)").fill("50.50")
    page.locator("form[action$='/adjust']").get_by_label("Reason").fill("goodwill")
    page.get_by_role("button", name="Adjust", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Points adjusted.")
    expect(page.locator("#available")).to_have_text("250.00")
    with app.app_context():
        assert str(points_summary(member.id)["available"]) == "250.00"
        db.session.remove()
    page.get_by_role("navigation").get_by_role("link", name="Audit log").click()
    expect(page.locator("table")).to_contain_text("staff:alice@example.com (admin)")


def test_marketing_creates_a_referral_campaign_and_a_reward_and_downloads_a_segment(app, page, tmp_path):
    with app.app_context():
        factories.member(name="Li Lei")
        db.session.remove()
    first_sign_in(page, "mark@example.com", create_staff(app, "mark@example.com", "marketing"))
    expect(page.get_by_role("navigation").get_by_role("link", name="Audit log")).to_have_count(0)

    page.get_by_role("navigation").get_by_role("link", name="Referrals").click()
    page.get_by_role("link", name="New referral campaign").click()
    page.get_by_label("Name").fill("Bring a friend")
    page.get_by_label("Referrer points").fill("100")
    page.get_by_label("New member points").fill("abc")
    page.get_by_role("button", name="Create campaign").click()
    expect(page.locator("#referee_points-error")).to_be_visible()
    page.get_by_label("New member points").fill("50")
    page.get_by_role("button", name="Create campaign").click()
    expect(page.get_by_role("status")).to_have_text("Referral campaign created.")
    expect(page.locator("table")).to_contain_text("Bring a friend")

    page.get_by_role("navigation").get_by_role("link", name="Rewards").click()
    page.get_by_role("link", name="New reward").click()
    page.get_by_label("Name").fill("Coffee voucher")
    page.get_by_label("Kind").select_option("coupon")
    page.get_by_label("Points cost").fill("50")
    page.get_by_label("Stock (empty: unlimited)").fill("100")
    page.get_by_role("button", name="Add reward").click()
    expect(page.get_by_role("status")).to_have_text("Reward added to the catalog.")
    expect(page.locator("table")).to_contain_text("Coffee voucher")
    with app.app_context():
        assert db.session.scalars(sa.select(ReferralCampaign.name)).all() == ["Bring a friend"]
        assert db.session.scalars(sa.select(Reward.name)).all() == ["Coffee voucher"]
        db.session.remove()

    page.get_by_role("navigation").get_by_role("link", name="Segments").click()
    with page.expect_download() as download:
        page.locator("a[href='/console/segments/tier:ordinary/csv']").click()
    saved = tmp_path / "segment.csv"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "tier-ordinary.csv"
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("member_no,name,phone") and "Li Lei" in lines[1]


def test_language_switch_is_remembered_and_sign_out(app, page):
    first_sign_in(page, "alice@example.com", create_staff(app, "alice@example.com", "admin"))
    page.get_by_role("link", name="中文").click()
    expect(page.get_by_role("heading", name="仪表盘")).to_be_visible()
    page.get_by_role("navigation").get_by_role("link", name="会员", exact=True).click()
    expect(page.get_by_role("heading", name="会员")).to_be_visible()  # remembered across pages
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", name="Members")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto("/console/")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))


def test_member_history_pages_in_place_with_htmx(app, page):
    with app.app_context():
        member = factories.member(name="Han Meimei")
        for number in range(25):
            factories.purchase(member.id, f"{number + 1}.00")
        db.session.remove()
    first_sign_in(page, "alice@example.com", create_staff(app, "alice@example.com", "admin"))
    page.goto(f"/console/members/{member.id}?lang=en")
    history = page.locator("#history")
    expect(history).to_contain_text("Purchase")
    expect(history.locator("tbody tr")).to_have_count(20)
    page.evaluate("window.marker = 'still the same page'")
    history.get_by_role("link", name="Next page").click()
    expect(page.locator("#history tbody tr")).to_have_count(5)
    expect(page).to_have_url(re.compile(r"cursor="))
    assert page.evaluate("window.marker") == "still the same page"  # swapped in place, not reloaded


def test_marketing_starts_a_double_points_promotion_sees_it_on_the_dashboard_and_simulates_a_basket(app, page):
    with app.app_context():
        factories.member(name="Wang Fang", phone="+8613800138000")
        db.session.remove()
    first_sign_in(page, "mark@example.com", create_staff(app, "mark@example.com", "marketing"))
    expect(page.locator("#active-promotions")).to_contain_text("No promotion is active.")

    page.get_by_role("navigation").get_by_role("link", name="Promotions").click()
    page.get_by_role("link", name="New promotion").click()
    page.get_by_label("Name").fill("Double points")
    page.get_by_label("Status").select_option("active")
    page.get_by_label("Starts").fill("2026-01-01T00:00")
    page.get_by_label("Effect type").select_option("multiplier")
    page.get_by_label("Multiplier").fill("1")
    page.get_by_role("button", name="Create promotion").click()
    expect(page.locator("#effect-value-error")).to_have_text("A multiplier must be more than 1 and at most 10.")
    expect(page.get_by_label("Name")).to_have_value("Double points")  # what was typed stays
    page.get_by_label("Multiplier").fill("2")
    page.get_by_role("button", name="Create promotion").click()
    expect(page.get_by_role("status")).to_have_text("Promotion created.")
    expect(page.locator("#promotion-effect")).to_have_text("2× points")
    with app.app_context():
        assert [(p.name, p.status, p.effect) for p in db.session.scalars(sa.select(Promotion))] == [
            ("Double points", "active", {"type": "multiplier", "value": "2.00"})]
        db.session.remove()

    page.get_by_role("navigation").get_by_role("link", name="Dashboard").click()
    active = page.locator("#active-promotions")
    expect(active).to_contain_text("Double points")
    expect(active).to_contain_text("2× points")
    expect(active).to_contain_text("Until stopped")

    page.get_by_role("navigation").get_by_role("link", name="Promotions").click()
    page.get_by_role("link", name="Simulate a basket").click()
    page.get_by_label("Store").fill("S1")
    page.get_by_label("Amount", exact=True).fill("100.00")
    page.get_by_label("Member (optional)").fill("138 0013 8000")
    page.get_by_label("Items (optional)").fill("T-1, tea, 2, 60.00\nC-1, cakes, 1, 40.00")
    page.get_by_role("button", name="Simulate", exact=True).click()
    result = page.locator("#simulation")
    expect(result.get_by_role("link", name="Double points")).to_be_visible()
    expect(page.locator("#simulated-total")).to_have_text("200.00")

    page.get_by_role("navigation").get_by_role("link", name="Promotions").click()
    page.get_by_role("link", name="Double points").click()
    page.get_by_role("link", name="Stop", exact=True).click()
    expect(page.get_by_role("heading", name="Stop Double points?")).to_be_visible()
    page.get_by_role("button", name="Stop the promotion").click()
    expect(page.get_by_role("status")).to_contain_text("Promotion stopped")
    expect(page.locator("#promotion-status")).to_have_text("stopped")
    page.get_by_role("navigation").get_by_role("link", name="Dashboard").click()
    expect(page.locator("#active-promotions")).to_contain_text("No promotion is active.")
