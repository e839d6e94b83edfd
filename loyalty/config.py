"""Settings, read from the environment. SQLite in the instance folder unless told otherwise."""
import json
import os
from decimal import Decimal

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
        # Tiers: the qualification window, how long a reached tier is protected from downgrades,
        # and how many tiers one nightly recompute may take a member down.
        "LOYALTY_TIER_WINDOW_MONTHS": int(os.environ.get("LOYALTY_TIER_WINDOW_MONTHS", "12")),
        "LOYALTY_TIER_PROTECTION_MONTHS": int(os.environ.get("LOYALTY_TIER_PROTECTION_MONTHS", "12")),
        "LOYALTY_TIER_MAX_DROP": int(os.environ.get("LOYALTY_TIER_MAX_DROP", "1")),
        # Webhooks may go to loopback, private, link-local... addresses: for development and tests
        # only (a receiver on this machine); in production they reach public addresses only.
        "LOYALTY_WEBHOOK_ALLOW_PRIVATE": os.environ.get("LOYALTY_WEBHOOK_ALLOW_PRIVATE", "0").strip().lower()
        in ("1", "true", "yes", "on"),
    }


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
    "LOYALTY_WEBHOOK_SUBSCRIBERS_CACHE_SECONDS": 5,
    # How long a process keeps the earning rules and the tier ladder it read (loyalty/settings_cache.py):
    # a change reaches the other processes within this time, the one that made it at once.
    "LOYALTY_SETTINGS_CACHE_SECONDS": 5,
}


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
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key."}
            }
        },
        "security": [{"bearerAuth": []}],
    },
    "SQLALCHEMY_TRACK_MODIFICATIONS": False,
    "JSON_SORT_KEYS": False,
}
