"""Referral races: real threads send requests at the same instant (see tests/service/test_concurrency.py
for the machinery). Each scenario runs on PostgreSQL (row locks, concurrent writers) and, as a
separate variant, on SQLite (BEGIN IMMEDIATE serialises writers); the answers must be the same.

The rule under test: a referral is settled by the referee's first purchase exactly once, so two
tills crediting that first purchase together reward each side exactly once; a referrer's cap and
the ambassador bonus hold however many referees buy at once; a clawback happens once.
"""
import threading
from datetime import datetime, timezone

import sqlalchemy as sa

from loyalty.errors import LoyaltyError
from loyalty.extensions import db
from loyalty.members.models import Member
from loyalty.points.models import Entry, Purchase
from loyalty.referrals import service as referrals
from loyalty.referrals.models import Referral, ReferralCampaign
from tests import factories
from tests.service.test_concurrency import (API, D, account, assert_ledger_exact, count, on_both_databases,
                                            outcome, outcomes, post, race, read, setup)


# --- helpers --------------------------------------------------------------------------------------

class LedgerThatWaits:
    """The ledger module as referrals.service sees it, except that `lock_account` (which the
    referral step calls to lock the referrer) first calls `before` (by default: wait until
    `parties` racing transactions got there, each holding its referee's lock). SQLite lets only
    one writer in at a time, so there the wait times out and the transactions run in turn."""

    def __init__(self, real, parties=2, before=None):
        self.real, self.barrier, self.before = real, threading.Barrier(parties), before

    def __getattr__(self, name):
        return getattr(self.real, name)

    def lock_account(self, member_id, now):
        if self.before is not None:
            self.before()
        else:
            try:
                self.barrier.wait(timeout=3)
            except threading.BrokenBarrierError:
                pass
        return self.real.lock_account(member_id, now)


def campaign(**changes):
    """A campaign running since 2020 (the races use the real clock)."""
    fields = {"name": "Bring a friend", "starts_at": datetime(2020, 1, 1, tzinfo=timezone.utc), "ends_at": None,
              "referrer_points": D(100), "referee_points": D(50), "min_first_purchase": D("100.00"),
              "qualify_within_days": 30, "link_template": "https://shop.example/join?ref={code}"}
    fields.update(changes)
    return referrals.create_campaign(fields, actor="test").id


def put(path, headers, json=None):
    return lambda client: client.put(API + path, headers=headers, json=json)


def referral(app, referee_id):
    def query():
        row = db.session.scalar(sa.select(Referral).where(Referral.referee_id == referee_id))
        return None if row is None else {"id": row.id, "status": row.status, "purchase_id": row.purchase_id,
                                         "referrer_id": row.referrer_id, "referrer_rewarded": row.referrer_rewarded}
    return read(app, query)


def named(app, member_id, reference_type="referral"):
    """(type, points, reference id) of the member's entries naming a referral (or ambassador)."""
    return read(app, lambda: [(e.type, e.points, int(e.reference_id)) for e in db.session.scalars(
        sa.select(Entry).where(Entry.member_id == member_id, Entry.reference_type == reference_type)
        .order_by(Entry.id))])


def purchases_of(app, member_id):
    """(id, amount) of the member's purchases in the order they were recorded."""
    return read(app, lambda: db.session.execute(
        sa.select(Purchase.id, Purchase.amount).where(Purchase.member_id == member_id).order_by(Purchase.id)).all())


# --- two tills, one first purchase ----------------------------------------------------------------

@on_both_databases
def test_two_tills_crediting_the_referees_first_purchase_reward_each_side_once(database, app, headers):
    """Several rounds, each with a new referee whose first purchase two tills (two stores, two
    receipts) credit at the same instant: both purchases are recorded, the referral qualifies
    once, with the purchase that came first, and each side has exactly one referral reward."""
    referrer_id = setup(app, lambda: (campaign(), factories.member().id)[1])
    code = read(app, lambda: db.session.get(Member, referrer_id).referral_code)
    rounds = 5
    for round_ in range(rounds):
        referee_id = setup(app, lambda: factories.member(referral_code=code).id)
        results = race(app, [
            post("/purchases", headers[till], {"member_id": referee_id, "receipt_no": f"FIRST-{round_}-{till}",
                                               "amount": "150.00"})
            for till in ("pos", "pos_other")
        ])
        assert outcomes(results) == [(201, None)] * 2, round_
        made = referral(app, referee_id)
        assert made["status"] == "qualified", round_
        assert made["purchase_id"] == purchases_of(app, referee_id)[0][0], "the first purchase qualifies it"
        assert named(app, referee_id) == [("bonus", D(50), made["id"])], round_
        assert [(t, p) for t, p, ref in named(app, referrer_id) if ref == made["id"]] == [("bonus", D(100))]
        assert account(app, referee_id)["available"] == D(150 + 150 + 50)
        # The member each answer shows never has the reward twice.
        assert sorted(r.get_json()["member"]["points"]["available"] for r in results) == [D(200), D(350)]
    assert account(app, referrer_id)["available"] == D(100) * rounds
    assert_ledger_exact(app)


@on_both_databases
def test_the_same_first_receipt_sent_twice_at_once_rewards_once(database, app, headers):
    referrer_id = setup(app, lambda: (campaign(), factories.member().id)[1])
    code = read(app, lambda: db.session.get(Member, referrer_id).referral_code)
    for round_ in range(4):
        referee_id = setup(app, lambda: factories.member(referral_code=code).id)
        body = {"member_id": referee_id, "receipt_no": f"SAME-{round_}", "amount": "150.00"}
        results = race(app, [post("/purchases", headers["pos"], body) for _ in range(2)])
        assert outcomes(results) == [(201, None)] * 2, round_
        assert results[0].get_data() == results[1].get_data(), "the retry answers the first body"
        assert sorted(r.headers.get("Idempotent-Replayed", "") for r in results) == ["", "true"]
        assert count(app, Purchase, Purchase.member_id == referee_id) == 1
        made = referral(app, referee_id)
        assert named(app, referee_id) == [("bonus", D(50), made["id"])]
        assert account(app, referee_id)["available"] == D(200)
    assert [p for _, p, _ in named(app, referrer_id)] == [D(100)] * 4
    assert_ledger_exact(app)


@on_both_databases
def test_a_small_and_a_big_first_purchase_at_once_settle_the_referral_by_the_first_one(database, app, headers):
    """10.00 at one till and 150.00 at the other, together: whichever is recorded first is the
    first purchase; the referral is missed or qualified by that one alone, never both."""
    referrer_id = setup(app, lambda: (campaign(), factories.member().id)[1])
    code = read(app, lambda: db.session.get(Member, referrer_id).referral_code)
    qualified = 0
    for round_ in range(6):
        referee_id = setup(app, lambda: factories.member(referral_code=code).id)
        results = race(app, [
            post("/purchases", headers["pos"], {"member_id": referee_id, "receipt_no": f"SMALL-{round_}",
                                                "amount": "10.00"}),
            post("/purchases", headers["pos_other"], {"member_id": referee_id, "receipt_no": f"BIG-{round_}",
                                                      "amount": "150.00"}),
        ])
        assert outcomes(results) == [(201, None)] * 2, round_
        (first_id, first_amount), _ = purchases_of(app, referee_id)
        made = referral(app, referee_id)
        if first_amount >= D(100):
            qualified += 1
            assert (made["status"], made["purchase_id"]) == ("qualified", first_id), round_
            assert named(app, referee_id) == [("bonus", D(50), made["id"])]
        else:
            assert (made["status"], made["purchase_id"]) == ("missed", None), round_
            assert named(app, referee_id) == []
    assert account(app, referrer_id)["available"] == D(100) * qualified
    assert_ledger_exact(app)


# --- one referrer, many referees at once ----------------------------------------------------------

@on_both_databases
def test_many_referees_buying_at_once_respect_the_cap_and_make_one_ambassador(database, app, headers):
    """Eight referees of one referrer make their first purchases together. Cap 3: the referrer is
    rewarded three times, every referee once; threshold 4: one ambassador bonus."""
    def build():
        campaign_id = campaign(max_rewards_per_referrer=3, ambassador_threshold=4, ambassador_bonus_points=D(500))
        referrer = factories.member()
        return campaign_id, referrer.id, [factories.member(referral_code=referrer.referral_code).id for _ in range(8)]
    campaign_id, referrer_id, referee_ids = setup(app, build)

    results = race(app, [
        post("/purchases", headers["pos"], {"member_id": referee_id, "receipt_no": f"MANY-{n}", "amount": "120.00"})
        for n, referee_id in enumerate(referee_ids)
    ])

    assert outcomes(results) == [(201, None)] * 8
    assert [p for _, p, _ in named(app, referrer_id)] == [D(100)] * 3
    assert [p for _, p, _ in named(app, referrer_id, "ambassador")] == [D(500)]
    assert read(app, lambda: db.session.get(Member, referrer_id).ambassador_since) is not None
    assert account(app, referrer_id)["available"] == D(3 * 100 + 500)
    for referee_id in referee_ids:
        assert account(app, referee_id)["available"] == D(120 + 50)
    summary = read(app, lambda: referrals.campaign_stats(campaign_id))
    assert (summary["qualified"], summary["rewarded"], summary["referrer_over_cap"]) == (8, 3, 5)
    assert summary["points_granted"] == D(3 * 100 + 8 * 50)
    assert_ledger_exact(app)


@on_both_databases
def test_two_referees_of_one_referrer_qualifying_at_once_both_reward_the_referrer(database, app, headers,
                                                                                 monkeypatch):
    """Two friends of one referrer make their first purchases at two tills at once; both get to
    the referrer's reward together (a barrier makes sure of it). Both purchases succeed and the
    referrer is rewarded twice."""
    def build():
        campaign()
        referrer = factories.member()
        return referrer.id, [factories.member(referral_code=referrer.referral_code).id for _ in range(2)]
    referrer_id, referee_ids = setup(app, build)
    monkeypatch.setattr(referrals, "ledger", LedgerThatWaits(referrals.ledger))

    results = race(app, [
        post("/purchases", headers[till], {"member_id": referee_id, "receipt_no": f"PAIR-{n}", "amount": "150.00"})
        for n, (till, referee_id) in enumerate(zip(("pos", "pos_other"), referee_ids))
    ])

    assert outcomes(results) == [(201, None)] * 2
    assert [p for _, p, _ in named(app, referrer_id)] == [D(100)] * 2
    assert account(app, referrer_id)["available"] == D(200)
    assert_ledger_exact(app)


@on_both_databases
def test_the_referrer_buying_while_a_friends_first_purchase_is_credited(database, app, headers, monkeypatch):
    """The friend's first purchase reaches the referrer's reward just as the referrer buys
    something at another till (an event makes sure of that order). Both purchases succeed."""
    def build():
        campaign()
        referrer = factories.member()
        return referrer.id, factories.member(referral_code=referrer.referral_code).id
    referrer_id, referee_id = setup(app, build)
    reached = threading.Event()

    def reward_step_reached():
        reached.set()
        threading.Event().wait(0.5)  # the referrer's own purchase goes first meanwhile
    monkeypatch.setattr(referrals, "ledger", LedgerThatWaits(referrals.ledger, before=reward_step_reached))
    friends_purchase = post("/purchases", headers["pos"], {"member_id": referee_id, "receipt_no": "FRIEND-1",
                                                           "amount": "150.00"})
    own_purchase = post("/purchases", headers["pos_other"], {"member_id": referrer_id, "receipt_no": "OWN-1",
                                                             "amount": "80.00"})

    def referrers_purchase(client):
        assert reached.wait(timeout=10)
        return own_purchase(client)
    results = race(app, [friends_purchase, referrers_purchase])

    assert outcomes(results) == [(201, None)] * 2
    assert account(app, referrer_id)["available"] == D(80 + 100)
    assert account(app, referee_id)["available"] == D(150 + 50)
    assert_ledger_exact(app)


# --- refunds, codes, campaigns at once ------------------------------------------------------------

@on_both_databases
def test_concurrent_refunds_of_the_qualifying_purchase_claw_back_once(database, app, headers):
    """Two refunds of 60.00 of the 150.00 first purchase at once: the first one to land leaves
    90.00, below the minimum, and claws both rewards back; the other finds nothing to claw."""
    def build():
        campaign()
        referrer = factories.member()
        referee = factories.member(referral_code=referrer.referral_code)
        purchase = factories.purchase(referee.id, "150.00").record
        return referrer.id, referee.id, purchase.id
    referrer_id, referee_id, purchase_id = setup(app, build)

    results = race(app, [
        post(f"/purchases/{purchase_id}/refunds", headers["pos"], {"refund_no": f"RF-{n}", "amount": "60.00"})
        for n in range(2)
    ])

    assert outcomes(results) == [(201, None)] * 2
    made = referral(app, referee_id)
    assert made["status"] == "clawed_back"
    assert named(app, referee_id) == [("bonus", D(50), made["id"]), ("reverse", D(-50), made["id"])]
    assert named(app, referrer_id) == [("bonus", D(100), made["id"]), ("reverse", D(-100), made["id"])]
    assert account(app, referee_id)["available"] == D(30)
    assert account(app, referrer_id)["available"] == D(0)
    assert_ledger_exact(app)


@on_both_databases
def test_two_codes_entered_at_once_give_one_referrer(database, app, headers):
    def build():
        campaign()
        first, second, newcomer = factories.member(), factories.member(), factories.member()
        return first.referral_code, second.referral_code, newcomer.id
    first_code, second_code, newcomer_id = setup(app, build)

    results = race(app, [put(f"/members/{newcomer_id}/referral", headers["app"], {"referral_code": code})
                         for code in (first_code, second_code)])

    assert outcomes(results) == [(200, None), (409, "conflict")]
    assert count(app, Referral, Referral.referee_id == newcomer_id) == 1


@on_both_databases
def test_a_code_entered_while_the_first_purchase_is_credited_never_rewards_a_later_purchase(database, app, headers):
    """The code and the first purchase at once: either the code comes first (and the purchase
    qualifies it) or the purchase does (and the code is refused with 409)."""
    def build():
        referrer, newcomer = factories.member(), factories.member()
        return referrer.id, referrer.referral_code, newcomer.id
    setup(app, campaign)
    for round_ in range(4):
        referrer_id, code, newcomer_id = setup(app, build)
        results = race(app, [
            put(f"/members/{newcomer_id}/referral", headers["app"], {"referral_code": code}),
            post("/purchases", headers["pos"], {"member_id": newcomer_id, "receipt_no": f"CODE-{round_}",
                                                "amount": "150.00"}),
        ])
        entered, bought = outcome(results[0]), outcome(results[1])
        assert bought == (201, None), round_
        made = referral(app, newcomer_id)
        if entered == (200, None):
            assert made["status"] == "qualified", round_
            assert account(app, referrer_id)["available"] == D(100)
        else:
            assert entered == (409, "conflict"), round_
            assert made is None
            assert account(app, referrer_id)["available"] == D(0)
    assert_ledger_exact(app)


@on_both_databases
def test_two_overlapping_campaigns_created_at_once_one_wins(database, app, headers):
    for round_ in range(3):
        year = 2030 + 2 * round_
        results = race(app, [
            post("/referral-campaigns", headers["marketing"], {
                "name": f"Campaign {n}", "starts_at": f"{year}-0{n + 1}-01T00:00:00Z",
                "ends_at": f"{year + 1}-01-01T00:00:00Z", "referrer_points": 100, "referee_points": 50,
                "min_first_purchase": "100.00", "qualify_within_days": 30,
                "link_template": "https://shop.example/join?ref={code}"})
            for n in range(2)
        ])
        assert outcomes(results) == [(201, None), (409, "conflict")], round_
    assert count(app, ReferralCampaign) == 3


# --- mutual referrals -----------------------------------------------------------------------------

@on_both_databases
def test_mutual_referrals_buying_at_once_do_not_deadlock(database, app, headers, monkeypatch):
    """A refers B at registration; then A, who has not bought yet, enters B's code. Their first
    purchases come in together. Whatever the service decides about such a pair, both tills must
    get a 201 (not a 503 from a deadlock), and the ledger must add up."""
    def build():
        campaign()
        older = factories.member()
        newer = factories.member(referral_code=older.referral_code)
        try:
            referrals.apply_code(older.id, newer.referral_code)
        except LoyaltyError:
            pass  # refusing a mutual referral is a fine answer too
        return older.id, newer.id
    older_id, newer_id = setup(app, build)
    monkeypatch.setattr(referrals, "ledger", LedgerThatWaits(referrals.ledger))

    results = race(app, [
        post("/purchases", headers["pos"], {"member_id": member_id, "receipt_no": f"MUTUAL-{member_id}",
                                            "amount": "150.00"})
        for member_id in (older_id, newer_id)
    ])

    assert outcomes(results) == [(201, None)] * 2
    assert count(app, Purchase) == 2
    assert_ledger_exact(app)
