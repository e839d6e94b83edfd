"""What promotions that do not apply cost a purchase: no round trip. They are read through the
settings cache and matched in memory; the member's tags, which tag-scoped promotions need, come
with the account's lock (ledger.lock_account_and_tags), in a statement the purchase sends anyway."""
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from loyalty import clock
from loyalty.config import settings
from loyalty.extensions import db
from loyalty.promotions import service as promotions
from loyalty.segments import service as segments
from tests.api.test_settings_version import buy, register

START = datetime(2020, 1, 1, tzinfo=timezone.utc)


def non_applying(tomorrow):
    """20 active promotions a plain purchase at S1 by an untagged ordinary member gets nothing from,
    of every kind of scope: two of them scoped by tags at S1 itself, so the tags must be read."""
    bonus = {"type": "bonus", "points": "10"}
    scopes = [{"stores": ["S2"]}, {"channels": ["online"]}, {"tiers": ["gold", "diamond"]},
              {"categories": ["beverage"]}, {"skus": ["SKU-1"]}, {"tags": ["vip"]},
              {"tags": ["staff"], "stores": ["S1"]}, {"min_amount": "100000.00"},
              {"tiers": ["gold"], "first_purchase_only": True}, {"stores": ["S3"], "channels": ["online"]}]
    shapes = [{"scope": scope} for scope in scopes] + [
        {"schedule": {"days_of_week": [tomorrow]}},
        {"schedule": {"days_of_week": [tomorrow], "from": "16:00", "until": "18:00"}},
        {"starts_at": clock.now() + timedelta(days=30)},
        {"scope": {"stores": ["S2"]}, "limits": {"budget_points": "1000"}},
        {"scope": {"channels": ["online"]}, "limits": {"per_member": 1, "per_member_period": "day"}},
        {"scope": {"tiers": ["diamond"]}, "stacking": "exclusive", "priority": 9},
        {"scope": {"categories": ["tobacco"]}, "effect": {"type": "per_amount", "points": "1", "per": "10.00"}},
        {"scope": {"stores": ["S4"]}, "effect": {"type": "multiplier", "value": "3"}},
        {"scope": {"tags": ["vip"], "channels": ["online"]}},
        {"ends_at": START + timedelta(days=1)},
    ]
    assert len(shapes) == 20
    return [{"name": f"Idle {n}", "status": "active", "starts_at": START, "effect": bonus, **shape}
            for n, shape in enumerate(shapes)]


def statements_of(app, purchase):
    """The statements `purchase` sends, without the API key's check: a key this process checked in
    the last few seconds is not read again (auth.roles), and on SQLite the settings version is then
    read on its own; whether it was depends on the test's pace."""
    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM api_keys" not in statement and not statement.startswith("SELECT (SELECT settings_version.version"):
            seen.append(statement)
    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        purchase()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return seen


def test_twenty_promotions_that_do_not_apply_cost_a_purchase_no_statement(app, api):
    member_id = register(api, "13800000031")
    buy(api, member_id, "R1")  # settings kept in this process from here
    without = statements_of(app, lambda: buy(api, member_id, "R2"))
    with app.app_context():
        tomorrow = clock.local_date(clock.now(), settings().timezone).isoweekday() % 7 + 1
        for fields in non_applying(tomorrow):
            promotions.create_promotion(fields, actor="test")
        segments.add_tags(member_id, ["regular"], actor="test")  # tags, none of them in scope
        db.session.remove()
    buy(api, member_id, "R3")  # the promotions are read once, then kept

    answer = {}
    with_twenty = statements_of(app, lambda: answer.update(buy(api, member_id, "R4")))

    assert len(with_twenty) == len(without), "\n".join(with_twenty)
    reading_tags = [statement for statement in with_twenty if "member_tags" in statement]
    assert len(reading_tags) == 1 and "accounts" in reading_tags[0], reading_tags  # the lock (with the account)
    assert [line["source"] for line in answer["breakdown"]] == ["base"]


def test_a_tag_scoped_promotion_gets_the_tags_from_the_accounts_lock(app, api):
    member_id = register(api, "13800000032")
    with app.app_context():
        promotions.create_promotion({"name": "VIP", "status": "active", "starts_at": START,
                                     "scope": {"tags": ["vip", "vip:gold.2026"]},
                                     "effect": {"type": "bonus", "points": "7"}}, actor="test")
        db.session.remove()
    buy(api, member_id, "R1")
    with app.app_context():
        segments.add_tags(member_id, ["vip:gold.2026"], actor="test")
        db.session.remove()

    tagged = {}
    seen = statements_of(app, lambda: tagged.update(buy(api, member_id, "R3")))

    # The bonus costs writes (entry, lot, grant row) and no read of its own: the reads are the
    # account's lock (which brings the tags) and the tier window's; on PostgreSQL the lock reads plain
    # values (plain_purchase.lock), and a purchase that is not plain then loads the ORM's objects.
    reads = [statement for statement in seen if statement.startswith("SELECT")]
    postgres = app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    assert len(reads) == (3 if postgres else 2), "\n".join(reads)
    assert [statement for statement in reads if "member_tags" in statement] == [reads[0]]
    assert "accounts" in reads[0]
    assert [(line["source"], line.get("points")) for line in tagged["breakdown"]][-1] == ("promotion", 7)
