"""The marketing and admin console at /console: server-rendered pages over the same services as
the API (loyalty/console/base.py says how), in Chinese and English."""
import os

from flask import request
from flask.sessions import SecureCookieSessionInterface
from flask_babel import Babel

from loyalty.console import auth  # noqa: F401  the sign-in pages
from loyalty.console.base import blp, csrf, select_locale
from loyalty.console.views import admin, dashboard, members, programme, promotions, referrals, rewards  # noqa: F401
from loyalty.console.views import segments  # noqa: F401

TRANSLATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "translations")


class SessionCookie(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request came over HTTPS (behind a proxy,
    with werkzeug's ProxyFix) even if SESSION_COOKIE_SECURE is off. Only the console has a session:
    the JSON API authenticates with bearer credentials and never sets a cookie, so its requests get
    Flask's null session without reading or signing a cookie (about 5 % of a member read, issue 20)."""

    def open_session(self, app, request):
        if not request.path.startswith("/console"):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app):
        return bool(app.config["SESSION_COOKIE_SECURE"] or (request and request.is_secure))


def init_app(app):
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    # CSRF is checked by the console's own before_request (base.require_staff), so the JSON API,
    # which authenticates with bearer keys and sets no cookies, never needs a token.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # valid for the session's life
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = TRANSLATIONS
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "zh_CN")
    app.session_interface = SessionCookie()
    csrf.init_app(app)
    Babel(app, locale_selector=select_locale)
    app.register_blueprint(blp)
