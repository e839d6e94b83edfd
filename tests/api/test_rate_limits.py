"""Rate limits (issue 18, API.md "Member tokens and rate limits"): per API key and member token
with each role's limit, failed authentications per client address, 429 rate_limited with
Retry-After and X-RateLimit-* headers, /healthz exempt; counters in memory or in Redis.

The suite's own app is not throttled (tests/conftest.py UNTHROTTLED): these tests build apps with
small limits on the same database, each with its own key prefix in Redis."""
import logging
import socket
import uuid

import pytest
from sqlalchemy import event as sa_event

from loyalty import create_app
from loyalty.extensions import db

REDIS = "redis://127.0.0.1:6379/0"
LIMITS = {"pos": "5/minute", "app": "4/minute", "member": "3/minute", "marketing": "2/minute", "admin": "6/minute"}
# A GET each role may send (and a member token for its own member).
READS = {"pos": "/tiers", "app": "/tiers", "marketing": "/tiers", "admin": "/tiers", "member": "/members/{member}"}


def redis_answers():
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


STORAGES = [
    pytest.param("memory://", id="memory"),
    pytest.param(REDIS, id="redis", marks=pytest.mark.skipif(
        not redis_answers(), reason="Redis is not answering on 127.0.0.1:6379 (.ci/run starts it)")),
]


@pytest.fixture
def make_app(app):
    """An app on the suite's database with real limits; its Redis keys under a prefix of its own."""
    made = []

    def make(storage="memory://", limits=None, failures="3/minute", proxies=0, prefix=None):
        limited = create_app({
            "TESTING": True, "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
            "LOYALTY_LOG_LEVEL": "WARNING", "LOYALTY_RATE_LIMITS": limits or LIMITS,
            "LOYALTY_AUTH_FAILURE_LIMIT": failures, "LOYALTY_RATE_LIMIT_STORAGE": storage,
            "LOYALTY_RATE_LIMIT_PREFIX": prefix or f"loyalty-test-{uuid.uuid4().hex}",
            "LOYALTY_TRUSTED_PROXIES": proxies})
        made.append(limited)
        return limited

    yield make
    for limited in made:
        with limited.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def member_token(api):
    member = api.post("app", "/members", json={"name": "Limited", "phone": "+8613800000201"}).json["id"]
    return member, api.post("app", f"/members/{member}/tokens", json={}).json["token"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_rate_limited(response):
    assert response.status_code == 429, response.get_json()
    body = response.get_json()
    assert set(body) == {"code", "status", "error", "message"}
    assert (body["code"], body["status"], body["error"]) == (429, "Too Many Requests", "rate_limited")
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Remaining"] == "0"
    return body["message"]


@pytest.mark.parametrize("storage", STORAGES)
def test_each_role_has_its_own_limit_per_key(make_app, keys, member_token, storage):
    limited = make_app(storage)
    client = limited.test_client()
    member, token = member_token
    credentials = {**{role: keys[role] for role in ("pos", "app", "marketing", "admin")}, "member": token}

    for role, credential in credentials.items():
        path = "/api/v1" + READS[role].format(member=member)
        allowed = int(LIMITS[role].split("/")[0])
        answers = [client.get(path, headers=bearer(credential)) for _ in range(allowed)]
        assert [a.status_code for a in answers] == [200] * allowed, role
        assert [a.headers["X-RateLimit-Limit"] for a in answers] == [str(allowed)] * allowed
        assert [int(a.headers["X-RateLimit-Remaining"]) for a in answers] == list(range(allowed - 1, -1, -1))
        assert all(int(a.headers["X-RateLimit-Reset"]) > 0 for a in answers)
        assert all("Retry-After" not in a.headers for a in answers)  # a 429's header only
        assert "this credential" in assert_rate_limited(client.get(path, headers=bearer(credential)))
    # Another key of a limited role has its own counter.
    assert client.get("/api/v1/tiers", headers=bearer(keys["pos_other"])).status_code == 200


@pytest.mark.parametrize("storage", STORAGES)
def test_failed_authentications_are_limited_per_client_address(make_app, keys, storage):
    limited = make_app(storage)
    client = limited.test_client()
    wrong = [bearer("lk_" + f"{n}" * 43) for n in range(5)]

    # A key this process knows is not held up by its neighbours' guesses.
    assert client.get("/api/v1/tiers", headers=bearer(keys["pos"])).status_code == 200
    guesses = [client.get("/api/v1/tiers", headers=headers) for headers in wrong[:3]]
    blocked = client.get("/api/v1/tiers", headers=wrong[3])
    no_key = client.get("/api/v1/tiers")
    forged = client.get("/api/v1/tiers", headers=bearer("x.y.z"))
    elsewhere = client.get("/api/v1/tiers", headers=wrong[4], environ_base={"REMOTE_ADDR": "10.1.2.3"})

    assert [g.status_code for g in guesses] == [401, 401, 401]
    assert [g.headers["X-RateLimit-Remaining"] for g in guesses] == ["2", "1", "0"]  # each failure counted
    assert "failed authentications" in assert_rate_limited(blocked)
    assert_rate_limited(no_key)
    assert_rate_limited(forged)
    assert elsewhere.status_code == 401
    assert client.get("/api/v1/tiers", headers=bearer(keys["pos"])).status_code == 200


def test_x_forwarded_for_counts_only_behind_trusted_proxies(make_app):
    wrong = bearer("lk_" + "w" * 43)
    direct = make_app(failures="2/minute").test_client()
    for n in range(2):
        assert direct.get("/api/v1/tiers", headers={**wrong, "X-Forwarded-For": f"203.0.113.{n}"}).status_code == 401
    # A client cannot escape its address by claiming another one.
    assert_rate_limited(direct.get("/api/v1/tiers", headers={**wrong, "X-Forwarded-For": "203.0.113.9"}))

    proxied = make_app(failures="2/minute", proxies=1).test_client()
    for _ in range(2):
        assert proxied.get("/api/v1/tiers", headers={**wrong, "X-Forwarded-For": "203.0.113.1"}).status_code == 401
    assert_rate_limited(proxied.get("/api/v1/tiers", headers={**wrong, "X-Forwarded-For": "203.0.113.1"}))
    # Behind the load balancer, another client (another X-Forwarded-For) has its own count.
    assert proxied.get("/api/v1/tiers", headers={**wrong, "X-Forwarded-For": "203.0.113.2"}).status_code == 401


def test_healthz_is_never_limited(make_app):
    client = make_app(failures="1/minute").test_client()
    client.get("/api/v1/tiers")
    answers = [client.get("/healthz") for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert all("X-RateLimit-Limit" not in a.headers for a in answers)


def test_redis_counters_are_shared_by_every_process(make_app, keys):
    if not redis_answers():
        pytest.skip("Redis is not answering on 127.0.0.1:6379 (.ci/run starts it)")
    prefix = f"loyalty-test-{uuid.uuid4().hex}"
    one = make_app(REDIS, prefix=prefix).test_client()
    two = make_app(REDIS, prefix=prefix).test_client()
    alone = make_app("memory://").test_client()

    answers = [client.get("/api/v1/tiers", headers=bearer(keys["marketing"])) for client in (one, two)]
    assert [a.status_code for a in answers] == [200, 200]  # marketing: 2/minute, across both
    assert_rate_limited(one.get("/api/v1/tiers", headers=bearer(keys["marketing"])))
    assert_rate_limited(two.get("/api/v1/tiers", headers=bearer(keys["marketing"])))
    assert alone.get("/api/v1/tiers", headers=bearer(keys["marketing"])).status_code == 200  # its own memory


def test_a_limit_reached_is_logged_once_a_minute_per_key_without_the_key(make_app, keys, member_token, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.handler.setLevel(logging.NOTSET)
    client = make_app().test_client()
    member, token = member_token
    for _ in range(8):
        client.get("/api/v1/tiers", headers=bearer(keys["marketing"]))
        client.get(f"/api/v1/members/{member}", headers=bearer(token))

    hits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rate limit")]
    assert len(hits) == 2, hits  # one per key, however many were refused
    assert any(f"member:{member}" in hit for hit in hits)
    texts = [r.getMessage() for r in caplog.records]
    assert [t for t in texts for secret in (keys["marketing"], keys["marketing"][8:], token, token.split(".")[2])
            if secret in t] == []


def test_a_broken_storage_lets_requests_through_rather_than_failing_them(make_app, keys):
    client = make_app("redis://127.0.0.1:1/0").test_client()  # nothing listens on port 1
    assert client.get("/api/v1/tiers", headers=bearer(keys["pos"])).status_code == 200


def test_a_refused_address_and_a_limited_key_cost_no_database_query(make_app, keys):
    limited = make_app(failures="2/minute")
    client = limited.test_client()
    wrong = bearer("lk_" + "g" * 43)
    for _ in range(2):
        assert client.get("/api/v1/tiers", headers=wrong).status_code == 401
    for _ in range(2):
        assert client.get("/api/v1/tiers", headers=bearer(keys["marketing"])).status_code == 200
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    with limited.app_context():
        engine = db.engine
    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        flood = [client.get("/api/v1/tiers", headers=wrong) for _ in range(5)]
        flood += [client.get("/api/v1/tiers", headers=bearer(keys["marketing"])) for _ in range(5)]
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
    assert [r.status_code for r in flood] == [429] * 10
    assert statements == []


def test_a_member_token_checked_lately_is_counted_without_verifying_its_signature_again(
        make_app, member_token, monkeypatch):
    """The limiter knows a token the app checked in full (signature, expiry, revocation) seconds ago by
    that check (issue 20: the signature was 34 µs of a member read); it is still counted per member."""
    from loyalty.members import tokens

    client = make_app().test_client()
    member, token = member_token
    path = f"/api/v1/members/{member}"
    verified = []
    real = tokens.signed_member
    monkeypatch.setattr(tokens, "signed_member", lambda t: verified.append(t) or real(t))

    first = client.get(path, headers=bearer(token))
    assert first.status_code == 200 and verified  # the first request verifies it
    verified.clear()
    answers = [client.get(path, headers=bearer(token)) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert verified == []
    remaining = [int(a.headers["X-RateLimit-Remaining"]) for a in (first, *answers)]
    assert remaining == [2, 1, 0]
    assert_rate_limited(client.get(path, headers=bearer(token)))
