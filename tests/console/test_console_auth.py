"""Signing in and out: the one-time password, lockout, idle timeout, CSRF, the session cookie."""
from datetime import timedelta

import sqlalchemy as sa

from loyalty import clock
from loyalty.audit import AuditEntry
from loyalty.extensions import db
from loyalty.staff import service as staff_service
from loyalty.staff.models import StaffMember
from tests.console.conftest import PASSWORD, Browser, make_staff, text


def test_sign_in_page_has_the_labelled_fields_and_button_of_the_contract(browser):
    page = text(browser.get("/console/sign-in?lang=en"))
    assert '<label for="f-email">Email</label>' in page
    assert '<label for="f-password">Password</label>' in page
    assert '<button type="submit">Sign in</button>' in page
    assert 'name="csrf_token"' in page


def test_every_console_page_sends_a_stranger_to_sign_in(browser):
    response = browser.get("/console/members")
    assert response.status_code == 302
    assert response.location.startswith("/console/sign-in?next=/console/members")


def test_wrong_password_is_refused_with_a_sentence(app, browser):
    make_staff(app, "alice@example.com", "admin")
    response = browser.sign_in("alice@example.com", "not the password")
    assert response.status_code == 401
    assert "The email or the password is wrong." in text(response)
    assert browser.get("/console/").status_code == 302  # still signed out


def test_unknown_email_gets_the_same_answer_as_a_wrong_password(browser):
    response = browser.sign_in("nobody@example.com", "whatever")
    assert response.status_code == 401
    assert "The email or the password is wrong." in text(response)


def test_five_wrong_passwords_lock_the_account_for_15_minutes(app, client):
    make_staff(app, "alice@example.com", "admin")
    browser = Browser(client)
    for _ in range(4):
        assert browser.sign_in("alice@example.com", "wrong").status_code == 401
    fifth = browser.sign_in("alice@example.com", "wrong")
    assert "locked for 15 minutes" in text(fifth)
    # Locked: even the right password is refused, without being checked.
    locked = browser.sign_in("alice@example.com", PASSWORD)
    assert locked.status_code == 401 and "locked" in text(locked)
    with app.app_context():
        entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "staff.locked")).one()
        assert entry.actor == "staff:alice@example.com (admin)"
    with clock.frozen_at(clock.now() + timedelta(minutes=15, seconds=1)):
        assert browser.sign_in("alice@example.com", PASSWORD).status_code == 302


def test_a_right_password_resets_the_count_of_wrong_ones(app, browser):
    make_staff(app, "alice@example.com", "admin")
    for _ in range(4):
        browser.sign_in("alice@example.com", "wrong")
    assert browser.sign_in("alice@example.com").status_code == 302
    with app.app_context():
        assert db.session.scalars(sa.select(StaffMember)).one().failed_sign_ins == 0


def test_locked_message_in_chinese(app, browser):
    make_staff(app, "alice@example.com", "admin")
    for _ in range(5):
        browser.sign_in("alice@example.com", "wrong", lang="zh")
    assert "密码错误次数过多" in text(browser.sign_in("alice@example.com", PASSWORD, lang="zh"))


def test_first_sign_in_asks_for_a_new_password_before_anything_else(app, browser):
    with app.app_context():
        _, once = staff_service.create_staff("new@example.com", "marketing")
        db.session.remove()
    response = browser.sign_in("new@example.com", once)
    assert response.location == "/console/password"
    assert browser.get("/console/").location == "/console/password"
    assert "one-time password" in text(browser.get("/console/password"))
    # Too short, and the two differ: said next to each field; nothing changes.
    refused = browser.post("/console/password", {"current_password": once, "new_password": "short",
                                                 "repeat_password": "other"})
    assert refused.status_code == 422
    page = text(refused)
    assert "Use at least 10 characters." in page and "The two new passwords differ." in page
    wrong_current = browser.post("/console/password", {"current_password": "nope", "new_password": PASSWORD,
                                                       "repeat_password": PASSWORD})
    assert "The current password is wrong." in text(wrong_current)
    done = browser.post("/console/password", {"current_password": once, "new_password": PASSWORD,
                                              "repeat_password": PASSWORD})
    assert done.location == "/console/"
    assert browser.get("/console/").status_code == 200
    # The one-time password no longer works; the new one does.
    other = Browser(app.test_client())
    assert other.sign_in("new@example.com", once).status_code == 401
    assert other.sign_in("new@example.com", PASSWORD).status_code == 302


def test_sign_out_ends_the_session(admin):
    assert admin.get("/console/").status_code == 200
    assert admin.post("/console/sign-out").location == "/console/sign-in"
    assert admin.get("/console/").status_code == 302


def test_an_idle_session_ends_after_the_idle_timeout(app, admin):
    minutes = app.config["LOYALTY_CONSOLE_IDLE_MINUTES"]
    with clock.frozen_at(clock.now() + timedelta(minutes=minutes - 1)):
        assert admin.get("/console/").status_code == 200
    with clock.frozen_at(clock.now() + timedelta(minutes=2 * minutes + 1)):
        assert admin.get("/console/").status_code == 302


def test_disabling_or_resetting_an_account_ends_its_sessions_at_once(app, admin):
    with app.app_context():
        staff_service.reset_password("alice@example.com")
        db.session.remove()
    assert admin.get("/console/").status_code == 302
    make_staff(app, "bob@example.com", "marketing")
    bob = Browser(app.test_client())
    bob.sign_in("bob@example.com")
    with app.app_context():
        staff_service.disable_staff("bob@example.com")
        db.session.remove()
    assert bob.get("/console/").status_code == 302
    assert Browser(app.test_client()).sign_in("bob@example.com").status_code == 401


def test_a_form_without_the_csrf_token_is_refused_and_changes_nothing(admin):
    response = admin.post("/console/api-keys", {"role": "app", "name": "x"}, token=False)
    assert response.status_code == 400
    assert "open the page again" in text(response)
    assert "app key" not in text(admin.get("/console/api-keys"))


def test_sign_in_itself_needs_the_csrf_token(app, client):
    make_staff(app, "alice@example.com", "admin")
    response = client.post("/console/sign-in", data={"email": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 400


def test_the_json_api_needs_no_csrf_token(api):
    assert api.post("app", "/members", json={"name": "Wang Fang"}).status_code == 201


def test_session_cookie_is_httponly_and_samesite_lax_and_secure_over_https(app, client):
    make_staff(app, "alice@example.com", "admin")
    browser = Browser(client)
    cookie = browser.sign_in("alice@example.com").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure = Browser(app.test_client())
    token_page = secure.client.get("/console/sign-in", base_url="https://localhost")
    token = text(token_page).split('name="csrf_token" value="')[1].split('"')[0]
    response = secure.client.post("/console/sign-in", base_url="https://localhost",
                                  headers={"Referer": "https://localhost/console/sign-in"},
                                  data={"email": "alice@example.com", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    assert "Secure" in response.headers["Set-Cookie"]


def test_sign_in_never_redirects_to_another_site(app, browser):
    make_staff(app, "alice@example.com", "admin")
    token = browser.token()
    response = browser.client.post("/console/sign-in", data={"email": "alice@example.com", "password": PASSWORD,
                                                             "csrf_token": token, "next": "https://evil.example/"})
    assert response.location == "/console/"
    browser.post("/console/sign-out")
    token = browser.token()
    response = browser.client.post("/console/sign-in", data={"email": "alice@example.com", "password": PASSWORD,
                                                             "csrf_token": token, "next": "/console/tiers"})
    assert response.location == "/console/tiers"


def test_only_a_hash_of_the_password_is_stored(app):
    make_staff(app, "alice@example.com", "admin")
    with app.app_context():
        stored = db.session.scalars(sa.select(StaffMember)).one().password_hash
    assert PASSWORD not in stored and stored.startswith("$argon2id$")
