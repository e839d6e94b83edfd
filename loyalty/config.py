"""Settings, read from the environment. SQLite in the instance folder unless told otherwise."""
import os


def from_environment(instance_path):
    """Return the settings of this deployment as a dict of Flask config keys."""
    database_url = os.environ.get("LOYALTY_DATABASE_URL") or (
        "sqlite:///" + os.path.join(instance_path, "loyalty.sqlite")
    )
    return {
        "SECRET_KEY": os.environ.get("LOYALTY_SECRET_KEY", "dev-only-not-secret"),
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(database_url),
        "LOYALTY_CURRENCY": os.environ.get("LOYALTY_CURRENCY", "CNY").upper(),
        "LOYALTY_TIMEZONE": os.environ.get("LOYALTY_TIMEZONE", "Asia/Shanghai"),
        "LOYALTY_LOG_LEVEL": os.environ.get("LOYALTY_LOG_LEVEL", "INFO"),
        # Where a referral link points when no campaign names its own link template.
        "LOYALTY_REFERRAL_LINK": os.environ.get("LOYALTY_REFERRAL_LINK", "https://shop.example/join?ref={code}"),
        # Tiers: the qualification window, how long a reached tier is protected from downgrades,
        # and how many tiers one nightly recompute may take a member down.
        "LOYALTY_TIER_WINDOW_MONTHS": int(os.environ.get("LOYALTY_TIER_WINDOW_MONTHS", "12")),
        "LOYALTY_TIER_PROTECTION_MONTHS": int(os.environ.get("LOYALTY_TIER_PROTECTION_MONTHS", "12")),
        "LOYALTY_TIER_MAX_DROP": int(os.environ.get("LOYALTY_TIER_MAX_DROP", "1")),
    }


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
    "OPENAPI_SWAGGER_UI_URL": "https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
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
