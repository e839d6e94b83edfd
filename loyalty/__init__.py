"""The loyalty service: `create_app()` builds it as a list of register_* calls.

The `loyalty` command (loyalty/cli.py) builds its app with this factory; the app does not know the
command, so imports run one way: cli -> this package -> api -> services -> models."""
import logging
import os

from flask import Flask

import loyalty.models  # noqa: F401  every table, so Alembic and the app see one schema
from loyalty import api, console, ratelimits
from loyalty import config as config_module
from loyalty.api import docs_assets
from loyalty.database import configure_engine, end_read_only, render_migration_type
from loyalty.errors import register_error_handlers
from loyalty.extensions import db, migrate
from loyalty.json import DecimalJSONProvider


class LoyaltyApp(Flask):
    config_class = config_module.CountingConfig


def create_app(config=None):
    app = LoyaltyApp(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.json = DecimalJSONProvider(app)
    app.config.from_mapping(config_module.API_SETTINGS)
    app.config.from_mapping(config_module.from_environment(app.instance_path))
    if config:
        app.config.from_mapping(config)
    app.config["SQLALCHEMY_DATABASE_URI"] = config_module.normalise_database_url(
        app.config["SQLALCHEMY_DATABASE_URI"])
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = config_module.engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"], app.config["SQLALCHEMY_ENGINE_OPTIONS"])
    register_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    return app


def register_logging(app):
    logging.basicConfig(level=app.config["LOYALTY_LOG_LEVEL"],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def register_extensions(app):
    db.init_app(app)
    # Registered after Flask-SQLAlchemy's removal of the session, so it runs before it (Flask runs
    # teardown functions last registered first).
    app.teardown_appcontext(end_read_only)
    ratelimits.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, compare_type=True, render_as_batch=True,
                     render_item=render_migration_type)
    with app.app_context():
        configure_engine(db.engine)


def register_blueprints(app):
    api.register_blueprints(app)
    app.register_blueprint(docs_assets.blp)
    console.init_app(app)  # the marketing console at /console: its blueprint, CSRF, sessions, languages


MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")
