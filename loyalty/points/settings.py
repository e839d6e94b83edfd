"""The earning rules in force: the one read model of that setting, kept a few seconds per process
(loyalty/settings_cache.py). Below the services, so any domain can read the rules without importing
the points use cases."""
from loyalty import settings_cache
from loyalty.extensions import db
from loyalty.points.models import EarningRulesRow
from loyalty.points.rules import EarningRules


def current_rules():
    """The earning rules in force (kept a few seconds per process: loyalty/settings_cache.py)."""
    return settings_cache.cached("earning_rules", _read_rules)


def _read_rules():
    row = db.session.get(EarningRulesRow, 1)
    return EarningRules() if row is None else EarningRules.from_document(row.settings)


settings_cache.watch(EarningRulesRow, "earning_rules")
