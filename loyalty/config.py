"""Settings, read from the environment. SQLite in the instance folder unless told otherwise."""
import json
import os
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Callable

from flask import current_app

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


def settings() -> Settings:
    """The settings of the app in use, built again only when its config changed (a test may change
    it; a deployment does not)."""
    config = current_app.config
    values = [config[key] for _, key, _ in _FIELDS]
    cached = current_app.extensions.get("loyalty.settings")
    if cached is None or cached[0] != values:
        cached = current_app.extensions["loyalty.settings"] = (values, Settings.from_config(config))
    return cached[1]


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
