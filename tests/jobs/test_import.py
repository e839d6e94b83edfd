"""`loyalty import members FILE.csv`: rows once by (channel, external_id), opening balances as one
lot with their expiry, every kind of bad row rejected with its reason, resumable, dry run."""
import csv
import io
import json
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.config import settings
from loyalty.extensions import db
from loyalty.members import importer
from loyalty.members.models import Member, MemberIdentity
from loyalty.points.models import Entry, Lot
from loyalty.points.verify import broken_accounts
from loyalty.tiers.models import TierChange
from loyalty.webhooks import service as webhooks
from loyalty.webhooks.models import Delivery, Event
from tests import factories

HEADER = list(importer.COLUMNS)
GOOD = [
    {"channel": "store", "external_id": "C001", "name": "Wang Fang", "phone": "138 0013 8001",
     "email": "Wang@Example.com", "birthday": "1985-03-04", "points": "1200.50", "points_expire_at": "2099-12-31",
     "tier": "gold"},
    {"channel": "store", "external_id": "C002", "name": "Zhao Lei", "phone": "", "email": "", "birthday": "",
     "points": "", "points_expire_at": "", "tier": ""},
    {"channel": "wechat", "external_id": "oA3", "name": "Sun Li", "phone": "+86 139 0013 9003", "email": "",
     "birthday": "", "points": "88", "points_expire_at": "", "tier": "silver"},
]
BAD = [
    ({"channel": "store", "external_id": "B1", "name": "x", "phone": "12345"}, "invalid phone"),
    ({"channel": "store", "external_id": "B2", "name": "x", "points": "-5"}, "negative points"),
    ({"channel": "", "external_id": "B3", "name": "x"}, "missing key"),
    ({"channel": "store", "external_id": "", "name": "x"}, "missing key"),
    ({"channel": "store", "external_id": "B5", "name": "x", "phone": "13800138999"}, "phone taken"),
    ({"channel": "store", "external_id": "B6", "name": "x", "birthday": "1990-02-30"}, "bad birthday"),
    ({"channel": "store", "external_id": "B7", "name": "x", "points": "5", "points_expire_at": "2001-01-01"},
     "bad expiry date"),
    ({"channel": "store", "external_id": "B8", "name": "x", "points_expire_at": "31/12/2099"}, "bad expiry date"),
    ({"channel": "store", "external_id": "B9", "name": "x", "tier": "platinum"}, "unknown tier"),
    ({"channel": "store", "external_id": "C001", "name": "again"}, "duplicate key"),
    ({"channel": "store", "external_id": "B11", "name": "x", "phone": "13800138001"}, "duplicate phone"),
    ({"channel": "store", "external_id": "B12", "name": "x", "points": "1.234"}, "bad points"),
    ({"channel": "store", "external_id": "B13", "name": "x", "email": "not-an-email"}, "invalid email"),
    ({"channel": "store", "external_id": "B14", "name": "x", "email": "taken@example.com"}, "email taken"),
]


def write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, HEADER)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in HEADER})
    return str(path)


def table_counts():
    return {model.__tablename__: db.session.scalar(sa.select(sa.func.count()).select_from(model))
            for model in (Member, MemberIdentity, Entry, Lot, TierChange)}


def read_rejects(path):
    with open(path, encoding="utf-8", newline="") as source:
        return list(csv.DictReader(source))


@pytest.fixture
def file_with_every_bad_row(tmp_path, app):
    with app.app_context():
        factories.member(name="Owner", phone="13800138999", email="taken@example.com")
        db.session.remove()
    return write_csv(tmp_path / "members.csv", GOOD[:1] + [row for row, _ in BAD] + GOOD[1:])


def test_good_rows_are_imported_and_every_bad_row_is_rejected_with_its_reason(
        runner, app, file_with_every_bad_row, tmp_path):
    result = runner.invoke(args=["import", "members", file_with_every_bad_row])
    assert result.exit_code == 0, result.output
    assert f"{len(GOOD) + len(BAD)} rows: 3 imported, 0 already here, {len(BAD)} rejected" in result.output
    rejects = read_rejects(tmp_path / "members.rejects.csv")
    assert [row["reason"].split(":")[0] for row in rejects] == [reason for _, reason in BAD]
    assert rejects[0]["line"] == "3" and rejects[0]["external_id"] == "B1"
    with app.app_context():
        wang = db.session.scalar(sa.select(Member).join(MemberIdentity).where(MemberIdentity.external_id == "C001"))
        assert (wang.name, wang.phone, wang.email, str(wang.birthday)) == (
            "Wang Fang", "+8613800138001", "wang@example.com", "1985-03-04")
        assert wang.member_no and wang.card_token and wang.referral_code
        assert wang.account.available == Decimal("1200.50")
        entry = db.session.scalar(sa.select(Entry).where(Entry.member_id == wang.id))
        lot = db.session.scalar(sa.select(Lot).where(Lot.member_id == wang.id))
        assert (entry.type, entry.points, entry.balance_after) == ("import", Decimal("1200.50"), Decimal("1200.50"))
        tz = settings().timezone
        assert lot.expires_at == clock.end_of_local_day(clock.local_date(lot.expires_at - timedelta(seconds=1), tz), tz)
        assert clock.local_date(lot.expires_at - timedelta(seconds=1), tz).isoformat() == "2099-12-31"
        assert (lot.points, lot.remaining, lot.status) == (Decimal("1200.50"), Decimal("1200.50"), "available")
        # The tier given, held for the normal protection period, with its line in the history.
        assert wang.tier_code == "gold" and wang.tier_held_until > clock.now() + timedelta(days=300)
        change = db.session.scalar(sa.select(TierChange).where(TierChange.member_id == wang.id))
        assert (change.to_code, change.reason) == ("gold", "import")
        zhao = db.session.scalar(sa.select(Member).join(MemberIdentity).where(MemberIdentity.external_id == "C002"))
        assert (zhao.tier_code, zhao.account.available, zhao.phone) == ("ordinary", 0, None)
        # No expiry given: the earning rules' policy.
        sun_lot = db.session.scalar(sa.select(Lot).join(MemberIdentity, MemberIdentity.member_id == Lot.member_id)
                                    .where(MemberIdentity.external_id == "oA3"))
        assert sun_lot.points == 88
        assert broken_accounts() == []
        db.session.remove()


def test_a_second_run_changes_nothing(runner, app, file_with_every_bad_row):
    assert runner.invoke(args=["import", "members", file_with_every_bad_row]).exit_code == 0
    with app.app_context():
        before = table_counts()
        db.session.remove()
    again = runner.invoke(args=["import", "members", file_with_every_bad_row])
    assert again.exit_code == 0, again.output
    # The three imported rows, and the row repeating C001's key: its identity is here now.
    assert "0 imported, 4 already here" in again.output
    with app.app_context():
        assert table_counts() == before
        db.session.remove()


def test_a_dry_run_writes_nothing_and_says_what_would_happen(runner, app, file_with_every_bad_row, tmp_path):
    with app.app_context():
        before = table_counts()
        db.session.remove()
    result = runner.invoke(args=["import", "members", file_with_every_bad_row, "--dry-run",
                                 "--rejects", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    assert "3 would be imported (dry run: nothing was written)" in result.output
    assert len(read_rejects(tmp_path / "r.csv")) == len(BAD)
    with app.app_context():
        assert table_counts() == before
        db.session.remove()


def test_a_run_killed_half_way_resumes_and_imports_each_row_once(app, tmp_path, monkeypatch):
    rows = [{"channel": "store", "external_id": f"K{n}", "name": f"Kim {n}", "phone": f"1370000{n:04d}",
             "points": "10"} for n in range(10)]
    path = write_csv(tmp_path / "big.csv", rows)
    real_write, calls = importer._write, []

    def dies_on_the_third_batch(batch, now, emit):
        calls.append(len(batch))
        written = real_write(batch, now, emit)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the operator's Ctrl-C, or a kill, in the middle of a batch
        return written

    with app.app_context():
        monkeypatch.setattr(importer, "_write", dies_on_the_third_batch)
        with pytest.raises(KeyboardInterrupt):
            importer.import_members(path, io.StringIO(), batch_size=3)
        db.session.remove()
        assert table_counts()["members"] == 6  # two batches committed, the third rolled back
        monkeypatch.setattr(importer, "_write", real_write)
        summary = importer.import_members(path, io.StringIO(), batch_size=3)
        assert (summary.imported, summary.already_there, summary.rejected) == (4, 6, 0)
        assert table_counts()["members"] == 10
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Entry).where(Entry.type == "import")) == 10
        assert broken_accounts() == []
        db.session.remove()


def test_imported_points_show_in_history_and_can_be_spent(api, runner, tmp_path, app):
    path = write_csv(tmp_path / "one.csv", [{"channel": "store", "external_id": "H1", "name": "Hu", "points": "300"}])
    assert runner.invoke(args=["import", "members", path]).exit_code == 0
    found = api.get("pos", "/members", query_string={"channel": "store", "external_id": "H1"}).json["items"]
    member_id = found[0]["id"]
    history = api.get("app", f"/members/{member_id}/points/history", query_string={"type": "import"})
    assert history.status_code == 200, history.json
    assert [(e["type"], e["points"]) for e in history.json["items"]] == [("import", 300)]
    paid = api.post("pos", "/points-payments", json={"member_id": member_id, "store_id": "S1", "payment_no": "P1",
                                                     "points": 100})
    assert paid.status_code == 201, paid.json
    overview = api.get("marketing", "/reports/overview").json
    assert overview["last_30_days"]["imported"] == 300
    verify = runner.invoke(args=["ledger", "verify"])
    assert verify.exit_code == 0, verify.output


def test_a_file_without_the_key_columns_is_refused_with_a_sentence(runner, tmp_path):
    path = tmp_path / "wrong.csv"
    path.write_text("name,phone\nLi,13800138000\n", encoding="utf-8")
    result = runner.invoke(args=["import", "members", str(path)])
    assert result.exit_code != 0
    assert "no channel or external_id column" in result.output


@pytest.mark.postgres_only
def test_two_imports_of_one_file_at_once_import_each_row_once(app, tmp_path):
    rows = [{"channel": "store", "external_id": f"T{n}", "name": f"Tan {n}", "phone": f"1360000{n:04d}",
             "points": "5"} for n in range(40)]
    path = write_csv(tmp_path / "twice.csv", rows)
    summaries, errors = [], []

    def run():
        with app.app_context():
            try:
                summaries.append(importer.import_members(path, io.StringIO(), batch_size=7))
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(summary.imported for summary in summaries) == 40
    assert sum(summary.rejected for summary in summaries) == 0
    with app.app_context():
        assert table_counts()["members"] == 40
        assert broken_accounts() == []
        db.session.remove()


# --- member.created webhooks ---------------------------------------------------------------------

def subscribe(events=("member.created",)):
    return webhooks.create_subscription({"url": "https://crm.example/hooks", "events": list(events),
                                         "secret": "s" * 32}, actor="admin test")


def created_events():
    return [json.loads(body) for body in db.session.scalars(
        sa.select(Event.body).where(Event.type == "member.created").order_by(Event.created_at, Event.id))]


def test_each_imported_member_is_a_member_created_event_for_its_subscribers(runner, app, tmp_path):
    rows = [{"channel": "store", "external_id": f"W{n}", "name": f"Wu {n}"} for n in range(7)]
    path = write_csv(tmp_path / "w.csv", rows + [{"channel": "store", "external_id": "", "name": "keyless"}])
    with app.app_context():
        subscription = subscribe()
        db.session.remove()
    result = runner.invoke(args=["import", "members", path])
    assert result.exit_code == 0, result.output
    assert "7 member.created webhook events queued" in result.output
    with app.app_context():
        events = created_events()
        imported = {m.id: m for m in db.session.scalars(sa.select(Member))}
        assert sorted(event["data"]["member_id"] for event in events) == sorted(imported)
        for event in events:
            member = imported[event["data"]["member_id"]]
            assert event["data"]["member_no"] == member.member_no
            assert (event["data"]["channel"], event["data"]["imported"]) == ("store", True)
        deliveries = db.session.scalars(sa.select(Delivery)).all()
        assert len(deliveries) == 7 and {d.subscription_id for d in deliveries} == {subscription.id}
        assert {d.status for d in deliveries} == {"pending"}
        db.session.remove()
    again = runner.invoke(args=["import", "members", path])  # nothing imported, nobody told twice
    assert again.exit_code == 0 and "webhook" not in again.output
    with app.app_context():
        assert len(created_events()) == 7
        db.session.remove()


def test_no_webhooks_imports_the_members_and_tells_nobody(runner, app, tmp_path):
    path = write_csv(tmp_path / "q.csv", [{"channel": "store", "external_id": f"Q{n}", "name": "Qi"} for n in range(3)])
    with app.app_context():
        subscribe()
        db.session.remove()
    result = runner.invoke(args=["import", "members", path, "--no-webhooks"])
    assert result.exit_code == 0, result.output
    assert "3 imported" in result.output and "webhook" not in result.output
    with app.app_context():
        assert created_events() == [] and db.session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 0
        db.session.remove()


def test_a_dry_run_or_nobody_listening_queues_no_event(runner, app, tmp_path):
    path = write_csv(tmp_path / "d.csv", [{"channel": "store", "external_id": "D1", "name": "Du"}])
    with app.app_context():
        subscribe(events=("tier.changed",))
        db.session.remove()
    assert runner.invoke(args=["import", "members", path, "--dry-run"]).exit_code == 0
    assert runner.invoke(args=["import", "members", path]).exit_code == 0
    with app.app_context():
        assert table_counts()["members"] == 1 and created_events() == []
        db.session.remove()


# --- a phone held in an old spelling --------------------------------------------------------------

def test_a_phone_a_member_holds_in_an_old_spelling_is_taken_whatever_spelling_the_file_has(app, tmp_path):
    with app.app_context():
        legacy = factories.member(phone="13900139555")
        # What the E.164 migration left a member whose number another held (that one since erased).
        db.session.execute(sa.update(Member).where(Member.id == legacy.id).values(phone="8613800138777"))
        db.session.commit()
        legacy_id = legacy.id
        db.session.remove()
    rows = [{"channel": "store", "external_id": f"L{n}", "name": "Lu", "phone": spelling}
            for n, spelling in enumerate(("+86 138 0013 8777", "0086 13800138777", "13800138777"))]
    rejects = io.StringIO()
    with app.app_context():
        # One row per file (a file may not give a number twice): each spelling on its own.
        for row in rows:
            summary = importer.import_members(write_csv(tmp_path / f"{row['external_id']}.csv", [row]), rejects)
            assert (summary.imported, summary.rejected) == (0, 1), row
        db.session.remove()
    reasons = [line for line in rejects.getvalue().splitlines() if "phone taken" in line]
    assert len(reasons) == 3 and all(f"belongs to member {legacy_id}" in line for line in reasons)


def test_an_old_spelling_that_reads_as_another_number_is_not_a_conflict(app, tmp_path):
    with app.app_context():
        chinese = factories.member(phone="13900139556")
        # 16502530000 read in China is a Chinese mobile (+8616502530000), not the US +1 650 253 0000.
        db.session.execute(sa.update(Member).where(Member.id == chinese.id).values(phone="16502530000"))
        db.session.commit()
        summary = importer.import_members(write_csv(tmp_path / "us.csv", [
            {"channel": "store", "external_id": "U1", "name": "Una", "phone": "+1 650 253 0000"}]), io.StringIO())
        assert (summary.imported, summary.rejected) == (1, 0)
        db.session.remove()
