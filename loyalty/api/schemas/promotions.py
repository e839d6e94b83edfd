"""Promotions (API.md "Promotions"): every field checked with a sentence; the rules between fields
(ends after it starts, known tiers...) are the service's."""
from marshmallow import ValidationError, fields, validate, validates_schema

from loyalty.api.schemas.common import ListQuerySchema, MoneyField, PointsField, RecordId, Schema, Timestamp
from loyalty.api.schemas.points import STORE, BreakdownLineSchema, ItemSchema
from loyalty.promotions.rules import EFFECTS, MAX_MULTIPLIER, PERIODS, STACKING
from loyalty.promotions.service import STATUSES, status_of

MAX_CODES = 500  # stores, SKUs... in one scope list
MAX_PER_MEMBER = 1000
MAX_PRIORITY = 1_000_000
TIME = validate.Regexp(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", error="Must be a local time HH:MM, from 00:00 to 23:59.")
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]{1,2})?$"


class DecimalString(PointsField):
    """A positive decimal (at most 2 places) written as a string, "2" or "1.5"; a JSON number is
    accepted too. Effects keep their numbers as strings (API.md), never floats."""

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {}).update({"type": "string", "pattern": DECIMAL_PATTERN})
        super().__init__(**kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        number = super()._serialize(value, attr, obj, **kwargs)
        return None if number is None else str(number)


def _codes(max_length, description):
    return fields.List(fields.String(validate=validate.Length(min=1, max=max_length)),
                       validate=validate.Length(min=1, max=MAX_CODES, error=f"Give 1 to {MAX_CODES} values."),
                       metadata={"description": description})


class ScheduleSchema(Schema):
    days_of_week = fields.List(
        fields.Integer(strict=True, validate=validate.Range(
            min=1, max=7, error="Must be a day of the week from 1 (Monday) to 7 (Sunday).")),
        validate=validate.Length(min=1, max=7), metadata={"description": "1 = Monday ... 7 = Sunday"})
    from_ = fields.String(data_key="from", attribute="from", validate=TIME,
                          metadata={"description": "Local time the window opens, HH:MM (default 00:00)",
                                    "example": "16:00"})
    until = fields.String(validate=TIME, metadata={
        "description": "Local time the window closes, HH:MM, exclusive (default: midnight); earlier than "
                       "'from', the window crosses midnight and belongs to the day it opens", "example": "18:00"})

    @validates_schema
    def distinct_days(self, data, **kwargs):
        days = data.get("days_of_week") or []
        if len(days) != len(set(days)):
            raise ValidationError("Each day may appear once.", field_name="days_of_week")


class ScopeSchema(Schema):
    stores = _codes(40, "Store ids")
    channels = _codes(30, "Purchase channels (store, online, mini_program...); compared case-insensitively")
    tiers = _codes(20, "Tier codes")
    tags = _codes(40, "Member tags: a member with any of them")
    categories = _codes(64, "Item categories: only matching items' amount counts")
    skus = _codes(64, "Item SKUs: only matching items' amount counts")
    min_amount = MoneyField(metadata={"description": "The qualifying amount must be at least this"})
    first_purchase_only = fields.Boolean()


class EffectSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(
        EFFECTS, error="Unknown effect; must be one of: multiplier, bonus, per_amount."))
    value = DecimalString(metadata={"description": f"multiplier: more than 1, at most {MAX_MULTIPLIER} "
                                                   "(2 gives the base points once more)", "example": "2"})
    points = DecimalString(metadata={
        "description": "bonus: points per purchase; per_amount: points per `per`", "example": "50"})
    per = MoneyField(metadata={"description": "per_amount: the amount that earns `points`", "example": "100.00"})

    @validates_schema
    def fields_of_the_type(self, data, **kwargs):
        kind = data.get("type")
        needed = {"multiplier": {"value"}, "bonus": {"points"}, "per_amount": {"points", "per"}}.get(kind)
        if needed is None:
            return
        errors = {name: [f"Required for a {kind} effect."] for name in sorted(needed - set(data))}
        errors.update({name: [f"Not part of a {kind} effect."] for name in sorted(set(data) - needed - {"type"})})
        value = data.get("value")
        if kind == "multiplier" and value is not None and not (1 < value <= MAX_MULTIPLIER):
            errors["value"] = [f"A multiplier must be more than 1 and at most {MAX_MULTIPLIER}."]
        if errors:
            raise ValidationError(errors)


class LimitsSchema(Schema):
    per_member = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_PER_MEMBER), metadata={
        "description": "Purchases per member per period that get the promotion"})
    per_member_period = fields.String(validate=validate.OneOf(PERIODS), metadata={
        "description": "day, week, month (local) or promotion (its whole run; the default)"})
    budget_points = PointsField(metadata={"description": "The most points the promotion gives in all"})


class PromotionFieldsSchema(Schema):
    """The fields a PATCH may change (any of them)."""

    name = fields.String(validate=validate.Length(min=1, max=100))
    status = fields.String(validate=validate.OneOf(("draft", "active"), error="Must be draft or active; stop a "
                                                   "promotion with POST /promotions/{{id}}/stop."))
    starts_at = Timestamp()
    ends_at = Timestamp(allow_none=True)
    schedule = fields.Nested(ScheduleSchema, allow_none=True)
    scope = fields.Nested(ScopeSchema, allow_none=True)
    effect = fields.Nested(EffectSchema)
    limits = fields.Nested(LimitsSchema, allow_none=True)
    stacking = fields.String(validate=validate.OneOf(STACKING), metadata={
        "description": "stack: adds up with others; exclusive: the best exclusive one applies alone"})
    priority = fields.Integer(strict=True, validate=validate.Range(min=-MAX_PRIORITY, max=MAX_PRIORITY))


class PromotionCreateSchema(PromotionFieldsSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    status = fields.String(validate=validate.OneOf(("draft", "active"), error="Must be draft or active."),
                           metadata={"description": "Default draft: a draft applies to no purchase"})
    starts_at = Timestamp(required=True)
    effect = fields.Nested(EffectSchema, required=True)


class PromotionSchema(PromotionFieldsSchema):
    id = fields.Integer()
    status = fields.Method("get_status", metadata={"enum": list(STATUSES)})  # type: ignore[assignment]  # read: ended is derived
    budget_used = PointsField()
    created_at = Timestamp()
    updated_at = Timestamp()
    stopped_at = Timestamp(allow_none=True)

    def get_status(self, promotion):
        return status_of(promotion)


class PromotionListSchema(Schema):
    items = fields.List(fields.Nested(PromotionSchema))
    next_cursor = fields.String(allow_none=True)


class PromotionListQuerySchema(ListQuerySchema):
    status = fields.String(validate=validate.OneOf(STATUSES))


class PromotionStatsSchema(Schema):
    promotion_id = fields.Integer()
    purchases = fields.Integer(metadata={"description": "Purchases the promotion gave points to"})
    members = fields.Integer()
    points_granted = PointsField(metadata={"description": "Points given, including those refunds took back"})
    points_clawed_back = PointsField(metadata={"description": "Of those, points refunds took back"})
    qualifying_spend = MoneyField()
    budget_points = PointsField(allow_none=True)
    budget_left = PointsField(allow_none=True)


class SimulateSchema(Schema):
    member_id = RecordId(metadata={"description": "Without it: a guest of the lowest tier, on a first purchase"})
    store_id = fields.String(validate=STORE, metadata={"description": "A POS key's own store (the default)"})
    amount = MoneyField(required=True)
    items = fields.List(fields.Nested(ItemSchema), validate=validate.Length(max=500))
    channel = fields.String(validate=validate.Length(min=1, max=30), metadata={"description": "Default store"})
    at = Timestamp(metadata={"description": "When the purchase would happen (default now)"})
    include_drafts = fields.Boolean(load_default=False, metadata={"description": "Marketing and admin only"})


class SimulateResultSchema(Schema):
    points = PointsField()
    breakdown = fields.List(fields.Nested(BreakdownLineSchema))
    at = Timestamp()
