"""The HTTP API: one flask-smorest Blueprint per resource group under /api/v1 (loyalty/api/base.py
holds what they share)."""
from loyalty.api import (bulk_awards, health, holds, jobs, members, points, promotions, referrals, reports,
                         rewards, rules, tiers, webhooks)
from loyalty.api.base import IdConverter, api, refuse_malformed_input


def register_blueprints(app):
    app.url_map.converters["id"] = IdConverter
    app.before_request(refuse_malformed_input)
    # The largest request is a purchase of 500 items, well under 1 MiB; refuse more (413).
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    api.init_app(app)
    for module in (members, points, holds, rules, tiers, rewards, referrals, promotions, reports, jobs, webhooks,
                   bulk_awards):
        api.register_blueprint(module.blp, url_prefix="/api/v1")
    api.register_blueprint(health.blp)
