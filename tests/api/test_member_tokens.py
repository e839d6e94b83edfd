"""Member tokens (issue 18, API.md "Member tokens and rate limits"): issued by the member app's
backend, bound to one member, short-lived, revoked all at once in every process, never logged.
The role matrix with its member column is in test_security.py."""
import base64
import logging
from datetime import datetime, timedelta, timezone

import jwt
import pytest
import sqlalchemy as sa

from loyalty import clock, create_app
from loyalty.audit import AuditEntry
from loyalty.config import from_environment
from loyalty.extensions import db
from loyalty.members import tokens
from loyalty.members.models import Member, TokenSecret
from tests.conftest import UNTHROTTLED
from tests.service.test_concurrency import race

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=timezone.utc)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def register(api, name="Token Member", phone="+8613800000101", **fields):
    response = api.post("app", "/members", json={"name": name, "phone": phone, **fields})
    assert response.status_code == 201, response.json
    return response.json["id"]


def issue(api, member_id, role="app", **body):
    return api.post(role, f"/members/{member_id}/tokens", json=body)


def token_for(api, member_id, **body):
    response = issue(api, member_id, **body)
    assert response.status_code == 201, response.json
    return response.json["token"]


def assert_error(response, status, code):
    assert response.status_code == status, response.json
    assert response.json["error"] == code
    assert set(response.json) >= {"code", "status", "error", "message"}
    return response.json["message"]


# --- issuing ----------------------------------------------------------------------------------

def test_the_app_backend_issues_a_token_for_an_hour_by_default(api):
    member = register(api)
    with clock.frozen_at(T0):
        response = issue(api, member)

    assert response.status_code == 201
    assert set(response.json) == {"token", "member_id", "expires_at"}
    assert response.json["member_id"] == member
    assert response.json["expires_at"] == "2026-11-29T09:00:00Z"
    assert not response.json["token"].startswith("lk_")


def test_a_token_lives_at_most_30_days(api):
    member = register(api)
    with clock.frozen_at(T0):
        longest = issue(api, member, ttl_seconds=30 * 86400)
        too_long = issue(api, member, ttl_seconds=30 * 86400 + 1)
        none_at_all = issue(api, member, ttl_seconds=0)
        not_a_number = issue(api, member, ttl_seconds="１００")

    assert longest.status_code == 201
    assert longest.json["expires_at"] == "2026-12-29T08:00:00Z"
    assert list(assert_error(too_long, 422, "validation_error") and too_long.json["errors"]) == ["ttl_seconds"]
    assert "30 days" in too_long.json["errors"]["ttl_seconds"][0]
    assert_error(none_at_all, 422, "validation_error")
    assert_error(not_a_number, 422, "validation_error")


def test_only_the_app_and_admin_issue_and_revoke_tokens(api):
    member = register(api)
    token = token_for(api, member)
    assert issue(api, member, role="admin").status_code == 201
    for role in ("pos", "marketing"):
        assert_error(issue(api, member, role=role), 403, "forbidden")
        assert_error(api.delete(role, f"/members/{member}/tokens"), 403, "forbidden")
    # A member token cannot mint more of itself, nor revoke (the app signs members out).
    own = api.client.post(f"/api/v1/members/{member}/tokens", json={}, headers=bearer(token))
    assert "member token may not" in assert_error(own, 403, "forbidden")
    assert_error(issue(api, 999999), 404, "not_found")
    assert_error(api.delete("app", "/members/999999/tokens"), 404, "not_found")


# --- using --------------------------------------------------------------------------------------

def test_a_member_token_reads_and_changes_its_own_member(api):
    member = register(api, email="own@example.com")
    other = register(api, name="Someone Else", phone="+8613800000102")
    token = token_for(api, member)
    client = api.client

    assert client.get(f"/api/v1/members/{member}", headers=bearer(token)).json["id"] == member
    assert client.get(f"/api/v1/members/{member}/points", headers=bearer(token)).status_code == 200
    assert_error(client.get(f"/api/v1/members/{other}", headers=bearer(token)), 404, "not_found")
    assert_error(client.get("/api/v1/members/999999", headers=bearer(token)), 404, "not_found")
    assert_error(client.get("/api/v1/tiers", headers=bearer(token)), 403, "forbidden")
    assert_error(client.post("/api/v1/purchases", headers=bearer(token), json={"member_id": member,
                 "store_id": "S1", "receipt_no": "R1", "amount": "10.00"}), 403, "forbidden")
    # The catalog is always for itself: without member_id too, and another's id is not found.
    catalog = client.get("/api/v1/rewards", headers=bearer(token))
    assert catalog.status_code == 200
    assert_error(client.get(f"/api/v1/rewards?member_id={other}", headers=bearer(token)), 404, "not_found")


def test_a_member_changes_only_its_name_and_email_and_the_audit_log_names_it(app, api):
    member = register(api, email="before@example.com")
    token = token_for(api, member)
    client = api.client

    renamed = client.patch(f"/api/v1/members/{member}", headers=bearer(token),
                           json={"name": "New Name", "email": "after@example.com"})
    phone = client.patch(f"/api/v1/members/{member}", headers=bearer(token), json={"phone": "+8613800000999"})
    birthday = client.patch(f"/api/v1/members/{member}", headers=bearer(token),
                            json={"name": "Sneaky", "birthday": "1990-01-01"})

    assert renamed.status_code == 200, renamed.json
    assert (renamed.json["name"], renamed.json["email"]) == ("New Name", "after@example.com")
    assert "only email and name" in assert_error(phone, 403, "forbidden")
    assert_error(birthday, 403, "forbidden")
    after = api.get("admin", f"/members/{member}").json
    assert (after["name"], after["phone"], after["birthday"]) == ("New Name", "+8613800000101", None)
    with app.app_context():
        entries = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "member.update")).all()
        assert [(e.actor, e.entity_id, e.after) for e in entries] == [
            (f"member {member} (member token)", str(member), {"fields": ["email", "name"]})]
        db.session.remove()


def test_a_member_redeems_and_cancels_its_own_and_the_audit_log_names_it(app, api):
    member = register(api)
    other = register(api, name="Other", phone="+8613800000102")
    for someone in (member, other):
        api.post("admin", f"/members/{someone}/adjustments", json={"points": 100, "reason": "test"})
    reward = api.post("marketing", "/rewards", json={"name": "Tea", "kind": "coupon", "points_cost": 10,
                                                     "voucher_valid_days": 30}).json["id"]
    theirs = api.post("app", f"/members/{other}/redemptions", json={"reward_id": reward}).json
    token = token_for(api, member)
    client = api.client

    redeemed = client.post(f"/api/v1/members/{member}/redemptions", headers=bearer(token), json={"reward_id": reward})
    code = redeemed.json["vouchers"][0]["code"]
    voucher = client.get(f"/api/v1/vouchers/{code}", headers=bearer(token))
    qr = client.get(f"/api/v1/vouchers/{code}/qr.png", headers=bearer(token))
    their_voucher = client.get(f"/api/v1/vouchers/{theirs['vouchers'][0]['code']}", headers=bearer(token))
    cancel_theirs = client.post(f"/api/v1/redemptions/{theirs['redemption_id']}/cancel", headers=bearer(token))
    cancelled = client.post(f"/api/v1/redemptions/{redeemed.json['redemption_id']}/cancel", headers=bearer(token))

    assert redeemed.status_code == 201, redeemed.json
    assert (voucher.status_code, qr.status_code, qr.mimetype) == (200, 200, "image/png")
    assert_error(their_voucher, 404, "not_found")
    assert_error(cancel_theirs, 404, "not_found")
    assert cancelled.status_code == 200, cancelled.json
    assert api.get("app", f"/members/{other}/points").json["available"] == 90  # theirs untouched
    with app.app_context():
        actions = db.session.execute(sa.select(AuditEntry.action, AuditEntry.actor)
                                     .where(AuditEntry.actor.like("% (member token)")).order_by(AuditEntry.id)).all()
        db.session.remove()
    assert [tuple(row) for row in actions] == [("redemption.create", f"member {member} (member token)"),
                                               ("redemption.cancel", f"member {member} (member token)")]


def test_a_members_idempotency_keys_are_its_own(api):
    member = register(api)
    api.post("admin", f"/members/{member}/adjustments", json={"points": 100, "reason": "test"})
    reward = api.post("marketing", "/rewards", json={"name": "Tea", "kind": "coupon", "points_cost": 10,
                                                     "voucher_valid_days": 30}).json["id"]
    token = token_for(api, member)
    body, key = {"reward_id": reward}, {"Idempotency-Key": "same-key"}

    by_app = api.post("app", f"/members/{member}/redemptions", json=body, extra_headers=key)
    by_member = api.client.post(f"/api/v1/members/{member}/redemptions", json=body, headers={**bearer(token), **key})
    again = api.client.post(f"/api/v1/members/{member}/redemptions", json=body, headers={**bearer(token), **key})

    assert (by_app.status_code, by_member.status_code, again.status_code) == (201, 201, 201)
    assert by_member.json["redemption_id"] != by_app.json["redemption_id"]
    assert again.json["redemption_id"] == by_member.json["redemption_id"]
    assert again.headers["Idempotent-Replayed"] == "true"


# --- expiry, forgery, revocation -------------------------------------------------------------

def test_an_expired_token_is_401_and_says_it_expired(api):
    member = register(api)
    with clock.frozen_at(T0):
        token = token_for(api, member, ttl_seconds=600)
    with clock.frozen_at(T0 + timedelta(seconds=599)):
        still = api.client.get(f"/api/v1/members/{member}", headers=bearer(token))
    with clock.frozen_at(T0 + timedelta(seconds=600)):
        expired = api.client.get(f"/api/v1/members/{member}", headers=bearer(token))

    assert still.status_code == 200
    message = assert_error(expired, 401, "unauthorized")
    assert "expired" in message and "2026-11-29T08:10:00Z" in message
    assert expired.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_forged_or_altered_token_is_401(app, api):
    member = register(api)
    other = register(api, name="Other", phone="+8613800000102")
    token = token_for(api, member)
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    # Another member's id in the payload, the original signature kept.
    altered_payload = jwt.encode({**claims, "sub": str(other)}, "k" * 40, algorithm="HS256").split(".")[1]
    forgeries = {
        "altered": f"{header}.{altered_payload}.{signature}",
        "another secret": jwt.encode(claims, "an-attacker-secret-" + "y" * 30, algorithm="HS256"),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "truncated signature": f"{header}.{payload}.{signature[:-4]}",
        "garbage": "a.b.c",
    }
    for label, forged in forgeries.items():
        response = api.client.get(f"/api/v1/members/{other}", headers=bearer(forged))
        assert "not valid" in assert_error(response, 401, "unauthorized"), label
    assert api.client.get(f"/api/v1/members/{member}", headers=bearer(token)).status_code == 200


def test_revocation_holds_at_once_in_another_process(app, api):
    """Two app instances on one database, as two gunicorn workers: a token issued by one works on
    the other (the secret kept in the database is shared), and a revocation made on one is refused
    by the other on its very next request."""
    other_process = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                                "LOYALTY_LOG_LEVEL": "WARNING", **UNTHROTTLED})
    try:
        there = other_process.test_client()
        member = register(api)
        first, second = token_for(api, member), token_for(api, member)
        assert there.get(f"/api/v1/members/{member}", headers=bearer(first)).status_code == 200

        revoked = api.delete("app", f"/members/{member}/tokens")
        after = [there.get(f"/api/v1/members/{member}", headers=bearer(t)) for t in (first, second)]
        here = api.client.get(f"/api/v1/members/{member}/points", headers=bearer(second))
        fresh = token_for(api, member)

        assert revoked.status_code == 204 and revoked.data == b""
        for response in after + [here]:
            assert "revoked" in assert_error(response, 401, "unauthorized")
        assert there.get(f"/api/v1/members/{member}", headers=bearer(fresh)).status_code == 200
        with app.app_context():
            actions = db.session.scalars(sa.select(AuditEntry.action).where(AuditEntry.entity_type == "member")
                                         .order_by(AuditEntry.id)).all()
            db.session.remove()
        assert actions.count("member_token.issue") == 3 and actions.count("member_token.revoke_all") == 1
    finally:
        with other_process.app_context():
            db.session.remove()
            db.engine.dispose()


def test_a_merged_members_tokens_stop_working(api):
    kept = register(api)
    merged = register(api, name="Duplicate", phone="+8613800000102")
    token = token_for(api, merged)
    assert api.post("admin", f"/members/{kept}/merge", json={"from_member_id": merged}).status_code == 200

    assert "closed" in assert_error(api.client.get(f"/api/v1/members/{merged}", headers=bearer(token)),
                                    401, "unauthorized")
    assert_error(issue(api, merged), 409, "conflict")


# --- the secret --------------------------------------------------------------------------------

def test_without_a_configured_secret_one_is_made_once_and_kept(app, api):
    member = register(api)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(TokenSecret)) == 0
        db.session.remove()
    # Checking a token, even a forged one, writes nothing.
    api.client.get(f"/api/v1/members/{member}", headers=bearer("x.y.z"))
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(TokenSecret)) == 0
        db.session.remove()
    token_for(api, member)
    token_for(api, member)
    with app.app_context():
        [secret] = db.session.scalars(sa.select(TokenSecret.secret)).all()
        db.session.remove()
    assert len(secret) >= 32
    assert jwt.decode(token_for(api, member), secret, algorithms=["HS256"])["sub"] == str(member)


def test_a_configured_secret_signs_and_nothing_is_stored(app, keys):
    secret = "a-deployment-secret-" + "z" * 40
    configured = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                             "LOYALTY_LOG_LEVEL": "WARNING", "LOYALTY_MEMBER_TOKEN_SECRET": secret, **UNTHROTTLED})
    try:
        client = configured.test_client()
        member = client.post("/api/v1/members", headers=bearer(keys["app"]), json={"name": "Configured"}).json["id"]
        token = client.post(f"/api/v1/members/{member}/tokens", headers=bearer(keys["app"]), json={}).json["token"]

        assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == str(member)
        assert client.get(f"/api/v1/members/{member}", headers=bearer(token)).status_code == 200
        # The suite's app (the stored secret) does not accept it: the secrets differ.
        assert app.test_client().get(f"/api/v1/members/{member}", headers=bearer(token)).status_code == 401
        with configured.app_context():
            assert db.session.scalar(sa.select(sa.func.count()).select_from(TokenSecret)) == 0
            db.session.remove()
    finally:
        with configured.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.mark.parametrize("name, value, words", [
    ("LOYALTY_MEMBER_TOKEN_SECRET", "short", "at least 32"),
    ("LOYALTY_MEMBER_TOKEN_SECONDS", "0", "from 1 to"),
    ("LOYALTY_MEMBER_TOKEN_SECONDS", "2592001", "30 days"),
])
def test_a_bad_token_setting_stops_the_start_with_a_sentence(monkeypatch, tmp_path, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        from_environment(str(tmp_path))
    assert words in str(stopped.value)


# --- never logged ------------------------------------------------------------------------------

def test_tokens_and_keys_never_reach_a_log_record(app, api, keys, caplog):
    """Everything at DEBUG, SQLAlchemy's statement echo included, through issuing, using, an
    expired, a forged and a revoked token, a 404, a 403 and a 422."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    caplog.handler.setLevel(logging.NOTSET)
    member = register(api)
    with clock.frozen_at(T0):
        expired = token_for(api, member, ttl_seconds=60)
    token = token_for(api, member)
    client = api.client
    client.get(f"/api/v1/members/{member}", headers=bearer(token))
    client.get("/api/v1/members/999999", headers=bearer(token))
    client.get("/api/v1/tiers", headers=bearer(token))
    client.patch(f"/api/v1/members/{member}", headers=bearer(token), json={"phone": "+8613800000999"})
    client.get(f"/api/v1/members/{member}", headers=bearer(expired))
    forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    client.get(f"/api/v1/members/{member}", headers=bearer(forged))
    api.delete("app", f"/members/{member}/tokens")
    client.get(f"/api/v1/members/{member}", headers=bearer(token))

    secrets_ = [token, expired, forged, *keys.values()]
    parts = {p for s in secrets_ for p in ([s, *s.split(".")[1:]] if s.count(".") == 2 else [s, s[8:]])}
    texts = [record.getMessage() for record in caplog.records]
    assert texts, "nothing was captured: the check below would prove nothing"
    assert [text[:100] for text in texts for part in parts if part in text] == []


# --- concurrent twins --------------------------------------------------------------------------

@pytest.mark.postgres_only
def test_concurrent_first_tokens_share_one_secret_and_concurrent_revocations_all_count(app, api, headers):
    """Real threads on PostgreSQL: the first tokens of a fresh database, issued at once, agree on
    one generated secret (the twin that loses the insert reads the winner's); revocations sent at
    once each add one to the epoch (an increment in SQL, no read-modify-write)."""
    member = register(api)
    with app.app_context():
        tokens.forget_secret()  # as a fresh process would
    results = race(app, [lambda client: client.post(f"/api/v1/members/{member}/tokens", headers=headers["app"],
                                                    json={}) for _ in range(8)])
    assert [r.status_code for r in results] == [201] * 8
    with app.app_context():
        [secret] = db.session.scalars(sa.select(TokenSecret.secret)).all()
        db.session.remove()
    assert {jwt.decode(r.get_json()["token"], secret, algorithms=["HS256"])["sub"] for r in results} == {str(member)}

    revocations = race(app, [lambda client: client.delete(f"/api/v1/members/{member}/tokens",
                                                          headers=headers["app"]) for _ in range(8)])
    assert [r.status_code for r in revocations] == [204] * 8
    with app.app_context():
        assert db.session.scalar(sa.select(Member.token_epoch).where(Member.id == member)) == 8
        db.session.remove()


def test_tokens_are_never_stored_not_even_as_an_idempotent_answer(app, api):
    member = register(api)
    key = {"Idempotency-Key": "token-1"}
    first = api.post("app", f"/members/{member}/tokens", json={}, extra_headers=key)
    again = api.post("app", f"/members/{member}/tokens", json={}, extra_headers=key)

    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json["token"] != again.json["token"]
    for response in (first, again):
        assert api.client.get(f"/api/v1/members/{member}", headers=bearer(response.json["token"])).status_code == 200
    with app.app_context():
        with db.engine.connect() as connection:
            stored = [str(value) for table in db.metadata.sorted_tables for row in connection.execute(sa.select(table))
                      for value in row if value is not None]
        db.session.remove()
    signatures = [r.json["token"].split(".")[2] for r in (first, again)]
    assert [value for value in stored for signature in signatures if signature in value] == []


def test_a_hostile_token_is_a_401_never_a_5xx(api):
    member = register(api)
    token_for(api, member)  # the secret exists: tokens are checked in full
    deep = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).rstrip(b"=").decode()
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    hostile = [f"{header}.{deep}.c2ln", f"{deep[:900]}.e30.c2ln", "x" * 5000 + ".a.b", "..", "é.é.é",
               f"{header}.bnVsbA.c2ln"]
    for token in hostile:
        response = api.client.get(f"/api/v1/members/{member}", headers=bearer(token))
        assert_error(response, 401, "unauthorized")
