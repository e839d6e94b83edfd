"""settings() is built again only when the app's config changed (config.CountingConfig counts the
changes instead of settings() comparing every value on every call): every way of changing it counts."""
from loyalty import create_app
from loyalty.config import settings


def test_every_way_of_changing_the_config_is_seen_by_settings(tmp_path):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.sqlite"})
    with app.app_context():
        assert settings().currency == "CNY"
        first = settings()
        assert settings() is first  # unchanged: the same object, not built again
        app.config["LOYALTY_CURRENCY"] = "HKD"
        assert settings().currency == "HKD"
        app.config.update(LOYALTY_CURRENCY="USD")
        assert settings().currency == "USD"
        app.config |= {"LOYALTY_CURRENCY": "EUR"}
        assert settings().currency == "EUR"
        app.config.pop("LOYALTY_CURRENCY")
        app.config.setdefault("LOYALTY_CURRENCY", "JPY")
        assert settings().currency == "JPY"
        app.config.from_mapping({"LOYALTY_CURRENCY": "SGD"})
        assert settings().currency == "SGD"
