"""Migration 0011 rewrites stored phones in E.164: members sharing a number are kept, reported and
listed for an admin to merge; phones that are no valid number are left as they were and reported."""
import logging
import secrets
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask_migrate import upgrade

from loyalty import create_app
from loyalty.extensions import db
from loyalty.members import merge, service
from loyalty.members.models import Member
from loyalty.points.models import Account
from loyalty.tiers.service import seed_tiers
from tests.conftest import CommandRunner
from tests.test_migrations import empty_database_url  # noqa: F401 (a fixture)

T0 = datetime(2025, 1, 1, 4, 0, tzinfo=timezone.utc)

# (phone as the old service stored it, days after T0 it joined, status)
LEGACY = {
    "national": ("13800138000", 0, "active"),
    "country code": ("8613800138000", 1, "active"),
    "e164": ("+8613800138000", 2, "active"),
    "exit code": ("008613800138000", 3, "active"),
    "invalid": ("12345", 4, "active"),
    "alone": ("13900139000", 5, "active"),
    "first of two": ("8613700137000", 6, "active"),
    "second of two": ("13700137000", 7, "active"),
    "closed": ("13600136000", 8, "closed"),
    "open twin of closed": ("8613600136000", 9, "active"),
}


def insert_legacy_members():
    """Members as revision 0010 stored them: through the table as it was then (reflected), not the
    model, which has columns of later revisions."""
    members = sa.Table("members", sa.MetaData(), autoload_with=db.session.connection())
    ids = {}
    for label, (phone, days, status) in LEGACY.items():
        joined = T0 + timedelta(days=days)
        member_id = db.session.execute(sa.insert(members).values(
            name=label, phone=phone, status=status, card_token=secrets.token_urlsafe(18),
            referral_code=secrets.token_hex(4).upper(), tier_code="ordinary", joined_at=joined,
            tier_since=joined, updated_at=joined)).inserted_primary_key[0]
        db.session.execute(sa.update(members).where(members.c.id == member_id)
                           .values(member_no=service.member_number(member_id)))
        # Only the columns the schema of 0010 has: the model may have more by now.
        db.session.execute(sa.insert(Account.__table__).values(member_id=member_id, updated_at=joined))
        ids[label] = member_id
    db.session.commit()
    return ids


def phones_by_label(ids):
    stored = dict(db.session.execute(sa.select(Member.id, Member.phone)).all())
    return {label: stored[member_id] for label, member_id in ids.items()}


class Report(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_upgrade_rewrites_phones_in_e164_and_keeps_and_reports_members_sharing_a_number(empty_database_url):
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database_url, "LOYALTY_LOG_LEVEL": "WARNING",
                      "LOYALTY_PHONE_REGION": "CN"})
    with app.app_context():
        upgrade(revision="0010")
        seed_tiers()
        ids = insert_legacy_members()
        report_handler = Report()
        logging.getLogger("loyalty.migrations").addHandler(report_handler)
        try:
            upgrade()
        finally:
            logging.getLogger("loyalty.migrations").removeHandler(report_handler)
        report = "\n".join(report_handler.lines)

        assert phones_by_label(ids) == {
            "national": "13800138000",  # the member already holding +8613800138000 keeps it
            "country code": "8613800138000",
            "e164": "+8613800138000",
            "exit code": "008613800138000",
            "invalid": "12345",  # left as it was
            "alone": "+8613900139000",
            "first of two": "+8613700137000",  # nobody held it: the first to join takes it
            "second of two": "13700137000",
            "closed": "13600136000",  # an open member takes it before a closed one
            "open twin of closed": "+8613600136000",
        }
        for other in ("national", "country code", "exit code"):
            assert f"Members {ids['e164']} and {ids[other]} share the phone +8613800138000" in report
        assert f"Members {ids['first of two']} and {ids['second of two']} share the phone +8613700137000" in report
        assert f"Member {ids['invalid']} has the phone '12345', which is not a valid number" in report
        assert report.endswith("Phones in E.164: 3 rewritten, 5 shared with another member, 1 not valid numbers.")

        shared, invalid = service.phone_duplicates()
        assert {(s.phone, s.first.id, s.second.id) for s in shared} == {
            ("+8613800138000", ids["e164"], ids["national"]),
            ("+8613800138000", ids["e164"], ids["country code"]),
            ("+8613800138000", ids["e164"], ids["exit code"]),
            ("+8613700137000", ids["first of two"], ids["second of two"]),
        }
        assert [m.id for m in invalid] == [ids["invalid"]]
        listing = CommandRunner(app).invoke(args=["members", "duplicates"]).output.splitlines()
        assert listing[0].startswith("phone\tfirst_id\tfirst_member_no\tfirst_joined_at\t")
        assert listing[-1] == "4 pairs share a phone number; 1 phones are not valid numbers."

        # Every spelling finds the whole group until an admin merges it.
        assert [m.id for m in service.find_members(phone="0086 138 0013 8000")] == sorted(
            ids[label] for label in ("national", "country code", "e164", "exit code"))
        merge.merge_members(ids["e164"], ids["national"], "admin:1")
        db.session.remove()

        shared, _ = service.phone_duplicates()
        assert (ids["e164"], ids["national"]) not in {(s.first.id, s.second.id) for s in shared}
        assert len(shared) == 3
        db.session.remove()
        db.engine.dispose()
