"""The migrations build the schema the models describe, from an empty database, and back."""
import os
import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from loyalty import create_app
from loyalty.extensions import db

TEST_DATABASE_URL = os.environ.get("LOYALTY_TEST_DATABASE_URL")


@pytest.fixture
def empty_database_url(tmp_path):
    """A database with nothing in it: a new SQLite file, or a new schema on PostgreSQL."""
    if not TEST_DATABASE_URL:
        yield "sqlite:///" + str(tmp_path / "empty.sqlite")
        return
    schema = f"migrations_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(TEST_DATABASE_URL)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in TEST_DATABASE_URL else "?"
    yield f"{TEST_DATABASE_URL}{separator}options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    engine.dispose()


def schema_differences(app):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def test_upgrade_of_an_empty_database_matches_the_models(empty_database_url):
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database_url, "LOYALTY_LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        assert schema_differences(app) == []
        db.engine.dispose()


def test_downgrade_to_nothing_and_upgrade_again(empty_database_url):
    app = create_app({"SQLALCHEMY_DATABASE_URI": empty_database_url, "LOYALTY_LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        downgrade(revision="base")
        tables = set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}
        assert tables == set()
        upgrade()
        assert schema_differences(app) == []
        db.engine.dispose()
