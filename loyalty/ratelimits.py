"""Request rate limits (the `limits` library: its limits, its storages and their expiring counters,
a fixed window each), checked before any view runs.

Two limits, both application-wide (one counter across every route):

- per credential: each API key (by its hash) or member (by a member token's signature) has its
  role's limit from LOYALTY_RATE_LIMITS; a request without a credential we issued has none;
- per client address, failed authentications only (`401` answers): LOYALTY_AUTH_FAILURE_LIMIT.
  When spent, the address gets 429 before its next guess reaches the database; callers whose
  credential is known without the database are not held up by their neighbours' guesses.

Counters live in this process's memory by default and in Redis with LOYALTY_RATE_LIMIT_STORAGE
(every worker and host shares them). Behind proxies, LOYALTY_TRUSTED_PROXIES says how many
X-Forwarded-For entries to believe (werkzeug's ProxyFix); otherwise the peer's address counts.

Why `limits` itself and not Flask-Limiter (its Flask layer, used until issue 20): Flask-Limiter
works out, on every request, which of its decorated, blueprint, default and meta limits and
exemptions apply; that was 0.25 ms of a 1.2 ms member read (measured, in-process). Our limits are
two, fixed when the app is built, so the check here is a dictionary lookup and one counter: the
storage's own `incr` (what limits' FixedWindowRateLimiter.hit does), whose answer gives the
X-RateLimit-Remaining too, so an answer costs two storage calls (Redis round trips), not three.

A RateLimiter is made per app (app.extensions["loyalty.limiter"]): it holds its storage, and tests
build apps with different storages side by side.
"""
import logging
import threading
import time
from typing import Any, cast

from flask import Flask, Response, g, request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from werkzeug.middleware.proxy_fix import ProxyFix

from loyalty import auth
from loyalty.config import settings
from loyalty.errors import error_response

log = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/healthz"})
_NO_CREDENTIAL = ("", "")  # (bucket, role) of a credential not known without the database
CREDENTIAL, AUTH_FAILURES = "credential", "auth-failures"


def init_app(app: Flask) -> None:
    config = settings_of(app)
    if config.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.trusted_proxies)  # type: ignore[method-assign]
    limiter = RateLimiter(config.rate_limits, config.auth_failure_limit, config.rate_limit_storage,
                          config.rate_limit_prefix)
    app.extensions["loyalty.limiter"] = limiter
    app.before_request(limiter.before_request)
    app.after_request(limiter.after_request)


def settings_of(app: Flask) -> Any:
    with app.app_context():
        return settings()


class RateLimiter:
    """The two limits of one app, over one storage. Each request: the credential's bucket is counted
    (or, without a credential we know, the address's failed authentications are tested, and counted
    after a 401); every answer but /healthz's carries X-RateLimit-Limit, -Remaining and -Reset of the
    limit that applied, and a 429 carries Retry-After. A storage that fails (Redis away) lets the
    request through and is logged once a minute: never a 5xx."""

    def __init__(self, role_limits: dict[str, str], failure_limit: str, storage_uri: str, prefix: str):
        # Stacked limits ("10/second;1000/hour") are checked shortest window first.
        self.role_limits = {role: sorted(parse_many(value)) for role, value in role_limits.items()}
        self.failure_limits = sorted(parse_many(failure_limit))
        # A synchronous storage: config._storage accepts memory:// and redis:// URIs only.
        self.storage = cast(Storage, storage_from_string(_without_expiry_threads(storage_uri)))
        self.prefix = prefix
        self.breaches = _OncePerMinute()
        self.keys: dict[tuple[int, str, str], str] = {}

    def before_request(self) -> Response | None:
        current = request._get_current_object()  # type: ignore[attr-defined]  # the proxy looked up once
        endpoint = current.endpoint
        if endpoint is None or endpoint.rpartition(".")[2] == "static" or current.path in EXEMPT_PATHS:
            return None  # no such route (a 404, counted nowhere), a static file, the health check
        bucket, role = auth.rate_limit_identity(current.headers.get("Authorization")) or _NO_CREDENTIAL
        try:
            if bucket:
                return self._count(self.role_limits[role], bucket, CREDENTIAL)
            return self._test_failures()
        except Exception:  # noqa: BLE001 - the storage's own errors (Redis away) are many kinds
            self._storage_failed()
            return None

    def _count(self, limits: list[RateLimitItem], bucket: str, scope: str) -> Response | None:
        header = None
        for limit in limits:
            key = self._key(limit, bucket, scope)
            count = self.storage.incr(key, limit.get_expiry())  # the fixed window: a counter that expires
            if count > limit.amount:
                return self._refuse(limit, key, bucket, scope)
            header = header or (limit, key, count)
        g.rate_limit = header
        return None

    def _key(self, limit: RateLimitItem, bucket: str, scope: str) -> str:
        """The storage key of a bucket's counter (limits' key_for, kept: it joins six strings per call)."""
        name = (id(limit), bucket, scope)
        key = self.keys.get(name)
        if key is None:
            if len(self.keys) > 100_000:
                self.keys.clear()
            key = self.keys[name] = limit.key_for(self.prefix, bucket, scope)
        return key

    def _test_failures(self) -> Response | None:
        address = _client_address()
        header = None
        for limit in self.failure_limits:
            key = self._key(limit, address, AUTH_FAILURES)
            count = self.storage.get(key)
            if count >= limit.amount:
                return self._refuse(limit, key, address, AUTH_FAILURES)
            header = header or (limit, key, count)
        g.rate_limit = header
        g.rate_limit_failures = address  # counted after the answer, if it is a 401
        return None

    def _refuse(self, limit: RateLimitItem, key: str, bucket: str, scope: str) -> Response:
        if self.breaches.due(bucket):
            # The bucket names a member id, a key's hash prefix or an address: never the credential.
            log.warning("rate limit %s reached by %s on %s %s (logged once a minute per key)",
                        limit, bucket, request.method, request.path)
        if scope == AUTH_FAILURES:
            message = (f"Too many failed authentications from this address ({limit}); check the key "
                       "and retry after the time in Retry-After.")
        else:
            message = (f"Too many requests with this credential ({limit}); retry after the time in "
                       "Retry-After, or ask for a higher LOYALTY_RATE_LIMITS.")
        g.rate_limit = (limit, key, limit.amount)
        g.rate_limit_refused = True
        return error_response(429, "rate_limited", message)

    def after_request(self, response: Response) -> Response:
        state = g._get_current_object()  # the proxy looked up once
        applied = state.get("rate_limit")
        if applied is None:
            return response
        limit, key, count = applied
        try:
            address = state.get("rate_limit_failures")
            if address is not None and response.status_code == 401:
                for each in self.failure_limits:
                    counted = self.storage.incr(self._key(each, address, AUTH_FAILURES), each.get_expiry())
                    count = counted if each is limit else count
            reset = int(self.storage.get_expiry(key))
        except Exception:  # noqa: BLE001 - as in before_request
            self._storage_failed()
            return response
        response.headers["X-RateLimit-Limit"] = str(limit.amount)
        response.headers["X-RateLimit-Remaining"] = str(max(0, limit.amount - count))
        response.headers["X-RateLimit-Reset"] = str(reset)
        if state.get("rate_limit_refused"):
            response.headers["Retry-After"] = str(max(1, reset - int(time.time())))
        return response

    def _storage_failed(self) -> None:
        if self.breaches.due("storage"):
            log.exception("rate limit storage unreachable: requests go on unlimited (logged once a minute)")


class _InlineExpiryMemoryStorage(MemoryStorage):
    """limits' memory storage, less its expiry thread: that one starts a threading.Timer of 10 ms on
    every hit when the last one has run out, so at more than 100 requests/s nearly every request
    started a thread (about 0.1 ms of CPU and up to several ms waiting for it to start on a busy
    machine: a third of a member read's time, issue 20). Expired counters are dropped here at most
    once a second, in the request that comes along; a counter's own expiry is checked on every read
    of it anyway (MemoryStorage.get), so the limits count the same."""

    STORAGE_SCHEME = ["loyalty-memory"]
    EXPIRE_EVERY_SECONDS = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any):
        self._expired_at = time.monotonic()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    # MemoryStorage calls self.__schedule_expiry() (name-mangled to this) from incr, decr, acquire_entry.
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now - self._expired_at >= self.EXPIRE_EVERY_SECONDS:
            self._expired_at = now
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def _without_expiry_threads(storage_uri: str) -> str:
    return "loyalty-memory://" + storage_uri[len("memory://"):] if storage_uri.startswith("memory://") \
        else storage_uri


def _client_address() -> str:
    return f"address:{request.remote_addr or 'unknown'}"


class _OncePerMinute:
    """One log line per bucket per minute however many requests are refused: a flood must not
    become a flood of log lines."""

    SECONDS = 60

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}

    def due(self, bucket: str) -> bool:
        now = time.monotonic()
        with self.lock:
            if now - self.last.get(bucket, -self.SECONDS) < self.SECONDS:
                return False
            if len(self.last) > 10_000:
                self.last.clear()
            self.last[bucket] = now
            return True

