"""Column types that keep numbers exact, and the one way to run a write transaction.

Points and money are stored as integers of their smallest unit (hundredths), so sums in SQL are
exact on SQLite and PostgreSQL alike and no binary float ever touches them.
"""
import contextvars
import logging
from collections import namedtuple
from contextlib import contextmanager
from datetime import timezone
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import visitors
from sqlalchemy.types import TypeDecorator

from loyalty.extensions import db

CENT = Decimal("0.01")
log = logging.getLogger(__name__)


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

    PostgreSQL: each transaction notes whether it sent anything but a SELECT (`end_read_only`).
    """
    if engine.dialect.name == "postgresql":
        event.listen(engine, "begin", _began)
        event.listen(engine, "before_cursor_execute", _note_writes)
        return
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


_WROTE = "loyalty.wrote"  # Connection.info: this transaction sent something other than a SELECT


def _began(connection):
    connection.info[_WROTE] = False


def _note_writes(connection, cursor, statement, parameters, context, executemany):
    if connection is not None and statement[:40].lstrip()[:6].upper() != "SELECT":
        connection.info[_WROTE] = True


def end_read_only(exc: BaseException | None = None) -> None:
    """At the end of a request or job (teardown), COMMIT the session's transaction rather than let it
    be rolled back, on PostgreSQL, when it only read: the same for the database (nothing to undo, its
    locks released either way), but psycopg forgets every statement it prepared on a connection at a
    ROLLBACK and sends DEALLOCATE ALL, so each read through the session (a history page, a cached
    setting loaded) cost the hot statements on that connection their prepared plans (issue 20). A
    transaction that wrote, or has ORM changes not flushed, is left to the rollback as before."""
    registry = db.session.registry
    if not registry.has():
        return
    session = registry()
    if not session.in_transaction() or session.new or session.dirty or session.deleted:
        return
    if session.get_bind().dialect.name != "postgresql":
        return
    try:
        if not session.connection().info.get(_WROTE, True):
            session.commit()
    except Exception:  # noqa: BLE001 - the connection is broken: the session's removal rolls back, as before
        log.warning("ending a read-only transaction failed; it is rolled back", exc_info=True)


# session.info: a check a write transaction runs last, before it commits, inside it (auth.roles: a
# credential checked a few seconds ago is confirmed against the settings version this transaction read).
BEFORE_COMMIT = "before_commit"


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
        before_commit = session.info.get(BEFORE_COMMIT)
        if before_commit is not None:
            before_commit()  # may refuse: then nothing is written
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.info["transaction_depth"] = 0
        _write_transaction.reset(token)


class PreparedSelect:
    """A SELECT built once, compiled once per dialect, and run on the database driver's own
    connection: for the member reads, the hottest statements (issue 20). SQLAlchemy's session and
    result machinery cost about 0.24 ms of a 0.9 ms read (connection handed out and back with its
    isolation level set and reset, the statement's cache key, a CursorResult and its metadata); here
    a read is the pool's checkout, one execute and the rows. The statement stays SQLAlchemy's (its
    text and its types' conversions, both dialects); only the running is direct.

    `rows(**values)` answers named tuples with the statement's column names, each value converted
    by its column's type as SQLAlchemy would. Outside a transaction, on PostgreSQL the connection is
    in autocommit for the statement (one snapshot, no BEGIN or ROLLBACK round trip; psycopg keeps
    its prepared statements); SQLite runs a lone SELECT as its own transaction anyway. Inside a
    transaction (a write, or a read that began one), it runs on that transaction's connection and
    sees what it sees (a SELECT whose CTEs write, points/plain_purchase.py, is made with `writes=True`
    and refuses to run anywhere else). A database error is raised as SQLAlchemy raises it. The
    engine's before/after_cursor_execute listeners are told of the statement (with the transaction's
    Connection, or none outside one), so statement logs and counts still see it."""

    def __init__(self, statement: sa.Select[Any] | sa.CompoundSelect[Any], writes: bool = False):
        self.statement = statement
        self.writes = writes  # its CTEs write: it runs only inside the caller's transaction
        self._plans: dict[str, _Plan] = {}

    def rows(self, **values: Any) -> list[Any]:
        session = db.session()
        engine = cast(sa.Engine, session.get_bind())
        plan = self._plans.get(engine.dialect.name)
        if plan is None:
            plan = self._plans[engine.dialect.name] = _Plan(self.statement, engine.dialect)
        if session.in_transaction():
            connection = session.connection()
            try:
                return plan.run(engine, connection.connection.driver_connection, values, connection)
            except sa.exc.DBAPIError as error:
                if error.connection_invalidated:
                    connection.invalidate(error)
                raise
        if self.writes:
            raise RuntimeError("A writing PreparedSelect runs only inside a transaction (database.transaction()).")
        pooled = engine.raw_connection()
        try:
            driver: Any = pooled.driver_connection
            if not plan.autocommit:
                return plan.run(engine, driver, values)
            driver.autocommit = True
            try:
                return plan.run(engine, driver, values)
            finally:
                driver.autocommit = False
        except sa.exc.DBAPIError as error:
            if error.connection_invalidated:
                pooled.invalidate(error)
            raise
        finally:
            pooled.close()  # back to the pool


    def first(self, **values: Any) -> Any:
        """The first row `rows` answers, or None."""
        found = self.rows(**values)
        return found[0] if found else None


class _Plan:
    """One statement compiled for one dialect, with its parameters' and columns' conversions."""

    def __init__(self, statement: sa.Select[Any] | sa.CompoundSelect[Any], dialect: sa.Dialect):
        compiled = _with_constants_inline(statement, dialect).compile(dialect=dialect)
        if compiled.escaped_bind_names:
            raise ValueError("PreparedSelect: a bind parameter's name needs escaping; rename it")
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("PreparedSelect: an IN list (or another parameter rendered at execution) "
                             "cannot be compiled once; use a subquery or = ANY")
        self.sql = compiled.string
        self.compiled = compiled
        self.order = compiled.positiontup if compiled.positional else None
        self.autocommit = dialect.name == "postgresql"
        # One conversion per parameter name (a name used twice, like member_id, is one value), as
        # SQLAlchemy's own execution does.
        processors: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            processors.setdefault(name, bind.type.dialect_impl(dialect).bind_processor(dialect))
        self.to_database = [(name, processor) for name, processor in processors.items() if processor is not None]
        columns = statement.selected_columns
        converters = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        self.from_database = [(index, convert) for index, convert in enumerate(converters) if convert is not None]
        self.row: Any = namedtuple("Row", list(columns.keys()), rename=True)  # type: ignore[misc]  # an unlabelled column: _0

    def run(self, engine: sa.Engine, driver: Any, values: dict[str, Any],
            connection: sa.Connection | None = None) -> list[Any]:
        params = self.compiled.construct_params(values)
        for name, processor in self.to_database:
            params[name] = processor(params[name])
        bound: Any = params if self.order is None else tuple(params[name] for name in self.order)
        cursor = driver.cursor()
        try:
            listening = engine.dispatch.before_cursor_execute or engine.dispatch.after_cursor_execute
            if listening:
                for listener in engine.dispatch.before_cursor_execute:
                    listener(connection, cursor, self.sql, bound, None, False)
            try:
                cursor.execute(self.sql, bound)
                fetched = cursor.fetchall()
            except engine.dialect.loaded_dbapi.Error as error:
                # As SQLAlchemy's own execution raises it (an OperationalError is a 503 to the client,
                # errors.py; an IntegrityError what the callers catch), with whether the connection died.
                raise sa.exc.DBAPIError.instance(
                    self.sql, bound, error, engine.dialect.loaded_dbapi.Error,
                    connection_invalidated=engine.dialect.is_disconnect(error, driver, cursor)) from error
            if listening:
                for listener in engine.dispatch.after_cursor_execute:
                    listener(connection, cursor, self.sql, bound, None, False)
        finally:
            cursor.close()
        rows = []
        for raw in fetched:
            row = list(raw)
            for index, convert in self.from_database:
                if row[index] is not None:  # NULL is None in every type (most of a UNION's filler)
                    row[index] = convert(row[index])
            rows.append(self.row._make(row))
        return rows


def _with_constants_inline(statement: Any, dialect: sa.Dialect) -> Any:
    """The statement with its constants (the 'pending' of `Lot.status == "pending"`, a LIMIT, a 0)
    written into its text instead of sent as parameters: SQLAlchemy makes each an anonymous bound
    parameter, and the points read had 18 of them, every one converted and sent on every run
    (about 15 µs of CPU and 12 µs of the database's time per read). Only parameters that came from a
    literal value are inlined, each by its type's own literal rendering (a type without one stays a
    parameter); named parameters (`sa.bindparam("member_id")`) stay parameters."""

    def inline(element: Any) -> Any:
        if not isinstance(element, sa.BindParameter) or element.required or not element.unique \
                or element.callable is not None or element.value is None or element.expanding:
            return None
        try:
            render = element.type.literal_processor(dialect)
        except NotImplementedError:
            return None
        if render is None:
            return None
        return sa.literal_column(render(element.value), type_=element.type)

    return visitors.replacement_traverse(statement, {}, inline)  # type: ignore[call-overload]


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
