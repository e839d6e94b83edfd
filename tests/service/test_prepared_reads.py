"""The member reads run their one statement on the driver's connection (database.PreparedSelect,
issue 20): the same values, converted by the same column types, as SQLAlchemy's own execution gives;
inside a write transaction, that transaction's view; the engine's statement listeners still told."""
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from loyalty import clock
from loyalty.database import PreparedSelect, transaction
from loyalty.extensions import db
from loyalty.members import service as members
from loyalty.members.models import Member, MemberIdentity
from loyalty.points import service as points
from loyalty.points.models import Account, Lot
from loyalty.tiers import service as tiers
from tests.factories import D, member, purchase

pytestmark = pytest.mark.usefixtures("ctx")

STATEMENTS = [
    sa.select(Member.id, Member.name, Member.birthday, Member.joined_at, Account.available, Account.held,
              sa.literal(True).label("flag"))
    .join(Account, Account.member_id == Member.id).where(Member.id == sa.bindparam("member_id")),
    sa.select(Lot.id, Lot.points, Lot.remaining, Lot.expires_at, Lot.status)
    .where(Lot.member_id == sa.bindparam("member_id"), Lot.expires_at > sa.bindparam("now"),
           Lot.status != "expired").order_by(Lot.id),
]


def test_rows_have_the_values_and_types_sqlalchemy_gives():
    someone = member(birthday=datetime(1990, 5, 17).date())
    purchase(someone.id, "123.45")
    purchase(someone.id, "0.01")
    now = clock.now()
    for statement in STATEMENTS:
        expected = [tuple(row) for row in db.session.execute(statement, {"member_id": someone.id, "now": now})]
        db.session.rollback()
        got = PreparedSelect(statement).rows(member_id=someone.id, now=now)
        assert [tuple(row) for row in got] == expected
        assert [type(value) for row in got for value in row] == [type(value) for row in expected for value in row]
        assert got and list(got[0]._fields) == list(statement.selected_columns.keys())


def test_constants_are_written_into_the_statement_and_answer_as_sqlalchemy_does():
    """Constants (a string with a quote, a Points value in hundredths, a date, a LIMIT) are inlined by
    their types' own rendering; named parameters stay parameters (issue 20: fewer values sent)."""
    someone = member(name="O'Brien")
    purchase(someone.id, "12.50")
    purchase(someone.id, "3.00")
    statement = (sa.select(Member.name, Lot.points, sa.literal(D("12.50"), Lot.points.type).label("fixed"))
                 .join(Lot, Lot.member_id == Member.id)
                 .where(Member.id == sa.bindparam("member_id"), Member.name == "O'Brien",
                        Lot.points >= D("12.50"), Lot.created_at > datetime(2000, 1, 1, tzinfo=timezone.utc))
                 .order_by(Lot.id).limit(5))
    expected = [tuple(row) for row in db.session.execute(statement, {"member_id": someone.id})]
    db.session.rollback()
    assert expected == [("O'Brien", D("12.50"), D("12.50"))]
    prepared = PreparedSelect(statement)
    assert [tuple(row) for row in prepared.rows(member_id=someone.id)] == expected
    plan = next(iter(prepared._plans.values()))
    assert set(plan.compiled.bind_names.values()) <= {"member_id", "param_1"}  # SQLite keeps LIMIT's
    assert "O''Brien" in plan.sql and "1250" in plan.sql


def test_inside_a_write_transaction_it_sees_what_the_transaction_wrote():
    someone = member()
    with transaction():
        db.session.execute(sa.update(Account).where(Account.member_id == someone.id).values(available=D("7.50")))
        inside = points.points_summary(someone.id)["available"]
    assert inside == D("7.50")
    assert points.points_summary(someone.id)["available"] == D("7.50")


def test_the_reads_answer_what_the_models_hold():
    someone = member(name="Reader", email="reader@example.com")
    with transaction():
        db.session.add_all([MemberIdentity(member_id=someone.id, channel="wechat", external_id="wx-1"),
                            MemberIdentity(member_id=someone.id, channel="alipay", external_id="ali-9")])
    purchase(someone.id, "88.00")
    read = members.read_member(someone.id)
    stored = db.session.get(Member, someone.id, populate_existing=True)
    for name in ("id", "member_no", "name", "phone", "email", "tier_code", "referral_code", "joined_at", "status"):
        assert getattr(read, name) == getattr(stored, name), name
    assert [(i.channel, i.external_id) for i in read.identities] == [("wechat", "wx-1"), ("alipay", "ali-9")]
    assert read.account.available == stored.account.available == D("88.00")
    document = tiers.member_tier(someone.id)
    assert document["qualifying"]["spend"] == D("88.00")
    assert document["since"] == stored.tier_since and document["since"].tzinfo == timezone.utc


def test_statement_listeners_see_the_read():
    someone = member()
    seen = []

    def listen(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", listen)
    try:
        points.points_summary(someone.id)
    finally:
        event.remove(db.engine, "before_cursor_execute", listen)
    assert len(seen) == 1 and "settings_version" in seen[0]


def test_a_statement_it_cannot_compile_once_is_refused_when_first_run():
    someone = member()
    expanding = PreparedSelect(sa.select(Lot.id).where(Lot.status.in_(["available", "pending"])))
    with pytest.raises(ValueError, match="IN list"):
        expanding.rows(member_id=someone.id)


def test_a_database_error_is_raised_as_sqlalchemy_raises_it():
    """An OperationalError is a 503 to the client (errors.py), whichever way the statement ran."""
    missing = sa.table("no_such_table", sa.column("id"))
    statement = PreparedSelect(sa.select(missing.c.id).where(missing.c.id == sa.bindparam("member_id")))
    with pytest.raises(sa.exc.DBAPIError):
        statement.rows(member_id=1)
    with pytest.raises(sa.exc.DBAPIError):
        with transaction():
            statement.rows(member_id=1)


def test_a_writing_statement_runs_only_inside_a_transaction():
    someone = member()
    writing = PreparedSelect(sa.select(Member.id).where(Member.id == sa.bindparam("member_id")), writes=True)
    with pytest.raises(RuntimeError, match="only inside a transaction"):
        writing.rows(member_id=someone.id)
    with transaction():
        assert [row.id for row in writing.rows(member_id=someone.id)] == [someone.id]
