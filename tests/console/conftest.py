"""The console through Flask's test client: a signed-in browser per role, forms sent with the
page's CSRF token (CSRF is on here, as in production)."""
import re

import pytest
from argon2 import PasswordHasher, profiles

from loyalty.extensions import db
from loyalty.staff import service as staff_service

PASSWORD = "a long enough password"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(autouse=True)
def every_test_starts_from_an_empty_database(clean_database):
    yield


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch):
    """argon2id still, at the cheapest cost: the tests check behaviour, not the hash's cost."""
    monkeypatch.setattr(staff_service, "HASHER", PasswordHasher.from_parameters(profiles.CHEAPEST))


def make_staff(app, email, role, name=None):
    """A staff account whose one-time password is already replaced by PASSWORD."""
    with app.app_context():
        staff, once = staff_service.create_staff(email, role, name=name)
        staff_service.change_password(staff.id, once, PASSWORD, PASSWORD)
        db.session.remove()


class Browser:
    """A test client that behaves like a browser on the console: it signs in through the form and
    sends each form with the CSRF token the console gave it."""

    def __init__(self, client):
        self.client = client

    def token(self, page="/console/sign-in"):
        found = TOKEN.search(self.client.get(page, follow_redirects=True).get_data(as_text=True))
        assert found, f"no CSRF token on {page}"
        return found.group(1)

    def sign_in(self, email, password=PASSWORD, lang="en"):
        token = self.token(f"/console/sign-in?lang={lang}")
        return self.client.post("/console/sign-in", data={"email": email, "password": password, "csrf_token": token})

    def get(self, path, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path, data=None, token=True, **kwargs):
        data = dict(data or {})
        if token:
            data["csrf_token"] = self.token("/console/members")
        return self.client.post(path, data=data, **kwargs)


@pytest.fixture
def browser(client):
    """Not signed in."""
    return Browser(client)


@pytest.fixture
def admin(app):
    make_staff(app, "alice@example.com", "admin", name="Alice")
    browser = Browser(app.test_client())
    assert browser.sign_in("alice@example.com").status_code == 302
    return browser


@pytest.fixture
def marketing(app):
    make_staff(app, "mark@example.com", "marketing", name="Mark")
    browser = Browser(app.test_client())
    assert browser.sign_in("mark@example.com").status_code == 302
    return browser


def text(response):
    return response.get_data(as_text=True)
