"""Fixtures: the app on SQLite (a temp file) or on LOYALTY_TEST_DATABASE_URL, migrated to head
once per session; every test starts from empty tables with the default earning rules."""
import os
import socket

import marshmallow
import pytest
import sqlalchemy as sa
from flask.testing import FlaskCliRunner
from flask_migrate import upgrade

from loyalty import auth, create_app, settings_cache
from loyalty import config as config_module
from loyalty.api.schemas import common as schemas_common
from loyalty.cli import main
from loyalty.extensions import db
from loyalty.members import tokens
from loyalty.points.service import seed_rules
from loyalty.tiers.service import seed_tiers

TEST_DATABASE_URL = os.environ.get("LOYALTY_TEST_DATABASE_URL")


def pytest_collection_modifyitems(config, items):
    if TEST_DATABASE_URL and TEST_DATABASE_URL.startswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set LOYALTY_TEST_DATABASE_URL")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


def database_url(tmp_path_factory):
    return TEST_DATABASE_URL or "sqlite:///" + str(tmp_path_factory.mktemp("db") / "test.sqlite")


def reset_schema(engine):
    """Start from an empty database (PostgreSQL's test database outlives a run)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


@pytest.fixture(scope="session")
def app(tmp_path_factory):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url(tmp_path_factory),
                      "LOYALTY_LOG_LEVEL": "WARNING", **UNTHROTTLED})
    with app.app_context():
        reset_schema(db.engine)
        upgrade()
        db.session.remove()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


# The suite's app is not throttled: its tests send hundreds of requests a second with one key and
# many failed authentications; tests/api/test_rate_limits.py builds apps with real limits.
UNTHROTTLED = {"LOYALTY_RATE_LIMITS": {role: "1000000/second" for role in config_module.DEFAULT_RATE_LIMITS},
               "LOYALTY_AUTH_FAILURE_LIMIT": "1000000/minute"}


def empty_tables():
    tables = [table.name for table in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        else:
            # Twice: the first pass's deletes write the report figures' rows (their triggers,
            # migration 0020); the second finds nothing else to delete and clears those.
            for table in tables + [table for table in tables if table.startswith("report_")]:
                connection.exec_driver_sql(f"DELETE FROM {table}")


@pytest.fixture
def clean_database(app):
    """Empty tables with the default rules and tiers: autouse in the layers that have a database
    (tests/service, tests/api, tests/jobs and the top-level migration and soak tests); tests/unit
    has neither app nor database."""
    with app.app_context():
        fresh_programme()
    yield


def fresh_programme():
    """Empty tables, then what a new database has: the settings version, default rules and tiers."""
    empty_tables()
    settings_cache.forget()  # the rules, tiers and webhook subscribers this process keeps went with the tables
    settings_cache.seed_version()
    tokens.forget_secret()  # and the member tokens' secret kept in the database
    seed_rules()
    seed_tiers()
    db.session.remove()


@pytest.fixture(autouse=True, scope="session")
def dumps_checked_against_marshmallow():
    """Every answer the suite's requests dump goes through both the API schemas' own dump
    (schemas/common.Schema, a plan made once per schema) and marshmallow's, and they must agree, keys
    in the same order: the whole suite is the test that the faster dump changes no answer."""
    fast = schemas_common.Schema._serialize

    def checked(self, obj, *, many=False):
        ours = fast(self, obj, many=many)
        theirs = marshmallow.Schema._serialize(self, obj, many=many)
        assert ours == theirs, (type(self).__name__, ours, theirs)
        assert [list(one) for one in (ours if many else [ours]) if isinstance(one, dict)] == \
            [list(one) for one in (theirs if many else [theirs]) if isinstance(one, dict)], type(self).__name__
        return ours

    schemas_common.Schema._serialize = checked
    yield
    schemas_common.Schema._serialize = fast


PUBLIC_TEST_ADDRESS = "93.184.215.14"  # public, so allowed; never contacted: no test connects to it


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    """No test asks a DNS server (the network is closed): names under .example resolve to a public
    address no test connects to, localhost to 127.0.0.1, numeric hosts to themselves, and any other
    name does not resolve. A test that needs other answers patches socket.getaddrinfo itself."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's names
        name = host.lower().rstrip(".") if isinstance(host, str) else host
        if isinstance(name, str) and (name == "example" or name.endswith(".example")):
            host = PUBLIC_TEST_ADDRESS
        elif name == "localhost":
            host = "127.0.0.1"
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def ctx(app):
    """An application context for service tests."""
    with app.app_context():
        yield
        db.session.remove()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    """`runner.invoke(args=[...])` runs the `loyalty` command on the test app."""
    return CommandRunner(app)


class CommandRunner(FlaskCliRunner):
    def invoke(self, cli=None, args=None, **kwargs):
        return super().invoke(cli or main, args, **kwargs)


@pytest.fixture
def keys(app):
    """A plaintext key per role: admin, marketing, pos (store S1), pos_other (store S2), app."""
    with app.app_context():
        made = {
            "admin": auth.create_key("admin", "test admin")[1],
            "marketing": auth.create_key("marketing", "test marketing")[1],
            "pos": auth.create_key("pos", "till 1", store_id="S1")[1],
            "pos_other": auth.create_key("pos", "till 9", store_id="S2")[1],
            "app": auth.create_key("app", "member app")[1],
        }
        db.session.remove()
    return made


@pytest.fixture
def headers(keys):
    return {role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()}


@pytest.fixture
def api(client, headers):
    """A tiny client that speaks as a role: api.post("pos", "/purchases", json=...)."""
    return Api(client, headers)


class Api:
    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def _call(self, method, role, path, extra_headers=None, **kwargs):
        request_headers = dict(self.headers[role]) if role else {}
        request_headers.update(extra_headers or {})
        return getattr(self.client, method)("/api/v1" + path, headers=request_headers, **kwargs)

    def get(self, role, path, **kwargs):
        return self._call("get", role, path, **kwargs)

    def post(self, role, path, **kwargs):
        return self._call("post", role, path, **kwargs)

    def put(self, role, path, **kwargs):
        return self._call("put", role, path, **kwargs)

    def patch(self, role, path, **kwargs):
        return self._call("patch", role, path, **kwargs)

    def delete(self, role, path, **kwargs):
        return self._call("delete", role, path, **kwargs)


def verify_ledger():
    from loyalty.points.verify import broken_accounts

    return broken_accounts()


@pytest.fixture
def assert_ledger_ok(app):
    def check():
        with app.app_context():
            broken = verify_ledger()
            db.session.remove()
        assert broken == []
    return check


__all__ = ["sa"]
