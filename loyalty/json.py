"""JSON that keeps numbers exact: decimals in, decimals out, never a binary float."""
from decimal import Decimal

import simplejson
from flask.json.provider import JSONProvider


class DecimalJSONProvider(JSONProvider):
    """Numbers in request bodies parse as Decimal; Decimals render as JSON numbers (120.5)."""

    def dumps(self, obj, **kwargs):
        kwargs.setdefault("ensure_ascii", False)
        return simplejson.dumps(obj, use_decimal=True, default=_default, **kwargs)

    def loads(self, s, **kwargs):
        return simplejson.loads(s, use_decimal=True, **kwargs)


def _default(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["DecimalJSONProvider", "Decimal"]
