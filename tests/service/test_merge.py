"""Two records of one person become one: every point with its expiry, the history, identities,
tags and referrals move; the totals are kept; the other record is closed and found as the survivor."""
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from loyalty.errors import Conflict, ValidationFailed
from loyalty.extensions import db
from loyalty.members import merge, service as members
from loyalty.members.models import Member
from loyalty.points import service as points
from loyalty.segments import service as segments
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import T0, assert_ledger_ok, balances, entries, lot_rows, use_rules

pytestmark = pytest.mark.usefixtures("ctx")


def two_records():
    app_record = factories.member(now=T0, phone="+8613800000001", external_ids=[{"channel": "app", "id": "u-1"}])
    store_record = factories.member(now=T0, phone=None, email="li@example.com",
                                    external_ids=[{"channel": "store", "id": "c-9"}])
    return SimpleNamespace(id=app_record.id), SimpleNamespace(id=store_record.id)


def test_points_lots_history_and_totals_move_to_the_survivor():
    use_rules(expiry_days=30)
    keep, other = two_records()
    factories.purchase(keep.id, "100.00", now=T0)
    use_rules(expiry_days=365)
    factories.purchase(other.id, "40.00", now=T0, store_id="S2")
    points.record_activity(other.id, "sign_in", "d1", now=T0)
    total_before = balances(keep.id)[0] + balances(other.id)[0]
    other_expiries = sorted(lot.expires_at for lot in lot_rows(other.id))

    survivor = merge.merge_members(keep.id, other.id, "admin:1", now=T0 + timedelta(hours=1))
    db.session.remove()

    assert survivor.id == keep.id
    assert balances(keep.id) == (total_before, D("0.00"), D("140.50"), D("0.00"))
    assert balances(other.id) == (D("0.00"), D("0.00"), D("0.00"), D("0.00"))
    assert sorted(lot.expires_at for lot in lot_rows(keep.id))[1:] == other_expiries
    kinds = [t for t, _ in entries(keep.id)]
    assert kinds.count("earn_purchase") == 2 and kinds.count("earn_activity") == 1 and kinds[-1] == "adjust"
    assert entries(other.id) == [("adjust", D("0.00"))]
    assert_ledger_ok()


def test_the_other_record_is_closed_and_its_identities_find_the_survivor():
    keep, other = two_records()
    segments.add_tags(other.id, ["vip"], "test", now=T0)

    merge.merge_members(keep.id, other.id, "admin:1", now=T0)
    db.session.remove()

    closed = db.session.get(Member, other.id)
    assert (closed.status, closed.merged_into_id) == ("closed", keep.id)
    assert [m.id for m in members.find_members(email="li@example.com")] == [keep.id]
    assert [m.id for m in members.find_members(channel="store", external_id="c-9")] == [keep.id]
    assert members.member_id_for(card=closed.card_token) == keep.id
    assert segments.member_tags(keep.id) == ["vip"]
    # A purchase at the till with the old card lands on the survivor.
    factories.purchase(members.member_id_for(card=closed.card_token), "10.00", now=T0)
    assert balances(keep.id)[0] == D("10.00")


def test_a_debt_on_one_side_is_paid_from_the_other_sides_points():
    keep, other = two_records()
    factories.purchase(keep.id, "50.00", now=T0)
    points.adjust_points(other.id, D("-20"), "correction", "test", now=T0)  # owes 20

    merge.merge_members(keep.id, other.id, "admin:1", now=T0)
    db.session.remove()

    assert balances(keep.id) == (D("30.00"), D("0.00"), D("50.00"), D("0.00"))
    assert_ledger_ok()


def test_a_refund_after_the_merge_claws_back_from_the_survivor():
    keep, other = two_records()
    purchase = factories.purchase(other.id, "80.00", now=T0).record
    merge.merge_members(keep.id, other.id, "admin:1", now=T0)

    points.refund_purchase(purchase.id, "S1", "F1", D("80.00"), now=T0 + timedelta(days=1))
    db.session.remove()

    assert balances(keep.id)[0] == D("0.00")
    assert_ledger_ok()


def test_the_higher_tier_is_kept():
    keep, other = two_records()
    factories.purchase(other.id, "12000.00", now=T0)  # gold

    merge.merge_members(keep.id, other.id, "admin:1", now=T0)
    db.session.remove()

    assert db.session.get(Member, keep.id).tier_code == "gold"


def test_merging_into_itself_or_a_closed_member_is_refused_and_changes_nothing():
    keep, other = two_records()
    with pytest.raises(ValidationFailed):
        merge.merge_members(keep.id, keep.id, "admin:1", now=T0)
    merge.merge_members(keep.id, other.id, "admin:1", now=T0)
    with pytest.raises(Conflict):
        merge.merge_members(other.id, keep.id, "admin:1", now=T0)
    with pytest.raises(Conflict):
        merge.merge_members(keep.id, other.id, "admin:1", now=T0)
    db.session.remove()
    assert db.session.get(Member, keep.id).status == "active"


def test_the_merge_is_audited():
    from loyalty.audit import AuditEntry

    keep, other = two_records()
    factories.purchase(other.id, "5.00", now=T0)
    merge.merge_members(keep.id, other.id, "admin:1", now=T0)

    [entry] = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "member.merge")).all()
    assert entry.actor == "admin:1" and entry.after["moved"]["points"] == "5.00"


def test_merge_over_http_is_for_admin_only(api):
    with api.client.application.app_context():
        keep, other = two_records()
        db.session.remove()

    assert api.post("marketing", f"/members/{keep.id}/merge", json={"from_member_id": other.id}).status_code == 403
    answer = api.post("admin", f"/members/{keep.id}/merge", json={"from_member_id": other.id})
    assert answer.status_code == 200, answer.json
    assert answer.json["id"] == keep.id
    assert api.get("admin", f"/members/{other.id}").json["merged_into_id"] == keep.id
    assert api.get("pos", "/members?email=li@example.com").json["items"][0]["id"] == keep.id
