"""End-to-end: the app served by werkzeug on 127.0.0.1 in a thread, against the test database,
driven by Playwright through Debian's Chromium (never `playwright install`: no downloads)."""
import os
import threading

import pytest
from argon2 import PasswordHasher, profiles
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from loyalty.staff import service as staff_service

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def every_test_starts_from_an_empty_database(clean_database):
    yield


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch):
    monkeypatch.setattr(staff_service, "HASHER", PasswordHasher.from_parameters(profiles.CHEAPEST))


@pytest.fixture(scope="session")
def server(app):
    """The base URL of the app, served in this process (threads share the test database)."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")


    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, server):
    context = chromium.new_context(base_url=server, locale="en-US", accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()
