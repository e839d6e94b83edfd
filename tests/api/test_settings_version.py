"""A settings change made by any process reaches every other process's next request, at once: each
request reads the settings version with its API key (loyalty/settings_cache.py), and a value this
process kept under an older version is read again. Two app instances on one database stand for two
gunicorn workers (or two hosts): each has its own cache."""
from dataclasses import replace
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loyalty import create_app
from loyalty.extensions import db
from loyalty.points import service as points
from loyalty.points.rules import EarningRules
from loyalty.settings_cache import SettingsVersion
from loyalty.tiers import service as tiers
from loyalty.webhooks import service as webhooks
from loyalty.webhooks.models import Delivery


@pytest.fixture
def other_process(app):
    """Another worker on the same database, with caches of its own."""
    other = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                        "LOYALTY_LOG_LEVEL": "WARNING"})
    yield other
    with other.app_context():
        db.engine.dispose()


def register(api, phone):
    answer = api.post("app", "/members", json={"phone": phone, "name": "Test"})
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["id"]


def buy(api, member_id, receipt_no, amount="100.00"):
    answer = api.post("pos", "/purchases", json={"member_id": member_id, "store_id": "S1",
                                                  "receipt_no": receipt_no, "amount": amount})
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def version(app):
    with app.app_context():
        value = db.session.scalar(sa.select(SettingsVersion.version))
        db.session.remove()
    return value


def test_an_earning_rules_change_in_another_process_applies_to_the_next_purchase_here(api, other_process):
    member_id = register(api, "13800000001")
    assert Decimal(str(buy(api, member_id, "R1")["points_earned"])) == Decimal("100")  # rules now kept here

    with other_process.app_context():
        points.update_rules(replace(EarningRules(), points_per_unit=Decimal("2")), actor="other worker")
        db.session.remove()

    assert Decimal(str(buy(api, member_id, "R2")["points_earned"])) == Decimal("200")


def test_a_tier_renamed_in_another_process_shows_in_the_next_answer_here(api, other_process):
    member_id = register(api, "13800000002")
    assert api.get("app", f"/members/{member_id}").get_json()["tier"]["name"] == "普通"

    with other_process.app_context():
        rule = tiers.ladder()[0]
        tiers.update_tier("ordinary", "Member", {"spend": rule.spend, "activities": rule.activities,
                                                 "mode": rule.mode},
                          {"earn_multiplier": rule.earn_multiplier, "birthday_points": rule.birthday_points,
                           "service_level": rule.service_level, "perks": list(rule.perks)},
                          actor="other worker")
        db.session.remove()

    assert api.get("app", f"/members/{member_id}").get_json()["tier"]["name"] == "Member"


def test_a_webhook_subscribed_in_another_process_hears_the_next_purchase_here(app, api, other_process):
    member_id = register(api, "13800000003")
    buy(api, member_id, "R1")  # nobody listens yet, and this process now knows it

    with other_process.app_context():
        webhooks.create_subscription({"url": "https://hooks.example/loyalty", "secret": "s" * 32,
                                      "events": ["points.credited"]}, actor="other worker")
        db.session.remove()

    buy(api, member_id, "R2")
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 1
        db.session.remove()


def test_the_version_moves_once_per_settings_change_and_not_for_other_writes(app, api, other_process):
    start = version(app)
    member_id = register(api, "13800000004")
    buy(api, member_id, "R1")
    assert version(app) == start  # members and purchases are not settings

    with other_process.app_context():
        rule = tiers.ladder()[1]
        tiers.update_tier("silver", "Silver", {"spend": rule.spend, "activities": rule.activities,
                                               "mode": rule.mode},
                          {"earn_multiplier": rule.earn_multiplier, "birthday_points": rule.birthday_points,
                           "service_level": rule.service_level, "perks": list(rule.perks)},
                          actor="other worker")
        db.session.remove()
    assert version(app) == start + 1


def test_a_refused_settings_change_moves_nothing(app, api):
    start = version(app)
    answer = api.put("marketing", "/tiers/silver", json={
        "name": "Silver", "qualification": {"spend": "50000.00", "activities": 0, "mode": "all"},
        "benefits": {"earn_multiplier": "1.2", "birthday_points": "20", "service_level": "x", "perks": []}})
    assert answer.status_code == 422  # above gold's threshold: the ladder would be out of order
    assert version(app) == start


def test_a_request_learns_the_version_with_its_key_and_pays_no_other_round_trip_for_settings(app, api):
    member_id = register(api, "13800000005")
    buy(api, member_id, "R1")  # rules, ladder and subscribers now kept here
    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)
    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        buy(api, member_id, "R2")
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    reading_settings = [s for s in statements if "settings_version" in s or "earning_rules" in s
                        or "FROM tiers" in s or "webhook_subscription" in s]
    # One statement reads the version, none a setting: the key's check if this process has not checked
    # the key in the last few seconds (auth.roles); otherwise, on PostgreSQL, the account's lock
    # (plain_purchase.lock), on SQLite the version alone.
    assert len(reading_settings) == 1, reading_settings
    assert "settings_version" in reading_settings[0] and (
        "api_keys" in reading_settings[0] or "FOR NO KEY UPDATE" in reading_settings[0]
        or reading_settings[0].startswith("SELECT (SELECT settings_version.version")), reading_settings


def test_a_promotion_started_in_another_process_applies_to_the_next_purchase_here(api, headers, other_process):
    member_id = register(api, "13800000006")
    assert Decimal(str(buy(api, member_id, "R1")["points_earned"])) == Decimal("100")  # none running, and kept

    started = other_process.test_client().post("/api/v1/promotions", headers=headers["marketing"], json={
        "name": "Double points", "status": "active", "starts_at": "2020-01-01T00:00:00Z",
        "effect": {"type": "multiplier", "value": "2"}})
    assert started.status_code == 201, started.get_json()

    answer = buy(api, member_id, "R2")
    assert Decimal(str(answer["points_earned"])) == Decimal("200")
    assert [line["source"] for line in answer["breakdown"]] == ["base", "promotion"]
