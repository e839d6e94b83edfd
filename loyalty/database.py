"""Column types that keep numbers exact, and the one way to run a write transaction.

Points and money are stored as integers of their smallest unit (hundredths), so sums in SQL are
exact on SQLite and PostgreSQL alike and no binary float ever touches them.
"""
import contextvars
from contextlib import contextmanager
from datetime import timezone
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.types import TypeDecorator

from loyalty.extensions import db

CENT = Decimal("0.01")


class ScaledDecimal(TypeDecorator):
    """A Decimal with a fixed number of places, stored as a BIGINT of its smallest unit."""

    impl = sa.BigInteger
    cache_ok = True

    def __init__(self, places=2):
        super().__init__()
        self.places = places
        self.factor = 10**places
        self.quantum = Decimal(1).scaleb(-places)

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = Decimal(value)
        scaled = value * self.factor
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than {self.places} decimal places")
        return int(scaled)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return (Decimal(int(value)) / self.factor).quantize(self.quantum)

    def coerce_compared_value(self, op, value):
        return self


Points = ScaledDecimal  # points: 2 places
Money = ScaledDecimal  # money amounts: 2 places, the currency in its own column


class UTCDateTime(TypeDecorator):
    """An aware UTC datetime on every database (SQLite keeps no time zone, so we put it back)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# --- transactions ----------------------------------------------------------------------------

_write_transaction = contextvars.ContextVar("write_transaction", default=False)


def configure_engine(engine):
    """SQLite: one writer at a time, taken at BEGIN, so no check-then-write race can exist.

    pysqlite's own transaction handling is switched off and we emit BEGIN ourselves: BEGIN
    IMMEDIATE inside `transaction()`, a plain deferred BEGIN for reads.
    """
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if engine.url.database and engine.url.database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _write_transaction.get() else "BEGIN")


@contextmanager
def transaction():
    """Run a use case as one write transaction: commit at the end, roll back on any error.

    A use case called inside another one (or inside the idempotency wrapper of a request) joins
    the outer transaction, so the whole request commits or fails as one.
    """
    session = db.session()  # the request's (or thread's) own session behind the scoped proxy
    if session.info.get("transaction_depth"):
        session.info["transaction_depth"] += 1
        try:
            yield session
        finally:
            session.info["transaction_depth"] -= 1
        return
    token = _write_transaction.set(True)
    session.info["transaction_depth"] = 1
    try:
        if session.in_transaction() and session.get_bind().dialect.name == "sqlite":
            # A read transaction (the API key lookup, say) is open: end it, so that the write
            # transaction begins afresh and takes SQLite's write lock at BEGIN IMMEDIATE.
            # PostgreSQL simply goes on in the same transaction: its row locks do the work.
            session.commit()
        if not session.in_transaction():
            session.begin()
            session.connection()  # BEGIN now, under the write flag
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.info["transaction_depth"] = 0
        _write_transaction.reset(token)


@contextmanager
def read_only():
    """A read outside any write transaction. On PostgreSQL the session's connection is taken in
    autocommit: no BEGIN and no ROLLBACK round trips, no transaction held open, and psycopg keeps the
    statements it prepared (a ROLLBACK drops them). Each statement then is its own snapshot, so a read
    that must be consistent is one statement. At the end the connection goes back to the pool (its
    isolation level reset), so a write that follows gets a transaction of its own. Inside a
    transaction (a write, or a read that began one), that transaction's own view is used."""
    session = db.session()
    if session.in_transaction() or session.get_bind().dialect.name != "postgresql":
        yield session
        return
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    try:
        yield session
    finally:
        session.commit()  # nothing to commit (psycopg sends nothing): hands the connection back


# An auto-incrementing 64-bit key (SQLite only auto-increments INTEGER PRIMARY KEY).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def rows_changed(statement: sa.Executable) -> int:
    """Run an UPDATE or DELETE in the session's transaction; how many rows it changed (a conditional
    UPDATE's answer: 1 if it won, 0 if a twin got there first)."""
    result = db.session.execute(statement.execution_options(synchronize_session=False))
    return cast(sa.CursorResult[Any], result).rowcount


class json_array_text(sa.sql.expression.FunctionElement[str]):  # noqa: N801 - a SQL function's name
    """An aggregate: the group's values as a JSON array in text (NULL or '[]' for none), for a list
    read in a statement that returns one row (json.loads it): any character survives, unlike a
    separator-joined string."""

    type = sa.String()
    inherit_cache = True


@compiles(json_array_text, "postgresql")
def _json_array_text_postgresql(element, compiler, **kw):
    return f"CAST(json_agg({compiler.process(element.clauses, **kw)}) AS TEXT)"


@compiles(json_array_text)
def _json_array_text_sqlite(element, compiler, **kw):
    return f"json_group_array({compiler.process(element.clauses, **kw)})"


def render_migration_type(type_, obj, autogen_context):
    """Alembic: write our column types as the plain types they store, so migrations stand alone."""
    if type_ == "type" and isinstance(obj, ScaledDecimal):
        return "sa.BigInteger()"
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False
