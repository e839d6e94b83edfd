"""Fuzzing from the OpenAPI document (issue #8): schemathesis generates valid and invalid requests for
every operation (bounded, derandomised, so CI is repeatable) and sends them as admin, who may call
everything. Whatever it sends: no 5xx; every error is the JSON body of API.md; a refused request
changes nothing (every table's rows and the accounts' totals are as before).

Half the generated requests are then spoiled the way a hostile client would (issue 14): one string or
number of the body, the query or the path becomes a NUL, a lone surrogate (bodies only: it cannot be
sent as text elsewhere), or a number in non-ASCII digits or loose notation."""
import os

import pytest
import schemathesis
import simplejson
import sqlalchemy as sa
from flask.testing import EnvironBuilder
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from loyalty.extensions import db
from tests import factories

EXAMPLES = int(os.environ.get("LOYALTY_FUZZ_EXAMPLES", "10"))  # per operation; raise it for a deeper run
STATUS_PHRASES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                  405: "Method Not Allowed", 409: "Conflict", 413: "Request Entity Too Large",
                  415: "Unsupported Media Type", 422: "Unprocessable Entity", 429: "Too Many Requests"}


def _schema():
    """The OpenAPI document, read from an app of its own (no database needed to describe the API);
    requests go to the test app through its test client. (Not schemathesis' lazy fixture loader,
    which does not work with pytest 9.)"""
    from loyalty import create_app

    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://", "LOYALTY_LOG_LEVEL": "WARNING"}))


schema = _schema()

# What a hostile client puts where text or a number goes.
NOT_ASCII_NUMBERS = ["１００", "١٠٠", "१०", "1_000", " 10.00 ", "+10", "1e3", "1.5e2", "0x10", "-0", "Ⅻ", "²"]
NUL = ["\x00", "a\x00", "\x00b"]
SURROGATES = ["\ud800", "x\udfff", "\udc00\ud800"]


def _hostile(values):
    return st.one_of(st.sampled_from(values), st.builds("{}{}{}".format, st.text(max_size=3),
                                                            st.sampled_from(values), st.text(max_size=3)))


def _places(value, path=()):
    """Where a string or a number sits in a generated value: paths into its dicts and lists."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _places(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _places(item, path + (index,))
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool) or hasattr(value, "is_finite"):
        yield path


def _replaced(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


def _spoil(values):
    def spoil(context, value):
        places = list(_places(value)) if value is not None else []
        if not places:
            return st.just(value)
        return st.one_of(st.just(value), st.builds(lambda where, new: _replaced(value, where, new),
                                                   st.sampled_from(places), _hostile(values)))
    return spoil


schema.hook("flatmap_body")(_spoil(NOT_ASCII_NUMBERS + NUL + SURROGATES))
schema.hook("flatmap_query")(_spoil(NOT_ASCII_NUMBERS + NUL))
schema.hook("flatmap_path_parameters")(_spoil(NOT_ASCII_NUMBERS + NUL))


@pytest.fixture
def world(app):
    """Something for generated ids to find: members 1 and 2 with points, a purchase, a reward."""
    from loyalty.rewards import service as rewards

    with app.app_context():
        first, second = factories.member(), factories.member()
        factories.purchase(first.id, "500.00", store_id="S1")
        factories.purchase(second.id, "80.00", store_id="S1")
        rewards.create_reward({"name": "Mug", "kind": "goods", "points_cost": factories.D(100), "stock": 5,
                               "voucher_valid_days": 30}, actor="fuzz")
        db.session.remove()


def fingerprint(app):
    """Every table's row count, and the accounts' and rewards' totals: one query."""
    with app.app_context():
        try:
            # Not idempotency_keys: a refusal decided on the state of things is kept for its key (API.md).
            tables = [table.name for table in db.metadata.sorted_tables if table.name != "idempotency_keys"]
            parts = [f"(SELECT COUNT(*) FROM {name})" for name in tables] + [
                "(SELECT COALESCE(SUM(available), 0) FROM accounts)", "(SELECT COALESCE(SUM(pending), 0) FROM accounts)",
                "(SELECT COALESCE(SUM(debt), 0) FROM accounts)", "(SELECT COALESCE(SUM(stock), 0) FROM rewards)",
                "(SELECT MAX(updated_at) FROM members)"]
            with db.engine.connect() as connection:
                values = connection.execute(sa.text("SELECT " + ", ".join(parts))).one()
            return dict(zip(tables + ["available", "pending", "debt", "stock", "members changed"], values))
        finally:
            db.session.remove()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_breaks_the_service_or_changes_anything_when_refused(case, app, headers, world, monkeypatch):
    # A lone surrogate travels as the escape \ud800, as any client's JSON encoder would send it.
    monkeypatch.setattr(EnvironBuilder, "json_dumps",
                        lambda self, obj, **kwargs: simplejson.dumps(obj, use_decimal=True, ensure_ascii=True))
    before = fingerprint(app)

    response = case.call(session=app.test_client(), headers={**(case.headers or {}), **headers["admin"]})

    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) >= {"code", "status", "error", "message"}, body
        assert body["code"] == response.status_code, body
        assert body["status"] == STATUS_PHRASES.get(response.status_code, body["status"]), body
        assert isinstance(body["error"], str) and body["error"], body
        assert isinstance(body["message"], str) and body["message"].endswith((".", "?", ")")), body
        assert fingerprint(app) == before, (case.method, case.path, response.status_code, body)

