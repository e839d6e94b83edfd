"""Request rate limits (Flask-Limiter over the `limits` library), checked before any view runs.

Two limits, both application-wide (one counter across every route):

- per credential: each API key (by its hash) or member (by a member token's signature) has its
  role's limit from LOYALTY_RATE_LIMITS; a request without a credential we issued has none;
- per client address, failed authentications only (`401` answers): LOYALTY_AUTH_FAILURE_LIMIT.
  When spent, the address gets 429 before its next guess reaches the database; callers whose
  credential is known without the database are not held up by their neighbours' guesses.

Counters live in this process's memory by default and in Redis with LOYALTY_RATE_LIMIT_STORAGE
(every worker and host shares them). Behind proxies, LOYALTY_TRUSTED_PROXIES says how many
X-Forwarded-For entries to believe (werkzeug's ProxyFix); otherwise the peer's address counts.

A Limiter is made per app (not in extensions.py): it holds its storage, and tests build apps with
different storages side by side.
"""
import logging
import threading
import time

from flask import Response, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded, RequestLimit
from limits.storage import MemoryStorage
from werkzeug.middleware.proxy_fix import ProxyFix

from loyalty import auth
from loyalty.config import settings
from loyalty.errors import error_response

log = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/healthz"})
_NO_CREDENTIAL = ("", "")


def init_app(app):
    trusted = settings_of(app).trusted_proxies
    if trusted:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted)
    # Registered before the limiter's own after_request, so it runs after it (Flask runs them in
    # reverse): Retry-After belongs to a 429 only.
    app.after_request(_retry_after_on_429_only)
    config = settings_of(app)
    limiter = Limiter(
        key_func=_client_address,
        application_limits=[
            ApplicationLimit(_credential_limit, key_function=_credential_bucket, scope="credential"),
            ApplicationLimit(lambda: settings().auth_failure_limit, key_function=_client_address,
                             scope="auth-failures", exempt_when=_known_credential,
                             deduct_when=lambda response: response.status_code == 401),
        ],
        storage_uri=_without_expiry_threads(config.rate_limit_storage),
        key_prefix=config.rate_limit_prefix,
        headers_enabled=True,
        strategy="fixed-window",
        swallow_errors=True,  # Redis away: requests go on unlimited (and it is logged), never a 500
        on_breach=_log_breach,
    )
    limiter.request_filter(lambda: request.path in EXEMPT_PATHS)
    limiter.init_app(app)
    # Flask-Limiter logs every refused request; ours logs once per key per minute (_log_breach).
    logging.getLogger("flask-limiter").setLevel(logging.WARNING)
    app.register_error_handler(RateLimitExceeded, handle_rate_limited)
    app.extensions["loyalty.limiter"] = limiter
    app.extensions["loyalty.rate_limit_breaches"] = _BreachLog()


class _InlineExpiryMemoryStorage(MemoryStorage):
    """limits' memory storage, less its expiry thread: that one starts a threading.Timer of 10 ms on
    every hit when the last one has run out, so at more than 100 requests/s nearly every request
    started a thread (about 0.1 ms of CPU and up to several ms waiting for it to start on a busy
    machine: a third of a member read's time, issue 20). Expired counters are dropped here at most
    once a second, in the request that comes along; a counter's own expiry is checked on every read
    of it anyway (MemoryStorage.get), so the limits count the same."""

    STORAGE_SCHEME = ["loyalty-memory"]
    EXPIRE_EVERY_SECONDS = 1.0

    def __init__(self, uri=None, wrap_exceptions=False, **options):
        self._expired_at = time.monotonic()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    # MemoryStorage calls self.__schedule_expiry() (name-mangled to this) from incr, decr, acquire_entry.
    def _MemoryStorage__schedule_expiry(self):
        now = time.monotonic()
        if now - self._expired_at >= self.EXPIRE_EVERY_SECONDS:
            self._expired_at = now
            self._MemoryStorage__expire_events()


def _without_expiry_threads(storage_uri):
    return "loyalty-memory://" + storage_uri[len("memory://"):] if storage_uri.startswith("memory://") \
        else storage_uri


def settings_of(app):
    with app.app_context():
        return settings()


def _identity():
    """(bucket, role) of this request's credential, worked out once per request."""
    if "rate_identity" not in g:
        g.rate_identity = auth.rate_limit_identity(request.headers.get("Authorization")) or _NO_CREDENTIAL
    return g.rate_identity


def _credential_limit():
    bucket, role = _identity()
    return settings().rate_limits[role] if bucket else ""  # no credential: no limit of this kind


def _credential_bucket():
    return _identity()[0]


def _known_credential():
    return auth.known_without_database(request.headers.get("Authorization"))


def _client_address():
    return f"address:{request.remote_addr or 'unknown'}"


def handle_rate_limited(error):
    limit = getattr(error, "limit", None)
    described = str(limit.limit) if limit is not None else "the limit"
    if limit is not None and limit.scope == "auth-failures":
        message = (f"Too many failed authentications from this address ({described}); check the key "
                   "and retry after the time in Retry-After.")
    else:
        message = (f"Too many requests with this credential ({described}); retry after the time in "
                   "Retry-After, or ask for a higher LOYALTY_RATE_LIMITS.")
    return error_response(429, "rate_limited", message)


def _retry_after_on_429_only(response: Response):
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


class _BreachLog:
    """One log line per bucket per minute however many requests are refused: a flood must not
    become a flood of log lines."""

    SECONDS = 60

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}

    def due(self, bucket):
        now = time.monotonic()
        with self.lock:
            if now - self.last.get(bucket, -self.SECONDS) < self.SECONDS:
                return False
            if len(self.last) > 10_000:
                self.last.clear()
            self.last[bucket] = now
            return True


def _log_breach(request_limit: RequestLimit):
    # The key's bucket names a member id or a key's hash prefix, never the key or token itself.
    bucket = str(request_limit.request_args[-2])  # [prefix,] bucket, scope
    if current_app.extensions["loyalty.rate_limit_breaches"].due(bucket):
        log.warning("rate limit %s reached by %s on %s %s (logged once a minute per key)",
                    request_limit.limit, bucket, request.method, request.path)
    return None


def storage_of(app):
    """The limiter's storage (tests reset it)."""
    return app.extensions["loyalty.limiter"].storage


