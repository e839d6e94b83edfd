"""Fields for exact numbers, and the shapes shared by every resource group.

Numbers are ASCII digits only (API.md): a number written as a string is `-?[0-9]+(.[0-9]+)?` (an
integer without the fraction), so "１００", "١٠٠", "1_000", " 10.00 ", "+10", "1e3" and "0x10" are
422 wherever a number is read, in a body or a query. JSON numbers are read by JSON's grammar
(`1e2` is the number 100 there), exactly, as Decimals."""
import re
from datetime import timezone
from decimal import Decimal

import marshmallow
from marshmallow import INCLUDE, ValidationError, fields, validate
from marshmallow.utils import missing

# Upper bounds of what one request may carry. Far beyond any real till or campaign, so a typo or a
# hostile client cannot write a number the ledger's sums (balances, liabilities, reports over every
# member) could overflow on: 10 million members at the bounds stay far inside a NUMERIC(18, 2).
MAX_AMOUNT = Decimal("100000000.00")  # one purchase or refund: a hundred million is beyond any till
MAX_POINTS = Decimal("10000000")  # one payment, adjustment (either sign), cost or grant of points
MAX_ID = 2**63 - 1  # ids are 64-bit; a larger one names nothing and must not reach the database



class Schema(marshmallow.Schema):
    """marshmallow's Schema, dumping through a plan made once per schema instance: for each field, its
    key, where its value is (attribute path) and its own `_serialize`, called as marshmallow calls it.
    marshmallow's generic dump walk (a `serialize` call, an accessor, a key split per field) was a tenth
    of a POS credit's CPU and of a member read's (issue 20). Same output: the suite dumps every answer
    both ways and compares them (tests/conftest.py), tests/api/test_schema_dump.py the corners. Loading
    is marshmallow's."""

    def _serialize(self, obj, *, many=False):
        if many and obj is not None:
            return [self._serialize(item) for item in obj]
        plan = self.__dict__.get("_dump_plan")
        if plan is None:
            plan = self._dump_plan = _dump_plan(self)
        answer = {}
        for key, name, path, check, serialize, field in plan:
            if check:
                value = obj
                for step in path:
                    if hasattr(value, "__getitem__"):
                        try:
                            value = value[step]
                            continue
                        except (KeyError, IndexError, TypeError, AttributeError):
                            pass
                    value = getattr(value, step, missing)
                if value is missing:
                    default = field.dump_default
                    value = default() if callable(default) else default
                    if value is missing:
                        continue
            else:
                value = None
            value = serialize(value, name, obj)
            if value is not missing:  # a field may answer `missing` to be left out, as marshmallow does
                answer[key] = value
        return answer

    def _init_fields(self):
        # marshmallow builds the fields again for a copy with other `only`/`exclude` (a Nested given a
        # schema instance): a plan made before would still list the old ones.
        self.__dict__.pop("_dump_plan", None)
        super()._init_fields()


def _dump_plan(schema):
    """(key, field name, attribute path, whether the value is read, the field's _serialize, the field)
    for each of `schema`'s dump fields, in order: what marshmallow's Schema._serialize and
    Field.serialize do for each, decided once."""
    plan = []
    for name, field in schema.dump_fields.items():
        attribute = name if field.attribute is None else field.attribute
        plan.append((name if field.data_key is None else field.data_key, name, tuple(attribute.split(".")),
                     field._CHECK_ATTRIBUTE, field._serialize, field))
    return tuple(plan)


_ASCII_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_ASCII_INTEGER = re.compile(r"-?[0-9]+")


class PointsField(fields.Decimal):
    """Points: a JSON number with at most 2 decimal places, kept as a Decimal end to end."""

    def __init__(self, *, signed=False, **kwargs):
        kwargs.setdefault("metadata", {}).setdefault(
            "description", "Points, at most 2 decimal places" + (" (signed)" if signed else ""))
        super().__init__(places=None, as_string=False, allow_nan=False, **kwargs)
        self.signed = signed

    def _serialize(self, value, attr, obj, **kwargs):
        """120.5, 3, -0.5: the shortest exact form (never 1E+2)."""
        if value is None:
            return None
        value = Decimal(value)
        if value == 0:
            return Decimal(0)  # never "-0"
        return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
            raise ValidationError("Must be a number.")
        number = _exact_decimal(value, MAX_POINTS)
        if not self.signed and number <= 0:
            raise ValidationError("Must be greater than 0.")
        return number


class MoneyField(fields.String):
    """Money: a decimal string with at most 2 places ("199.00"); never a float."""

    def __init__(self, *, allow_zero=False, **kwargs):
        kwargs.setdefault("metadata", {}).setdefault("example", "199.00")
        super().__init__(**kwargs)
        self.allow_zero = allow_zero

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else f"{Decimal(value):.2f}"

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
            raise ValidationError('Must be a decimal string such as "199.00".')
        number = _exact_decimal(value, MAX_AMOUNT)
        if number < 0 or (number == 0 and not self.allow_zero):
            raise ValidationError("Must be greater than 0." if not self.allow_zero else "Must not be negative.")
        return number


def _exact_decimal(value, bound):
    """A Decimal of at most 2 places within ±bound, from a JSON number or an ASCII decimal string."""
    if isinstance(value, str):
        if not _ASCII_DECIMAL.fullmatch(value):
            raise ValidationError('Must be a decimal number such as 120.5, in ASCII digits.')
        number = Decimal(value)
    else:
        number = Decimal(value)
    if not number.is_finite():
        raise ValidationError("Must be a finite number.")
    if number > bound:  # checked first: quantizing 1e30 to cents would overflow the context
        raise ValidationError(f"Must be at most {_spaced(bound)}.")
    if number < -bound:
        raise ValidationError(f"Must be at least -{_spaced(bound)}.")
    if number.as_tuple().exponent < -2 and number != number.quantize(Decimal("0.01")):
        raise ValidationError("Must have at most 2 decimal places.")
    return abs(number).quantize(Decimal("0.01")) if number == 0 else number.quantize(Decimal("0.01"))


def _spaced(number):
    """10 000 000, 100 000 000.00: how API.md writes large numbers."""
    whole, _, fraction = f"{number:f}".partition(".")
    return f"{int(whole):,}".replace(",", " ") + (f".{fraction}" if fraction else "")


def _ascii_integer(field, value):
    """marshmallow's Integer reads whatever int() does ("１００", "1_000", " 1 ", "+1") and truncates
    1.5 to 1; every Integer field of every schema reads this instead: an int, an integral JSON
    number, or a string of ASCII digits, within 64 bits (more would overflow the database)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, Decimal) and value.is_finite():  # a JSON 3.0 (our parser reads no floats)
        if abs(value) > MAX_ID:
            raise OverflowError(value)
        number = int(value)
        if number != value:
            raise ValueError(value)
    elif isinstance(value, str) and _ASCII_INTEGER.fullmatch(value) and len(value) <= 20:
        number = int(value)
    else:
        raise ValueError(value)
    if abs(number) > MAX_ID:
        raise OverflowError(value)
    return number


fields.Integer._format_num = _ascii_integer  # type: ignore[method-assign]  # one rule for every schema, so no field can forget it
fields.Integer.default_error_messages = {**fields.Integer.default_error_messages,
                                         "invalid": "Not a valid integer: use ASCII digits.",
                                         "too_large": f"Must be at most {MAX_ID}."}


class Timestamp(fields.AwareDateTime):
    """ISO 8601 in UTC with a Z on the way out; any offset accepted on the way in."""

    def __init__(self, **kwargs):
        super().__init__(format="iso", default_timezone=None, **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def Identifier(**kwargs):
    """A client-chosen reference (receipt number, event id...): 1 to 64 printable characters."""
    return fields.String(validate=[validate.Length(min=1, max=64),
                                   validate.Regexp(r"^[\x21-\x7e]+$", error="Use printable characters without spaces.")],
                         **kwargs)


def RecordId(**kwargs):
    """The id of a record (member, purchase...) in a request body."""
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID), **kwargs)


class MoneyValueSchema(Schema):
    amount = MoneyField()
    currency = fields.String()


class ListQuerySchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String()


class ErrorSchema(Schema):
    """The body of every error (API.md); some errors add facts, such as the owner's `member_id`."""

    class Meta:
        unknown = INCLUDE  # documented as additionalProperties: member_id, available, needed...

    code = fields.Integer(required=True, metadata={"description": "The HTTP status code", "example": 422})
    status = fields.String(required=True, metadata={"description": "The HTTP status phrase",
                                                     "example": "Unprocessable Entity"})
    error = fields.String(required=True, metadata={
        "description": "What went wrong, for programs: validation_error, unauthorized, forbidden, not_found, "
                       "conflict, idempotency_conflict, insufficient_points, ...",
        "example": "validation_error"})
    message = fields.String(required=True, metadata={"description": "A sentence a person can act on"})
    errors = fields.Dict(keys=fields.String(), metadata={
        "description": "Only for field problems: each field with its messages",
        "example": {"amount": ["Must be greater than 0."]}})
