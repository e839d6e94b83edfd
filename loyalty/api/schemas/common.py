"""Fields for exact numbers, and the shapes shared by every resource group."""
from datetime import timezone
from decimal import Decimal, InvalidOperation

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

LIMIT = Decimal("1e13")  # points and money: far beyond any real amount, well within a BIGINT of cents
MAX_ID = 2**63 - 1  # ids are 64-bit; a larger one names nothing and must not reach the database


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
        number = _exact_decimal(value)
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
        number = _exact_decimal(value)
        if number < 0 or (number == 0 and not self.allow_zero):
            raise ValidationError("Must be greater than 0." if not self.allow_zero else "Must not be negative.")
        return number


def _exact_decimal(value):
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError('Must be a decimal number such as 120.5.') from None
    if not number.is_finite():
        raise ValidationError("Must be a finite number.")
    if abs(number) >= LIMIT:  # checked first: quantizing 1e30 to cents would overflow the context
        raise ValidationError("Must be less than 10 000 000 000 000.")
    if number.as_tuple().exponent < -2 and number != number.quantize(Decimal("0.01")):
        raise ValidationError("Must have at most 2 decimal places.")
    return number.quantize(Decimal("0.01"))


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
