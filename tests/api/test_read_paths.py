"""Member reads (GET /members/{id}, /points, /tier) are the hot path of the member app and the till:
one statement for the data, with the settings version; the API key, checked by this process a few
seconds ago, is not read again unless that version moved, so a key revoked anywhere is refused at
once (issue 20)."""
import threading
import time
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from loyalty import auth, create_app
from loyalty.extensions import db
from loyalty.members import tokens

READS = ["/members/{id}", "/members/{id}/points", "/members/{id}/tier"]


@pytest.fixture
def other_process(app):
    """Another worker on the same database, with caches of its own."""
    other = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                        "LOYALTY_LOG_LEVEL": "WARNING"})
    yield other
    with other.app_context():
        db.engine.dispose()


@pytest.fixture
def member_id(api):
    answer = api.post("app", "/members", json={"phone": "13800000077", "name": "Reader"})
    assert answer.status_code == 201, answer.get_json()
    member = answer.get_json()["id"]
    assert api.post("pos", "/purchases", json={"member_id": member, "receipt_no": "R1",
                                               "amount": "100.00"}).status_code == 201
    return member


def revoke_elsewhere(other, key_plaintext):
    """Revoke the key as another process would: its row changes (which bumps the settings version),
    and nothing in this process is told."""
    with other.app_context():
        key = db.session.scalar(sa.select(auth.ApiKey).where(auth.ApiKey.key_hash == auth.hash_key(key_plaintext)))
        key.revoked_at = datetime.now(timezone.utc)
        db.session.commit()
        db.session.remove()


class Statements:
    def __init__(self, engine):
        self.seen = []
        event.listen(engine, "before_cursor_execute", self._add)

    def _add(self, conn, cursor, statement, parameters, context, executemany):
        if statement not in ("BEGIN", "COMMIT", "ROLLBACK"):  # SQLite's own BEGIN (database.py)
            self.seen.append(statement)


@pytest.mark.parametrize("path", READS)
def test_a_read_with_a_key_checked_moments_ago_is_one_statement(app, api, member_id, path):
    url = path.format(id=member_id)
    first = api.get("app", url)
    assert first.status_code == 200
    with app.app_context():
        statements = Statements(db.engine)

    again = api.get("app", url)

    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert len(statements.seen) == 1, statements.seen


@pytest.mark.parametrize("path", READS)
def test_a_key_revoked_by_another_process_is_refused_by_the_next_read_here(api, keys, member_id,
                                                                            other_process, path):
    url = path.format(id=member_id)
    assert api.get("app", url).status_code == 200  # the key is now kept by this process

    revoke_elsewhere(other_process, keys["app"])

    refused = api.get("app", url)
    assert refused.status_code == 401
    assert "revoked" in refused.get_json()["message"]


def test_a_revoked_key_learns_it_is_revoked_before_learning_a_member_does_not_exist(api, keys, member_id,
                                                                                     other_process):
    assert api.get("app", f"/members/{member_id}/points").status_code == 200
    revoke_elsewhere(other_process, keys["app"])

    assert api.get("app", "/members/999999/points").status_code == 401


def test_a_settings_change_elsewhere_is_shown_by_the_next_read_here(app, api, headers, member_id, other_process):
    url = f"/members/{member_id}/tier"
    current = api.get("app", url).get_json()["tier"]
    document = next(t for t in api.get("app", "/tiers").get_json() if t["code"] == current["code"])
    renamed = other_process.test_client().put(
        f"/api/v1/tiers/{current['code']}", headers=headers["admin"],
        json={"name": "Renamed", "qualification": document["qualification"], "benefits": document["benefits"]})
    assert renamed.status_code == 200, renamed.get_json()
    with app.app_context():
        statements = Statements(db.engine)

    answer = api.get("app", url)

    assert answer.status_code == 200
    assert answer.get_json()["tier"]["name"] == "Renamed"
    assert any("api_keys" in s for s in statements.seen)  # the key was read again under the new version


def test_a_key_not_seen_for_a_while_is_read_again(api, member_id, monkeypatch):
    url = f"/members/{member_id}/points"
    assert api.get("app", url).status_code == 200
    monkeypatch.setattr(auth._KeyCache, "SECONDS", 0.0)

    assert api.get("app", url).status_code == 200


def test_a_key_cached_for_reads_does_not_let_a_role_do_more(api, member_id):
    assert api.get("pos", f"/members/{member_id}/points").status_code == 200

    assert api.get("pos", "/reports/overview").status_code == 403


def test_counting_requests_for_the_rate_limits_starts_no_thread(api, member_id, monkeypatch):
    started = []
    real_start = threading.Thread.start

    def start(thread):
        started.append(thread)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    for _ in range(30):
        assert api.get("app", f"/members/{member_id}/points").status_code == 200
        time.sleep(0.011)  # longer than the 10 ms timer limits' memory storage would start again

    assert started == []


# --- member tokens: the member app's reads -------------------------------------------------------

def token_for(api, member, ttl_seconds=None):
    body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
    answer = api.post("app", f"/members/{member}/tokens", json=body)
    assert answer.status_code == 201, answer.get_json()
    return {"Authorization": f"Bearer {answer.get_json()['token']}"}


def as_member(client, url, token):
    return client.get("/api/v1" + url, headers=token)


@pytest.mark.parametrize("path", READS)
def test_a_read_with_a_member_token_checked_moments_ago_is_one_statement(app, client, api, member_id, path):
    token, url = token_for(api, member_id), path.format(id=member_id)
    first = as_member(client, url, token)
    assert first.status_code == 200
    with app.app_context():
        statements = Statements(db.engine)

    again = as_member(client, url, token)

    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert len(statements.seen) == 1, statements.seen


def in_other_process(other, keys, method, url, **kwargs):
    answer = getattr(other.test_client(), method)("/api/v1" + url, headers={"Authorization": f"Bearer {keys['admin']}"},
                                                  **kwargs)
    assert answer.status_code < 300, answer.get_json()


@pytest.mark.parametrize("path", READS)
def test_member_tokens_revoked_by_another_process_are_refused_by_the_next_read_here(client, api, keys, member_id,
                                                                                     other_process, path):
    token, url = token_for(api, member_id), path.format(id=member_id)
    assert as_member(client, url, token).status_code == 200  # kept by this process now

    in_other_process(other_process, keys, "delete", f"/members/{member_id}/tokens")

    refused = as_member(client, url, token)
    assert refused.status_code == 401
    assert "revoked" in refused.get_json()["message"]


@pytest.mark.parametrize("change", ["merge", "erase"])
def test_a_member_closed_or_erased_by_another_process_loses_its_token_at_the_next_read_here(
        client, api, keys, member_id, other_process, change):
    token, url = token_for(api, member_id), f"/members/{member_id}/points"
    assert as_member(client, url, token).status_code == 200
    if change == "merge":
        survivor = api.post("app", "/members", json={"phone": "13800000078", "name": "Survivor"}).get_json()["id"]
        in_other_process(other_process, keys, "post", f"/members/{survivor}/merge", json={"from_member_id": member_id})
    else:
        in_other_process(other_process, keys, "post", f"/members/{member_id}/erase", json={"reason": "asked"})

    refused = as_member(client, url, token)
    assert refused.status_code == 401
    assert "closed" in refused.get_json()["message"]


def test_a_member_token_that_expires_while_kept_is_refused(client, api, member_id):
    token, url = token_for(api, member_id, ttl_seconds=1), f"/members/{member_id}/points"
    assert as_member(client, url, token).status_code == 200
    time.sleep(1.1)

    refused = as_member(client, url, token)
    assert refused.status_code == 401
    assert "expired" in refused.get_json()["message"]


def test_a_token_kept_by_one_app_is_not_trusted_by_another_with_another_secret(app, api, member_id):
    other = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                        "LOYALTY_LOG_LEVEL": "WARNING", "LOYALTY_MEMBER_TOKEN_SECRET": "another-secret-" + "q" * 30})
    try:
        token = token_for(api, member_id)
        assert api.client.get(f"/api/v1/members/{member_id}/points", headers=token).status_code == 200
        assert other.test_client().get(f"/api/v1/members/{member_id}/points", headers=token).status_code == 401
    finally:
        with other.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("credential", ["key", "token"])
def test_checking_a_credential_opens_no_transaction(api, keys, member_id, other_process, credential):
    """A process checking a key or a member token for the first time reads it outside any transaction
    (autocommit on PostgreSQL): a read-only transaction would end in a ROLLBACK, at which psycopg forgets
    the statements it prepared on that connection (issue 20: token reads cost PostgreSQL twice a key's). Cached settings loaded by a first request still
    read in a transaction: once per process and settings change, as the stored token secret is read once."""
    header = {"Authorization": f"Bearer {keys['app']}"} if credential == "key" else token_for(api, member_id)
    began = []

    def begin(connection):
        began.append(connection)

    with other_process.app_context():
        engine = db.engine
        tokens.signing_secret(make=False)  # read once per process
    for path in READS:  # its cached settings (the tier ladder) loaded, by another credential
        warm = other_process.test_client().get("/api/v1" + path.format(id=member_id),
                                               headers={"Authorization": f"Bearer {keys['admin']}"})
        assert warm.status_code == 200
    event.listen(engine, "begin", begin)
    try:
        for path in READS:
            answer = other_process.test_client().get("/api/v1" + path.format(id=member_id), headers=header)
            assert answer.status_code == 200, answer.get_json()
    finally:
        event.remove(engine, "begin", begin)
    assert began == []


@pytest.mark.postgres_only
def test_a_read_through_the_session_ends_in_commit_so_prepared_statements_survive(app, api, member_id):
    """database.end_read_only: a request that only read through the session commits its transaction;
    a ROLLBACK would make psycopg forget the connection's prepared statements (issue 20). One that
    wrote, or failed, still rolls back."""
    ended = []

    def commit(connection):
        ended.append("commit")

    def rollback(connection):
        ended.append("rollback")

    with app.app_context():
        engine = db.engine
    event.listen(engine, "commit", commit)
    event.listen(engine, "rollback", rollback)
    try:
        assert api.get("app", f"/members/{member_id}/points/history").status_code == 200
        read = list(ended)
        ended.clear()
        refused = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1",
                                                      "amount": "999.00"})  # R1 was recorded with 100.00
        assert refused.status_code == 409
    finally:
        event.remove(engine, "commit", commit)
        event.remove(engine, "rollback", rollback)
    assert read == ["commit"]
    assert "rollback" in ended and "commit" not in ended
