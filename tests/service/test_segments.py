"""Marketing's view of the members at the service level (issue #7): segments by lifecycle stage,
value segment, tier and tag, paginated with cursors and streamed as CSV; tags put on and taken
off; the overview and the liability report, checked against figures computed by hand from a
small scripted world.

Every clock is explicit (`now=`, or `clock.frozen_at` where a service reads the clock itself).
N, "now" for the reports, is 12:00 on 1 September 2026 in Shanghai (the deployment's time zone).

The world (`build_world`), event by event (the events are in time order):

    N-200d  seven members join: A, B, C, D (no phone), E, F, G; a 20-point reward is created
    N-150d  A buys 100.00 under a 130-day expiry: the lot expires at the end of 12 August (local)
    N-120d  B buys 1000.00 (lot expires 4 May 2027); E buys 30.00 under the `never` expiry policy
    N-70d   D gets +10 by hand under an 80-day expiry (expires at the end of 11 September 2026);
            D is put in gold by hand
    N-65d   F is merged into D (F had nothing; F is closed)
    N-60d   B buys 10.00 (expires 3 July 2027)
    N-40d   C buys 50.00 (expires 23 July 2027)
    N-25d   B's 1000.00 purchase is refunded by 250.00: -250 points
    N-20d   B pays with 300 points (3.00 CNY), taken from the lot that expires first (May 2027)
    N-19d   the expiry job: A's 100 points expire
    N-10d   A buys 200.00 (expires 22 August 2027)
    N-5d    C signs in: +0.5 (expires 27 August 2027)
    N-4d    C redeems the reward: -20, from the lot of July 2027
    N-2d    G buys 80.50 under a 7-day return window: pending until N+5d (expires 6 September 2027)
    N       the lifecycle and value-segment jobs run

At N: A 200 | B 1000 + 10 - 250 - 300 = 460 | C 50 + 0.5 - 20 = 30.50 | D 10 | E 30 | G 80.50 pending.
Stages: A active (first purchase 150 days ago, bought 10 days ago), B dormant (quiet 60 days),
C and G new, D potential (never bought), E churned (quiet 120 days). Value segments over the year:
spends A 300, B 760, C 50, E 30, G 80.50; five buyers, the top 10% is one member: B (high value);
E bought nothing for 120 days (at risk); A, C, G low value; D none.
"""
import csv
import io
from dataclasses import replace
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from loyalty import clock
from loyalty.audit import AuditEntry
from loyalty.errors import NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members import merge
from loyalty.members.models import Member
from loyalty.points import jobs as points_jobs
from loyalty.points import service as points
from loyalty.points.rules import EarningRules
from loyalty.promotions import service as promotions
from loyalty.referrals import service as referrals
from loyalty.rewards import service as rewards
from loyalty.segments import jobs as segment_jobs
from loyalty.segments import service as segments
from loyalty.segments.models import MemberTag
from loyalty.tiers import service as tiers
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import T0, assert_ledger_ok, utc

pytestmark = pytest.mark.usefixtures("ctx")

N = utc(2026, 9, 1, 4)  # 12:00 on 1 September 2026 in Shanghai
TODAY = date(2026, 9, 1)
DAY = timedelta(days=1)
HEADER = ["member_no", "name", "phone", "tier", "lifecycle_stage", "value_segment", "available_points",
          "spend_12_months", "last_purchase_at"]


# --- helpers --------------------------------------------------------------------------------------

def rules(at, **changes):
    """The default earning rules with `changes`, stored the way marketing would store them."""
    points.update_rules(replace(EarningRules(), **changes), actor="test", now=at)


def local_day(instant):
    return clock.local_date(instant, "Asia/Shanghai")


def new_member(**fields):
    """A member registered through the service; only its id is kept (sessions come and go)."""
    return SimpleNamespace(id=factories.member(**fields).id)


def build_world():
    """The world of the module docstring; returns the members' ids (and the reward's)."""
    joined = N - 200 * DAY
    a = new_member(name="An", phone="+8613811110001", now=joined)
    b = new_member(name='王, "Big" B', phone="13922220002", now=joined)
    c = new_member(name="Chen", phone="+8613833330003", now=joined)
    d = new_member(name="Dong", phone=None, email="dong@example.com", now=joined)
    e = new_member(name="Ed", phone="+8613855550005", now=joined)
    f = new_member(name="Fang", phone="+8613866660006", now=joined)
    g = new_member(name="Gao", phone="+8613877770007", now=joined)
    mug = SimpleNamespace(id=rewards.create_reward(
        {"name": "Mug", "kind": "goods", "points_cost": D(20), "voucher_valid_days": 30}, actor="test", now=joined).id)

    rules(N - 150 * DAY, expiry_days=130)
    factories.purchase(a.id, "100.00", now=N - 150 * DAY)
    rules(N - 120 * DAY)
    big = factories.purchase(b.id, "1000.00", now=N - 120 * DAY).record
    rules(N - 120 * DAY, expiry_policy="never")
    factories.purchase(e.id, "30.00", now=N - 120 * DAY)
    rules(N - 70 * DAY, expiry_days=80)
    points.adjust_points(d.id, D(10), "welcome", "test admin", now=N - 70 * DAY)
    rules(N - 70 * DAY)
    tiers.set_member_tier(d.id, "gold", "VIP", "test admin", now=N - 70 * DAY)
    merge.merge_members(d.id, f.id, "test admin", now=N - 65 * DAY)
    factories.purchase(b.id, "10.00", now=N - 60 * DAY)
    factories.purchase(c.id, "50.00", now=N - 40 * DAY)
    points.refund_purchase(big.id, big.store_id, "RF1", D("250.00"), now=N - 25 * DAY)
    points.pay_with_points(b.id, "S1", "PAY1", D(300), now=N - 20 * DAY)
    points_jobs.expire_points(local_day(N - 19 * DAY), now=N - 19 * DAY)
    factories.purchase(a.id, "200.00", now=N - 10 * DAY)
    points.record_activity(c.id, "sign_in", "c-1", now=N - 5 * DAY)
    rewards.redeem(c.id, mug.id, now=N - 4 * DAY)
    rules(N - 2 * DAY, pending_days=7)
    factories.purchase(g.id, "80.50", now=N - 2 * DAY)
    rules(N - 2 * DAY)
    segment_jobs.lifecycle(TODAY, now=N)
    segment_jobs.value_segments(TODAY, now=N)
    db.session.remove()
    return SimpleNamespace(a=a.id, b=b.id, c=c.id, d=d.id, e=e.id, f=f.id, g=g.id, reward=mug.id)


def member_no(member_id):
    return db.session.get(Member, member_id).member_no


def ids(name, limit=100, after=None):
    members, _, _ = segments.segment_page(name, limit, after)
    return [member.id for member in members]


def csv_table(name):
    with clock.frozen_at(N):
        text = "".join(segments.csv_rows(name))
    db.session.remove()
    return list(csv.reader(io.StringIO(text)))


def tag_audit():
    return [(entry.actor, entry.action, entry.entity_id, entry.before, entry.after)
            for entry in db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action.like("member.tags.%"))
                                            .order_by(AuditEntry.id))]


def count_queries(work):
    """How many SQL statements `work()` sends to the database."""
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
        db.session.remove()
    return len(statements)


# --- the world is what the docstring says ---------------------------------------------------------

def test_the_scripted_world_holds_what_the_docstring_says():
    w = build_world()

    members = {m.id: m for m in db.session.scalars(sa.select(Member))}
    got = {name: (members[getattr(w, name)].account.available, members[getattr(w, name)].account.pending,
                  members[getattr(w, name)].lifecycle_stage, members[getattr(w, name)].value_segment,
                  members[getattr(w, name)].tier_code)
           for name in "abcdeg"}
    assert got == {
        "a": (D("200.00"), D("0.00"), "active", "low_value", "ordinary"),
        "b": (D("460.00"), D("0.00"), "dormant", "high_value", "ordinary"),
        "c": (D("30.50"), D("0.00"), "new", "low_value", "ordinary"),
        "d": (D("10.00"), D("0.00"), "potential", None, "gold"),
        "e": (D("30.00"), D("0.00"), "churned", "at_risk", "ordinary"),
        "g": (D("0.00"), D("80.50"), "new", "low_value", "ordinary"),
    }
    assert members[w.f].status == "closed"
    assert_ledger_ok()


# --- segments -------------------------------------------------------------------------------------

SEGMENTS = {
    # lifecycle stages, by their plain name and as stage:<stage>
    "new": "cg", "active": "a", "dormant": "b", "churned": "e",
    "stage:new": "cg", "stage:active": "a", "stage:potential": "d", "stage:churned": "e",
    # value segments; plain `potential` is the value segment (nobody here), stage:potential the stage
    "high_value": "b", "low_value": "acg", "at_risk": "e", "potential": "",
    "segment:high_value": "b", "segment:low_value": "acg", "segment:potential": "",
    # tiers: the closed member F (ordinary) is in no segment
    "tier:gold": "d", "tier:ordinary": "abceg", "tier:diamond": "",
}


def test_each_stage_segment_and_tier_lists_its_open_members_by_id():
    w = build_world()

    got = {name: ids(name) for name in SEGMENTS}

    assert got == {name: [getattr(w, letter) for letter in letters] for name, letters in SEGMENTS.items()}


def test_plain_potential_is_the_value_segment_and_stage_potential_the_lifecycle_stage():
    big_spender = new_member(now=N - 40 * DAY)
    factories.purchase(big_spender.id, "5000.00", now=N - 10 * DAY)  # the top 10% of two buyers
    buyer = new_member(now=N - 40 * DAY)
    for day in range(4):  # four purchases averaging 50.00: "potential" by value
        factories.purchase(buyer.id, "50.00", now=N - (10 + day) * DAY)
    never_bought = new_member(now=N - 40 * DAY)
    segment_jobs.lifecycle(TODAY, now=N)
    segment_jobs.value_segments(TODAY, now=N)
    db.session.remove()

    assert ids("potential") == ids("segment:potential") == [buyer.id]
    assert ids("high_value") == [big_spender.id]
    assert ids("stage:potential") == [never_bought.id]


def test_members_are_listed_by_tag():
    w = build_world()
    segments.add_tags(w.b, ["vip", "campaign:spring-2026"], "test marketing", now=N)
    segments.add_tags(w.e, ["vip"], "test marketing", now=N)
    segments.add_tags(w.a, ["complained"], "test marketing", now=N)

    assert ids("tag:vip") == [w.b, w.e]
    assert ids("tag:campaign:spring-2026") == [w.b]
    assert ids("tag:complained") == [w.a]
    assert ids("tag:nobody-has-this") == []


UNKNOWN_SEGMENTS = ["vip", "gold", "sleeping", "stage:sleeping", "stage:high_value", "segment:new", "segment:",
                    "stage:", "tier:", "tag:", "tag:Has Space", "colour:red", ""]


def test_an_unknown_segment_is_not_found_and_the_message_lists_the_segments():
    for name in UNKNOWN_SEGMENTS:
        with pytest.raises(NotFound) as raised:
            segments.segment_page(name)

        assert f"No segment {name!r}." in raised.value.message
        assert "high_value" in raised.value.message and "tier:<code>" in raised.value.message
        assert "tag:<tag>" in raised.value.message


def test_a_tier_that_does_not_exist_is_not_found():
    factories.member(now=N)

    with pytest.raises(NotFound):
        segments.segment_page("tier:platinum")


def test_a_segment_is_paged_by_id_with_a_cursor_until_there_is_no_next_page():
    w = build_world()

    first, _, after = segments.segment_page("tier:ordinary", limit=2)
    second, _, after2 = segments.segment_page("tier:ordinary", limit=2, after_id=after)
    third, _, after3 = segments.segment_page("tier:ordinary", limit=2, after_id=after2)

    assert [m.id for m in first] == [w.a, w.b] and after == w.b
    assert [m.id for m in second] == [w.c, w.e] and after2 == w.e
    assert [m.id for m in third] == [w.g] and after3 is None


def test_a_page_that_ends_the_segment_exactly_has_no_next_cursor():
    w = build_world()

    members, _, after = segments.segment_page("tier:ordinary", limit=5)
    empty, _, none = segments.segment_page("low_value", limit=3, after_id=w.g)

    assert [m.id for m in members] == [w.a, w.b, w.c, w.e, w.g] and after is None
    assert (empty, none) == ([], None)


def test_a_page_carries_each_members_12_month_spend_and_last_purchase():
    w = build_world()

    with clock.frozen_at(N):
        _, figures, _ = segments.segment_page("tier:ordinary")

    assert figures == {
        w.a: (D("300.00"), N - 10 * DAY),
        w.b: (D("760.00"), N - 60 * DAY),  # 1000.00 - 250.00 refunded + 10.00
        w.c: (D("50.00"), N - 40 * DAY),
        w.e: (D("30.00"), N - 120 * DAY),
        w.g: (D("80.50"), N - 2 * DAY),
    }


def test_the_12_month_spend_leaves_out_older_purchases_but_the_last_purchase_is_the_last():
    member = new_member(now=N - 500 * DAY)
    factories.purchase(member.id, "999.00", now=N - 400 * DAY)
    factories.purchase(member.id, "12.34", now=N - 364 * DAY)
    db.session.remove()

    with clock.frozen_at(N):
        _, figures, _ = segments.segment_page("tier:ordinary")

    assert figures == {member.id: (D("12.34"), N - 364 * DAY)}


# --- CSV ------------------------------------------------------------------------------------------

def test_the_csv_has_a_header_row_and_a_row_per_member_with_masked_phones_and_exact_decimals():
    w = build_world()

    table = csv_table("tier:ordinary")

    assert table == [
        HEADER,
        [member_no(w.a), "An", "+86138****0001", "ordinary", "active", "low_value", "200.00", "300.00",
         "2026-08-22T04:00:00Z"],
        [member_no(w.b), '王, "Big" B', "+86139****0002", "ordinary", "dormant", "high_value", "460.00", "760.00",
         "2026-07-03T04:00:00Z"],
        [member_no(w.c), "Chen", "+86138****0003", "ordinary", "new", "low_value", "30.50", "50.00",
         "2026-07-23T04:00:00Z"],
        [member_no(w.e), "Ed", "+86138****0005", "ordinary", "churned", "at_risk", "30.00", "30.00",
         "2026-05-04T04:00:00Z"],
        [member_no(w.g), "Gao", "+86138****0007", "ordinary", "new", "low_value", "0.00", "80.50",
         "2026-08-30T04:00:00Z"],
    ]


def test_a_member_without_phone_segment_or_purchase_has_empty_cells_and_zero_spend():
    member = new_member(name="Xu", phone=None, email="xu@example.com", now=N)

    assert csv_table("tier:ordinary") == [HEADER, [member_no(member.id), "Xu", "", "ordinary", "", "", "0.00", "0.00",
                                                   ""]]


def test_the_merged_members_phone_shows_masked_on_the_survivors_row():
    w = build_world()  # D had no phone; F's moved to D with the merge

    assert csv_table("tier:gold") == [HEADER, [member_no(w.d), "Dong", "+86138****0006", "gold", "potential", "",
                                               "10.00", "0.00", ""]]


def test_an_empty_segment_is_just_the_header():
    build_world()

    assert csv_table("tier:diamond") == [HEADER]


def test_the_csv_is_streamed_a_page_at_a_time_with_every_member_once(monkeypatch):
    monkeypatch.setattr(segments, "CSV_PAGE", 2)
    made = [new_member(now=N).id for _ in range(5)]
    db.session.remove()

    chunks = list(segments.csv_rows("tier:ordinary"))

    assert len(chunks) == 1 + 5  # the header, then one line per member
    assert [row[0] for row in csv.reader(io.StringIO("".join(chunks)))][1:] == [member_no(i) for i in made]


def test_an_unknown_segment_fails_before_the_header_is_produced():
    rows = segments.csv_rows("nonsense")

    with pytest.raises(NotFound):
        next(rows)


def test_a_phone_is_masked_but_recognisable():
    cases = {"+8613812345678": "+86138****5678", "13812345678": "138****5678", "123456789": "1****6789",
             "12345678": "****", "123456": "****", None: ""}

    assert {phone: segments.mask_phone(phone) for phone in cases} == cases


# --- tags -----------------------------------------------------------------------------------------

def test_tags_are_normalised_sorted_and_adding_them_again_changes_nothing():
    member = new_member(now=N)

    first = segments.add_tags(member.id, ["VIP", " event-2026 ", "vip"], "test marketing", now=N)
    again = segments.add_tags(member.id, ["vip", "event-2026"], "test marketing", now=N + DAY)

    assert first == again == ["event-2026", "vip"]
    assert segments.member_tags(member.id) == ["event-2026", "vip"]
    assert tag_audit() == [("test marketing", "member.tags.add", str(member.id), [], ["event-2026", "vip"])]


def test_adding_a_new_tag_next_to_known_ones_records_only_that_change():
    member = new_member(now=N)
    segments.add_tags(member.id, ["vip"], "test marketing", now=N)

    assert segments.add_tags(member.id, ["vip", "b2b"], "other marketer", now=N) == ["b2b", "vip"]
    assert tag_audit()[-1] == ("other marketer", "member.tags.add", str(member.id), ["vip"], ["b2b", "vip"])


def test_removing_tags_is_idempotent_and_ignores_tags_the_member_does_not_have():
    member = new_member(now=N)
    segments.add_tags(member.id, ["vip", "event-2026"], "test marketing", now=N)

    removed = segments.remove_tags(member.id, ["VIP", "never-had"], "test marketing", now=N)
    again = segments.remove_tags(member.id, ["vip"], "test marketing", now=N)
    nothing = segments.remove_tags(member.id, ["never-had"], "test marketing", now=N)

    assert removed == again == nothing == ["event-2026"]
    assert tag_audit()[1:] == [("test marketing", "member.tags.remove", str(member.id), ["event-2026", "vip"],
                                ["event-2026"])]
    assert ids("tag:vip") == [] and ids("tag:event-2026") == [member.id]


INVALID_TAGS = [[], [""], ["   "], ["has space"], ["x" * 41], ["-leading-dash"], ["_leading"], ["ünïcode"],
                ["semi;colon"], ["ok", "not ok"], ["a/b"]]


def test_invalid_tags_are_refused_and_nothing_changes():
    member = new_member(now=N)
    segments.add_tags(member.id, ["keep"], "test marketing", now=N)

    for tags in INVALID_TAGS:
        with pytest.raises(ValidationFailed) as added:
            segments.add_tags(member.id, tags, "test marketing", now=N)
        with pytest.raises(ValidationFailed):
            segments.remove_tags(member.id, tags + ["keep"] if tags else tags, "test marketing", now=N)

        assert added.value.errors == {"tags": ["Invalid tag."]}, tags
        assert segments.member_tags(member.id) == ["keep"], tags
    assert len(tag_audit()) == 1


def test_valid_tags_go_up_to_40_characters():
    for tag in ["a", "x" * 40, "vip", "9lives", "campaign:spring.2026", "b2b_partner", "a-b"]:
        member = new_member(now=N)

        assert segments.add_tags(member.id, [tag], "test marketing", now=N) == [tag]
        assert ids(f"tag:{tag}") == [member.id], tag


def test_tags_of_an_unknown_member_are_not_found():
    with pytest.raises(NotFound):
        segments.add_tags(999999, ["vip"], "test marketing", now=N)
    with pytest.raises(NotFound):
        segments.remove_tags(999999, ["vip"], "test marketing", now=N)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(MemberTag)) == 0


# --- the overview ---------------------------------------------------------------------------------

def test_the_overview_of_the_scripted_world():
    build_world()

    report = segments.overview(now=N)

    members = report["members"]
    assert members["total"] == 6  # F, merged into D, is closed
    assert {tier: n for tier, n in members["by_tier"].items() if n} == {"ordinary": 5, "gold": 1}
    assert {stage: n for stage, n in members["by_lifecycle_stage"].items() if n} == {
        "active": 1, "dormant": 1, "new": 2, "potential": 1, "churned": 1}
    assert {segment: n for segment, n in members["by_value_segment"].items() if n} == {
        "high_value": 1, "low_value": 3, "at_risk": 1, "none": 1}
    assert report["points"] == {
        "available": D("730.50"), "pending": D("80.50"), "held": D("0.00"), "debt": D("0.00"),
        "outstanding": D("811.00"),
        "outstanding_money_value": {"amount": D("8.11"), "currency": "CNY"},  # 100 points pay 1.00
        "expiring_30_days": D("10.00"),  # D's adjustment, at the end of 11 September
    }
    assert report["last_30_days"] == {
        "earned": D("281.00"),  # A 200 + C 0.5 + G 80.50 (pending, but earned)
        "redeemed": D("20.00"), "paid": D("300.00"), "expired": D("100.00"),
        "reversed": D("-250.00"), "adjusted": D("0.00"), "imported": D("0.00"),
    }
    assert report["referrals"] is None
    assert report["as_of"] == N


def test_the_overview_moves_with_its_clock():
    build_world()

    later = segments.overview(now=N + 15 * DAY)  # the last 30 days begin at N-15d

    assert later["last_30_days"] == {"earned": D("281.00"), "redeemed": D("20.00"), "paid": D("0.00"),
                                     "expired": D("0.00"), "reversed": D("0.00"), "adjusted": D("0.00"),
                                     "imported": D("0.00")}
    # D's 10 points end on 11 September: past N+15d (not yet expired by the job), so not "expiring".
    assert later["points"]["expiring_30_days"] == D("0.00")
    # From 29 April 2027 the next 30 days reach B's lot that ends with 4 May 2027.
    assert segments.overview(now=N + 240 * DAY)["points"]["expiring_30_days"] == D("450.00")


def test_a_members_debt_does_not_lower_the_liability_of_the_others():
    owes = new_member(now=N - 10 * DAY)
    holds = new_member(now=N - 10 * DAY)
    bought = factories.purchase(owes.id, "100.00", now=N - 3 * DAY).record
    points.pay_with_points(owes.id, "S1", "P1", D(100), now=N - 2 * DAY)
    points.refund_purchase(bought.id, "S1", "RF1", D("100.00"), now=N - DAY)  # spent: 100 owed
    factories.purchase(holds.id, "50.00", now=N - DAY)
    db.session.remove()

    report = segments.overview(now=N)

    assert report["points"] == {"available": D("50.00"), "pending": D("0.00"), "held": D("0.00"), "debt": D("100.00"),
                                "outstanding": D("50.00"),
                                "outstanding_money_value": {"amount": D("0.50"), "currency": "CNY"},
                                "expiring_30_days": D("0.00")}
    assert report["last_30_days"]["earned"] == D("150.00")
    assert report["last_30_days"]["paid"] == D("100.00")
    assert report["last_30_days"]["reversed"] == D("-100.00")
    assert segments.liability(now=N)["total"] == D("50.00")
    assert_ledger_ok()


def test_the_overview_counts_the_promotion_points_a_purchase_earned_and_a_refund_took_back():
    promotions.create_promotion({"name": "50 over 150", "status": "active", "starts_at": N - 30 * DAY,
                                 "scope": {"min_amount": D("150.00")},
                                 "effect": {"type": "bonus", "points": D("50")}}, actor="test marketing",
                                now=N - 30 * DAY)
    member = new_member(now=N - 10 * DAY)
    bought = factories.purchase(member.id, "200.00", now=N - 5 * DAY).record  # 200 + 50 of the promotion
    assert bought.total_points == D("250.00")
    factories.purchase(member.id, "100.00", now=N - 4 * DAY)  # under the minimum: 100
    points.refund_purchase(bought.id, "S1", "RF1", D("100.00"), now=N - 3 * DAY)  # half: -100 and -25
    db.session.remove()

    report = segments.overview(now=N)

    assert report["last_30_days"]["earned"] == D("350.00")
    assert report["last_30_days"]["reversed"] == D("-125.00")
    assert report["points"]["available"] == report["points"]["outstanding"] == D("225.00")
    assert segments.liability(now=N)["total"] == D("225.00")
    assert_ledger_ok()


def test_the_money_value_is_at_the_payment_rate_in_force():
    member = new_member(now=N - DAY)
    factories.purchase(member.id, "150.00", now=N - DAY)
    rules(N - DAY, payment_points_per_unit=D("50"))
    db.session.remove()

    assert segments.overview(now=N)["points"]["outstanding_money_value"] == {"amount": D("3.00"), "currency": "CNY"}


def test_an_empty_programme_and_members_the_jobs_have_not_seen_yet():
    empty = segments.overview(now=N)
    factories.member(now=N)
    db.session.remove()
    fresh = segments.overview(now=N)

    assert empty["members"]["total"] == 0
    assert empty["points"]["outstanding"] == 0 and empty["points"]["outstanding_money_value"]["amount"] == 0
    assert empty["last_30_days"] == {key: 0 for key in ("earned", "redeemed", "paid", "expired", "reversed",
                                                         "adjusted", "imported")}
    assert fresh["members"]["total"] == 1
    assert fresh["members"]["by_tier"] == {"ordinary": 1, "silver": 0, "gold": 0, "diamond": 0}
    assert fresh["members"]["by_lifecycle_stage"] == {"unknown": 1}
    assert fresh["members"]["by_value_segment"] == {"none": 1}


def campaign(**changes):
    fields = {"name": "Bring a friend", "starts_at": N - 30 * DAY, "ends_at": None, "referrer_points": D(100),
              "referee_points": D(50), "min_first_purchase": D("100.00"), "qualify_within_days": 30,
              "link_template": "https://shop.example/join?ref={code}", **changes}
    return referrals.create_campaign(fields, actor="test marketing", now=N - 30 * DAY)


def test_the_overview_shows_the_referral_funnel_of_the_running_campaign():
    running = SimpleNamespace(id=campaign(ends_at=N + 10 * DAY).id)
    referrer = factories.member(now=N - 20 * DAY)
    first = new_member(referral_code=referrer.referral_code, now=N - 10 * DAY)
    factories.member(referral_code=referrer.referral_code, now=N - 9 * DAY)  # has not bought yet
    factories.purchase(first.id, "150.00", now=N - 8 * DAY)  # qualifies: both rewarded
    db.session.remove()

    report = segments.overview(now=N)

    funnel = report["referrals"]
    assert funnel == referrals.campaign_stats(running.id)
    assert (funnel["campaign_id"], funnel["invited"], funnel["pending"], funnel["qualified"],
            funnel["rewarded"], funnel["points_granted"]) == (running.id, 2, 1, 1, 1, D("150.00"))
    assert report["last_30_days"]["earned"] == D("300.00")  # 150 for the purchase, 100 + 50 of bonus
    assert segments.overview(now=N + 10 * DAY)["referrals"] is None  # the campaign has ended
    assert segments.overview(now=N - 31 * DAY)["referrals"] is None  # not started yet


def test_the_overview_is_a_few_aggregate_queries_however_many_members():
    def world(size):
        for _ in range(size):
            member = new_member(now=N - 5 * DAY)
            factories.purchase(member.id, "10.00", now=N - 5 * DAY)
        db.session.remove()

    campaign()
    world(2)
    small = count_queries(lambda: segments.overview(now=N))
    world(10)
    large = count_queries(lambda: segments.overview(now=N))

    assert small == large <= 12


def test_a_segment_page_and_the_csv_are_a_few_queries_however_many_members(monkeypatch):
    monkeypatch.setattr(segments, "CSV_PAGE", 50)
    for _ in range(3):
        factories.member(now=N)
    db.session.remove()
    segments.segment_page("tier:ordinary")  # the ladder is now kept (loyalty/settings_cache.py)
    db.session.remove()
    small = (count_queries(lambda: segments.segment_page("tier:ordinary")),
             count_queries(lambda: list(segments.csv_rows("tier:ordinary"))))
    for _ in range(20):
        member = new_member(now=N)
        factories.purchase(member.id, "10.00", now=N)
    db.session.remove()
    large = (count_queries(lambda: segments.segment_page("tier:ordinary")),
             count_queries(lambda: list(segments.csv_rows("tier:ordinary"))))

    assert small == large


# --- the liability by expiry month ----------------------------------------------------------------

def test_the_liability_of_the_scripted_world_by_local_expiry_month():
    build_world()

    report = segments.liability(now=N)

    assert report["items"] == [
        {"month": "2026-09", "points": D("10.00")},   # D's adjustment
        {"month": "2027-05", "points": D("450.00")},  # B's 1000, less 250 refunded and 300 paid
        {"month": "2027-07", "points": D("40.00")},   # B's 10 and C's 50 less the 20 redeemed
        {"month": "2027-08", "points": D("200.50")},  # A's 200 and C's sign-in
        {"month": "2027-09", "points": D("80.50")},   # G's pending purchase
    ]
    assert report["never_expires"] == D("30.00")  # E's, under the `never` policy
    assert report["total"] == D("811.00") == segments.overview(now=N)["points"]["outstanding"]
    assert report["as_of"] == N


def test_a_lot_ending_at_local_midnight_belongs_to_the_month_of_its_last_day():
    rules(T0, expiry_policy="end_of_month")
    march = new_member(now=T0)
    factories.purchase(march.id, "10.00", now=T0)  # ends at 2026-04-01 00:00 local (31 March 16:00 UTC)
    april = new_member(now=T0)
    # 31 March 20:00 UTC is already 1 April in Shanghai: the points end with April.
    factories.purchase(april.id, "20.00", now=utc(2026, 3, 31, 20))
    rules(T0, expiry_policy="end_of_year")
    factories.purchase(april.id, "5.00", now=utc(2026, 3, 31, 20))  # ends at 2027-01-01 00:00 local
    db.session.remove()

    report = segments.liability(now=utc(2026, 3, 31, 21))

    assert report["items"] == [{"month": "2026-03", "points": D("10.00")}, {"month": "2026-04", "points": D("20.00")},
                               {"month": "2026-12", "points": D("5.00")}]
    assert report["total"] == D("35.00") and report["never_expires"] == D("0.00")


def test_spent_and_expired_points_are_not_a_liability():
    member = new_member(now=T0)
    rules(T0, expiry_days=10)
    factories.purchase(member.id, "40.00", now=T0)  # ends with 20 March 2026
    rules(T0)
    factories.purchase(member.id, "60.00", now=T0)  # ends with 10 March 2027
    points.pay_with_points(member.id, "S1", "P1", D(15), now=T0 + DAY)  # from the March lot: 25 left
    points_jobs.expire_points(date(2026, 3, 21), now=T0 + 11 * DAY)  # those 25 expire
    factories.purchase(member.id, "25.00", now=T0 + 12 * DAY)  # ends with 22 March 2027
    points.pay_with_points(member.id, "S1", "P2", D(60), now=T0 + 13 * DAY)  # the 60 end first: all spent
    db.session.remove()

    report = segments.liability(now=T0 + 14 * DAY)

    assert report["items"] == [{"month": "2027-03", "points": D("25.00")}]
    assert report["total"] == D("25.00")
    assert_ledger_ok()


def test_an_empty_liability():
    assert segments.liability(now=N) == {"items": [], "never_expires": D("0.00"), "total": D("0.00"), "as_of": N}



def test_tags_are_found_in_any_case_and_csv_cells_cannot_run_as_formulas():
    member = factories.member(name="=HYPERLINK(\"http://evil.example\")", now=N)
    segments.add_tags(member.id, ["VIP"], actor="test marketing")

    members, _, _ = segments.segment_page("tag:VIP")
    rows = list(csv.reader(io.StringIO("".join(segments.csv_rows("tag:vip")))))

    assert [m.id for m in members] == [member.id]
    assert rows[1][1] == "'=HYPERLINK(\"http://evil.example\")"
