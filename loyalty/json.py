"""JSON that keeps numbers exact: decimals in, decimals out, never a binary float.

Request bodies are read by `loads_request`, which also refuses what the database or the code behind
would choke on: invalid UTF-8, a NUL character or a lone surrogate in any string, a key given twice in
one object, nesting deeper than any body of ours, and numbers with absurdly many digits."""
import re
from decimal import Decimal

import simplejson
from flask.json.provider import JSONProvider

MAX_DEPTH = 32  # our deepest body (a purchase's items, an earning rule's activities) is 3 levels
MAX_NUMBER_DIGITS = 40  # digits before or after the point; every number we take has fewer than 20

_FORBIDDEN_CHARACTER = re.compile("[\x00\ud800-\udfff]")


class MalformedBody(ValueError):
    """A request body we refuse to read; the message says why, for a person."""


class DecimalJSONProvider(JSONProvider):
    """Numbers in request bodies parse as Decimal; Decimals render as JSON numbers (120.5)."""

    def dumps(self, obj, **kwargs):
        kwargs.setdefault("ensure_ascii", False)
        return simplejson.dumps(obj, use_decimal=True, default=json_default, **kwargs)

    def loads(self, s, **kwargs):
        return simplejson.loads(s, use_decimal=True, **kwargs)


def loads_request(raw):
    """The document in a request body (bytes), or MalformedBody saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedBody(f"The body is not valid JSON: it is not UTF-8 (at byte {error.start}); "
                            "send JSON encoded as UTF-8.") from None
    try:
        document = simplejson.loads(text, use_decimal=True, object_pairs_hook=_object_without_duplicate_keys)
    except MalformedBody:
        raise
    except RecursionError:  # the scanner recurses: far deeper than MAX_DEPTH, stop at Python's limit
        raise MalformedBody(_too_deep()) from None
    except simplejson.JSONDecodeError as error:
        raise MalformedBody(f"The body is not valid JSON ({error}); send a JSON object with the documented fields.") from None
    except ValueError:  # an integer of more than 4 300 digits (Python's own limit)
        raise MalformedBody(f"The body has a number with more digits than any field takes "
                            f"(at most {MAX_NUMBER_DIGITS} before and after the point).") from None
    _check_values(document)
    return document


def _object_without_duplicate_keys(pairs):
    document = {}
    for key, value in pairs:
        if key in document:
            raise MalformedBody(f"The body gives the key {key!r} twice in one object; send each key once.")
        document[key] = value
    return document


def _check_values(document):
    """Walk the document (without recursion): depth, strings and keys, numbers."""
    stack = [(document, "", 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise MalformedBody(_too_deep())
            for key, item in value.items():
                _check_string(key, f"{where}.{key}" if where else key, is_key=True)
                stack.append((item, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                raise MalformedBody(_too_deep())
            stack.extend((item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value))
        elif isinstance(value, str):
            _check_string(value, where)
        elif isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            _check_number(value, where)


def _check_string(value, where, is_key=False):
    found = _FORBIDDEN_CHARACTER.search(value)
    if found is None:
        return
    what = "a NUL character (\\u0000)" if found.group() == "\x00" else \
        f"a lone surrogate (\\u{ord(found.group()):04x}), which is not a character"
    raise MalformedBody(f"{_place(where, is_key)} has {what}; send text without it.")


def _check_number(value, where):
    if isinstance(value, int):
        too_big = abs(value) >= 10 ** MAX_NUMBER_DIGITS
    else:
        too_big = not value.is_finite() or (value != 0 and abs(value.adjusted()) >= MAX_NUMBER_DIGITS) \
            or len(value.as_tuple().digits) > MAX_NUMBER_DIGITS or value.as_tuple().exponent < -MAX_NUMBER_DIGITS
    if too_big:
        raise MalformedBody(f"{_place(where)} has a number with more digits than any field takes "
                            f"(at most {MAX_NUMBER_DIGITS} before and after the point).")


def _place(where, is_key=False):
    if is_key:
        return f"The body's key {where!r}"
    return f"The body's field {where!r}" if where else "The body"


def _too_deep():
    return f"The body is nested too deeply; no request needs more than {MAX_DEPTH} levels of objects and lists."


def json_default(value):
    """What neither JSON nor simplejson's decimals cover: times and dates, in ISO 8601."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["DecimalJSONProvider", "Decimal", "MalformedBody", "json_default", "loads_request"]
