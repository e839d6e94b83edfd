"""Settings, read from the environment. SQLite in the instance folder unless told otherwise."""
import json
import os
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Callable

from flask import Config, current_app
from limits import parse_many

from loyalty.members.phones import is_region


def from_environment(instance_path):
    """Return the settings of this deployment as a dict of Flask config keys."""
    database_url = os.environ.get("LOYALTY_DATABASE_URL") or (
        "sqlite:///" + os.path.join(instance_path, "loyalty.sqlite")
    )
    return {
        "SECRET_KEY": os.environ.get("LOYALTY_SECRET_KEY", "dev-only-not-secret"),
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(database_url),
        # A database error's message never carries the statement's values (phones, emails, names)
        # into a log.
        "SQLALCHEMY_ENGINE_OPTIONS": {"hide_parameters": True},
        "LOYALTY_CURRENCY": os.environ.get("LOYALTY_CURRENCY", "CNY").upper(),
        "LOYALTY_TIMEZONE": os.environ.get("LOYALTY_TIMEZONE", "Asia/Shanghai"),
        # Where phone numbers written without a country code are (ISO 3166 code): loyalty/members/phones.py.
        "LOYALTY_PHONE_REGION": _phone_region(os.environ.get("LOYALTY_PHONE_REGION") or "CN"),
        "LOYALTY_LOG_LEVEL": os.environ.get("LOYALTY_LOG_LEVEL", "INFO"),
        # Where a referral link points when no campaign names its own link template.
        "LOYALTY_REFERRAL_LINK": os.environ.get("LOYALTY_REFERRAL_LINK", "https://shop.example/join?ref={code}"),
        # Cron times (deployment time zone) that replace a job's default, as JSON:
        # {"points.expire": "0 1 * * *"}.
        "LOYALTY_JOB_SCHEDULES": json.loads(os.environ.get("LOYALTY_JOB_SCHEDULES") or "{}"),
        # The jobs' thresholds (days, shares, amounts): see each domain's jobs.py (points/, segments/, members/).
        **{name: _number(name, default) for name, default in JOB_SETTINGS.items()},
        # How far back a till that was offline may date a purchase it uploads (POST /purchases/batch).
        "LOYALTY_OFFLINE_MAX_DAYS": _number("LOYALTY_OFFLINE_MAX_DAYS", 30),
        # Tiers: the qualification window, how long a reached tier is protected from downgrades,
        # and how many tiers one nightly recompute may take a member down.
        "LOYALTY_TIER_WINDOW_MONTHS": int(os.environ.get("LOYALTY_TIER_WINDOW_MONTHS", "12")),
        "LOYALTY_TIER_PROTECTION_MONTHS": int(os.environ.get("LOYALTY_TIER_PROTECTION_MONTHS", "12")),
        "LOYALTY_TIER_MAX_DROP": int(os.environ.get("LOYALTY_TIER_MAX_DROP", "1")),
        # The console signs a staff member out after this many minutes without a request.
        "LOYALTY_CONSOLE_IDLE_MINUTES": int(os.environ.get("LOYALTY_CONSOLE_IDLE_MINUTES", "30")),
        # Webhooks may go to loopback, private, link-local... addresses: for development and tests
        # only (a receiver on this machine); in production they reach public addresses only.
        "LOYALTY_WEBHOOK_ALLOW_PRIVATE": os.environ.get("LOYALTY_WEBHOOK_ALLOW_PRIVATE", "0").strip().lower()
        in ("1", "true", "yes", "on"),
        # Member tokens (loyalty/members/tokens.py): the HS256 secret (unset: one is generated once and
        # kept in the database, so every process shares it) and a token's default lifetime.
        "LOYALTY_MEMBER_TOKEN_SECRET": _token_secret(os.environ.get("LOYALTY_MEMBER_TOKEN_SECRET") or ""),
        "LOYALTY_MEMBER_TOKEN_SECONDS": _token_seconds(os.environ.get("LOYALTY_MEMBER_TOKEN_SECONDS") or "3600"),
        # Rate limits (loyalty/ratelimits.py): per role, per API key or member token; failed
        # authentications per client address; where the counters live; how many proxies in front
        # of the service may be believed about the client's address (X-Forwarded-For).
        "LOYALTY_RATE_LIMITS": rate_limits(os.environ.get("LOYALTY_RATE_LIMITS") or "{}"),
        "LOYALTY_AUTH_FAILURE_LIMIT": _limit("LOYALTY_AUTH_FAILURE_LIMIT",
                                             os.environ.get("LOYALTY_AUTH_FAILURE_LIMIT") or "20/minute"),
        "LOYALTY_RATE_LIMIT_STORAGE": _storage(os.environ.get("LOYALTY_RATE_LIMIT_STORAGE") or "memory://"),
        "LOYALTY_RATE_LIMIT_PREFIX": os.environ.get("LOYALTY_RATE_LIMIT_PREFIX") or "loyalty",
        "LOYALTY_TRUSTED_PROXIES": _proxies(os.environ.get("LOYALTY_TRUSTED_PROXIES") or "0"),
    }


def engine_options(url, options):
    """SQLAlchemy's engine options for this database: on PostgreSQL, a pool that keeps as many
    connections as a worker has threads (LOYALTY_DB_POOL_SIZE, 16: gunicorn's `--threads 8` with
    room to spare). SQLAlchemy's default keeps 5 and closes every connection above that when it is
    handed back, so with 8+ busy threads a request now and then waited for a new PostgreSQL backend
    to start (several ms, more on a busy machine)."""
    if not url.startswith("postgresql"):
        return options
    size = _number("LOYALTY_DB_POOL_SIZE", 16)
    if size < 1:
        raise SystemExit(f"LOYALTY_DB_POOL_SIZE={size}: give how many connections a process keeps, at least 1 "
                         "(at least gunicorn's --threads).")
    return {"pool_size": size, "max_overflow": size, **options}


# Requests per role (API.md): a deployment's LOYALTY_RATE_LIMITS replaces some or all of them.
DEFAULT_RATE_LIMITS = {"pos": "50/second", "app": "200/second", "member": "10/second",
                       "marketing": "20/second", "admin": "20/second"}
MAX_MEMBER_TOKEN_SECONDS = 30 * 24 * 3600
MIN_MEMBER_TOKEN_SECRET = 32  # characters: HS256 wants a key at least as long as its hash (RFC 7518)


def rate_limits(raw):
    """LOYALTY_RATE_LIMITS as JSON ({"member": "5/second"}) over the defaults; a role or a limit we
    cannot read stops the start with a sentence, rather than leaving a role unlimited."""
    try:
        given = json.loads(raw)
    except ValueError:
        given = None
    if not isinstance(given, dict):
        raise SystemExit(f"LOYALTY_RATE_LIMITS={raw!r} is not a JSON object; give one like "
                         '{"member": "10/second", "pos": "50/second"}.')
    unknown = sorted(set(given) - set(DEFAULT_RATE_LIMITS))
    if unknown:
        raise SystemExit(f"LOYALTY_RATE_LIMITS names unknown roles {unknown}; the roles are "
                         f"{', '.join(DEFAULT_RATE_LIMITS)}.")
    return {role: _limit(f"LOYALTY_RATE_LIMITS[{role!r}]", limit)
            for role, limit in {**DEFAULT_RATE_LIMITS, **given}.items()}


def _limit(name, raw):
    if not isinstance(raw, str):
        raise SystemExit(f"{name}={raw!r} is not a rate limit; write one like \"20/minute\" or \"10/second\".")
    try:
        parse_many(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a rate limit; write one like \"20/minute\" or "
                         "\"10/second;1000/hour\".") from None
    return raw


def _storage(raw):
    if not raw.startswith(("memory://", "redis://", "rediss://", "redis+unix://")):
        raise SystemExit(f"LOYALTY_RATE_LIMIT_STORAGE={raw!r}: give memory:// (one process) or "
                         "redis://host:6379/0 (shared by every process).")
    return raw


def _proxies(raw):
    if not raw.isascii() or not raw.isdigit() or int(raw) > 10:
        raise SystemExit(f"LOYALTY_TRUSTED_PROXIES={raw!r}: give how many proxies in front of the service "
                         "add X-Forwarded-For (0 when clients connect directly, 1 behind one load balancer).")
    return int(raw)


def _token_secret(raw):
    if raw and len(raw) < MIN_MEMBER_TOKEN_SECRET:
        raise SystemExit(f"LOYALTY_MEMBER_TOKEN_SECRET is {len(raw)} characters; give at least "
                         f"{MIN_MEMBER_TOKEN_SECRET} random ones (python3 -c 'import secrets; "
                         "print(secrets.token_urlsafe(48))'), or unset it to have one kept in the database.")
    return raw


def _token_seconds(raw):
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_MEMBER_TOKEN_SECONDS:
        raise SystemExit(f"LOYALTY_MEMBER_TOKEN_SECONDS={raw!r}: give a number of seconds from 1 to "
                         f"{MAX_MEMBER_TOKEN_SECONDS} (30 days).")
    return int(raw)


JOB_SETTINGS = {
    "LOYALTY_EXPIRY_REMINDER_DAYS": 30,
    "LOYALTY_BIRTHDAY_CATCH_UP_DAYS": 7,
    "LOYALTY_LIFECYCLE_NEW_DAYS": 90,
    "LOYALTY_LIFECYCLE_ACTIVE_DAYS": 30,
    "LOYALTY_LIFECYCLE_CHURN_DAYS": 90,
    "LOYALTY_SEGMENT_HIGH_VALUE_SHARE": "0.10",
    "LOYALTY_SEGMENT_AT_RISK_DAYS": 90,
    "LOYALTY_SEGMENT_POTENTIAL_MIN_PURCHASES": 4,
    "LOYALTY_SEGMENT_POTENTIAL_MAX_AVERAGE": "300.00",
    # Webhooks: tries before a delivery is dead, the first back-off (doubled after each failure,
    # at most 6 hours), how long to wait for an answer, deliveries per run.
    "LOYALTY_WEBHOOK_MAX_ATTEMPTS": 8,
    "LOYALTY_WEBHOOK_BACKOFF_SECONDS": 60,
    "LOYALTY_WEBHOOK_TIMEOUT_SECONDS": 10,
    "LOYALTY_WEBHOOK_BATCH": 200,
    # The settings a process keeps (rules, ladder, webhook subscribers: loyalty/settings_cache.py) are
    # dropped the moment any process changes them, through the settings version every request reads
    # with its key. This is only the safety net for a change made behind the service's back (psql).
    "LOYALTY_SETTINGS_CACHE_SECONDS": 300,
}


@dataclass(frozen=True)
class Settings:
    """This deployment's LOYALTY_* settings, typed and read-only: `settings().timezone` for
    LOYALTY_TIMEZONE. from_environment() puts them in the app's config (where Flask, tests and
    operators see them); settings() reads them back for the app in use."""

    currency: str
    timezone: str
    phone_region: str
    log_level: str
    referral_link: str
    job_schedules: dict[str, str]
    expiry_reminder_days: int
    birthday_catch_up_days: int
    lifecycle_new_days: int
    lifecycle_active_days: int
    lifecycle_churn_days: int
    segment_high_value_share: Decimal
    segment_at_risk_days: int
    segment_potential_min_purchases: int
    segment_potential_max_average: Decimal
    webhook_max_attempts: int
    webhook_backoff_seconds: int
    webhook_timeout_seconds: int
    webhook_batch: int
    settings_cache_seconds: int
    tier_window_months: int
    tier_protection_months: int
    tier_max_drop: int
    webhook_allow_private: bool
    console_idle_minutes: int
    member_token_secret: str
    member_token_seconds: int
    rate_limits: dict[str, str]
    auth_failure_limit: str
    rate_limit_storage: str
    rate_limit_prefix: str
    trusted_proxies: int
    offline_max_days: int

    @classmethod
    def from_config(cls, config) -> "Settings":
        return cls(**{name: convert(config[key]) for name, key, convert in _FIELDS})


def _decimal(value):
    return Decimal(str(value))


def _as_is(value):
    return value


_CONVERT: dict[object, Callable[[Any], Any]] = {int: int, bool: bool, Decimal: _decimal}
_FIELDS: list[tuple[str, str, Callable[[Any], Any]]] = [
    (f.name, "LOYALTY_" + f.name.upper(), _CONVERT.get(f.type, _as_is)) for f in fields(Settings)]


class CountingConfig(Config):
    """Flask's config, counting its changes: `settings()` runs on every write many times (17 per
    credit) and, with this, knows it is unchanged without comparing every value (issue 20)."""

    changes = 0

    def __setitem__(self, key: Any, value: Any) -> None:
        self.changes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self.changes += 1
        super().__delitem__(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.changes += 1
        super().update(*args, **kwargs)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self.changes += 1
        return super().setdefault(key, default)

    def pop(self, key: Any, *default: Any) -> Any:
        self.changes += 1
        return super().pop(key, *default)

    def popitem(self) -> Any:
        self.changes += 1
        return super().popitem()

    def clear(self) -> None:
        self.changes += 1
        super().clear()

    def __ior__(self, other: Any) -> "CountingConfig":  # type: ignore[misc]
        self.changes += 1
        super().update(other)
        return self


def settings() -> Settings:
    """The settings of the app in use, built again only when its config changed (a test may change
    it; a deployment does not). A CountingConfig (the app's) says so by its count of changes; another
    config by comparing every value."""
    config = current_app.config
    changes = getattr(config, "changes", None)
    cached = current_app.extensions.get("loyalty.settings")
    if cached is not None and changes is not None and cached[0] == changes:
        return cached[2]
    values = [config[key] for _, key, _ in _FIELDS]
    if cached is None or cached[1] != values:
        cached = (changes, values, Settings.from_config(config))
    current_app.extensions["loyalty.settings"] = (changes, cached[1], cached[2])
    return cached[2]


def _number(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw) if isinstance(default, int) else str(Decimal(raw))
    except (ValueError, ArithmeticError):
        raise SystemExit(f"{name}={raw!r} is not a number; unset it or give a number like {default}.") from None


def _phone_region(raw):
    region = raw.strip().upper()
    if not is_region(region):
        raise SystemExit(f"LOYALTY_PHONE_REGION={raw!r} is not a region phone numbers know; give a two-letter "
                         "country code like CN, HK or US.")
    return region


def normalise_database_url(url):
    """Let operators write postgresql:// and still get the psycopg 3 driver we ship with."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


# Flask-smorest and OpenAPI settings: fixed, not per deployment.
API_SETTINGS = {
    "API_TITLE": "Loyalty points and membership tiers",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/api/v1",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    # Swagger UI's files come from our own server (loyalty/api/docs_assets.py), never a CDN.
    "OPENAPI_SWAGGER_UI_URL": "/api/v1/docs/assets/",
    "API_SPEC_OPTIONS": {
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                           "description": "An API key, or a member token (role member: its own member only)."}
            }
        },
        "security": [{"bearerAuth": []}],
    },
    "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    "JSON_SORT_KEYS": False,
}
