"""The deployment's settings: one frozen, typed object built from the environment (config.py)."""
import dataclasses
from decimal import Decimal

import pytest

from loyalty.config import Settings, from_environment


def test_settings_come_from_the_environment_typed(monkeypatch, tmp_path):
    monkeypatch.setenv("LOYALTY_TIMEZONE", "Europe/Paris")
    monkeypatch.setenv("LOYALTY_TIER_MAX_DROP", "2")
    monkeypatch.setenv("LOYALTY_SEGMENT_HIGH_VALUE_SHARE", "0.05")
    monkeypatch.setenv("LOYALTY_WEBHOOK_ALLOW_PRIVATE", "yes")

    settings = Settings.from_config(from_environment(str(tmp_path)))

    assert settings.timezone == "Europe/Paris"
    assert settings.tier_max_drop == 2
    assert settings.segment_high_value_share == Decimal("0.05")
    assert settings.webhook_allow_private is True
    assert (settings.currency, settings.phone_region, settings.expiry_reminder_days) == ("CNY", "CN", 30)


def test_settings_cannot_be_changed_once_built(tmp_path):
    settings = Settings.from_config(from_environment(str(tmp_path)))

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.timezone = "UTC"  # type: ignore[misc]


def test_a_setting_that_is_not_a_number_stops_the_service_with_a_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("LOYALTY_WEBHOOK_MAX_ATTEMPTS", "eight")

    with pytest.raises(SystemExit, match="LOYALTY_WEBHOOK_MAX_ATTEMPTS='eight' is not a number"):
        from_environment(str(tmp_path))


def test_the_postgresql_pool_keeps_as_many_connections_as_the_setting_says(monkeypatch):
    from loyalty.config import engine_options
    monkeypatch.setenv("LOYALTY_DB_POOL_SIZE", "24")
    assert engine_options("postgresql+psycopg://h/db", {"echo": False}) == {"pool_size": 24, "max_overflow": 24,
                                                                              "echo": False}
    assert engine_options("sqlite:///x", {}) == {}


@pytest.mark.parametrize("raw, sentence", [("many", "is not a number"), ("0", "at least 1")])
def test_a_pool_size_that_is_not_a_positive_number_stops_the_service_with_a_sentence(monkeypatch, raw, sentence):
    from loyalty.config import engine_options
    monkeypatch.setenv("LOYALTY_DB_POOL_SIZE", raw)
    with pytest.raises(SystemExit, match=sentence):
        engine_options("postgresql+psycopg://h/db", {})
