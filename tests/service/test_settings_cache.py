"""The earning rules and the tier ladder a process keeps (loyalty/settings_cache.py): a change made
in this process is seen at once (one made by another process through the service too: see
tests/api/test_settings_version.py), one written behind the service's back within
LOYALTY_SETTINGS_CACHE_SECONDS, an uncommitted or rolled-back change never leaks into what others read."""
import json
import time
from dataclasses import replace
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loyalty import settings_cache
from loyalty.database import transaction
from loyalty.extensions import db
from loyalty.points import service as points
from loyalty.points.rules import EarningRules
from loyalty.tiers import service as tiers
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import T0

pytestmark = pytest.mark.usefixtures("ctx")


@pytest.fixture
def clock_ahead(monkeypatch):
    """Move the cache's monotonic clock forward by `seconds`."""
    offset = [0.0]
    real = time.monotonic
    monkeypatch.setattr(settings_cache.time, "monotonic", lambda: real() + offset[0])

    def ahead(seconds):
        offset[0] += seconds
    return ahead


def other_process_sets(sql, **params):
    """A write that this process's sessions never see: another worker's, say."""
    with db.engine.begin() as connection:
        connection.execute(sa.text(sql), params)


def test_a_rules_change_made_here_is_seen_at_once_by_the_next_purchase(ctx):
    member = factories.member(now=T0)
    assert factories.purchase(member.id, "100.00", receipt_no="R1", now=T0).record.points_earned == D("100.00")
    points.update_rules(replace(EarningRules(), points_per_unit=Decimal("2")), actor="test", now=T0)
    db.session.remove()  # the next request's session
    assert factories.purchase(member.id, "100.00", receipt_no="R2", now=T0).record.points_earned == D("200.00")


def test_a_change_written_behind_the_services_back_is_seen_once_the_cache_time_has_passed(ctx, app, clock_ahead):
    assert points.current_rules().points_per_unit == Decimal("1")
    silver = tiers.ladder()[1]
    assert silver.code == "silver"
    document = replace(EarningRules(), points_per_unit=Decimal("3")).to_document()
    other_process_sets("UPDATE earning_rules SET settings = :doc, version = version + 1 WHERE id = 1",
                       doc=json.dumps(document))
    other_process_sets("UPDATE tiers SET name = 'Argent' WHERE code = 'silver'")
    db.session.remove()

    assert points.current_rules().points_per_unit == Decimal("1")  # still what this process read
    assert tiers.ladder()[1].name == silver.name
    clock_ahead(app.config["LOYALTY_SETTINGS_CACHE_SECONDS"])
    assert points.current_rules().points_per_unit == Decimal("3")
    assert tiers.ladder()[1].name == "Argent"


def test_a_transaction_sees_its_own_uncommitted_change_and_no_one_keeps_it(ctx):
    assert points.current_rules().pending_days == 0
    with pytest.raises(RuntimeError):
        with transaction():
            points.update_rules(replace(EarningRules(), pending_days=14), actor="test", now=T0)
            assert points.current_rules().pending_days == 14  # its own view
            raise RuntimeError("the request failed after the change")
    db.session.remove()
    assert points.current_rules().pending_days == 0


def test_a_tier_edit_renames_the_tier_in_the_next_answer(ctx):
    member = factories.member(now=T0)
    silver = next(tier for tier in tiers.read_ladder() if tier.code == "silver")
    tiers.set_member_tier(member.id, "silver", reason="test", actor="test", now=T0)
    db.session.remove()
    rule = next(rule for rule in tiers.ladder() if rule.code == "silver")
    tiers.update_tier("silver", "Silver Plus",
                      {"spend": rule.spend, "activities": rule.activities, "mode": rule.mode},
                      {"earn_multiplier": rule.earn_multiplier, "birthday_points": rule.birthday_points,
                       "service_level": rule.service_level, "perks": list(rule.perks)},
                      actor="test", now=T0)
    db.session.remove()
    from loyalty.api.schemas.members import MemberSchema
    from loyalty.members.models import Member
    assert silver.code == "silver"
    assert MemberSchema().dump(db.session.get(Member, member.id))["tier"] == {"code": "silver", "name": "Silver Plus"}
