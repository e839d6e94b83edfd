from marshmallow import ValidationError, fields, validate, validates_schema

from loyalty.api.schemas.common import (Identifier, MoneyField, MoneyValueSchema, PointsField, RecordId, Schema,
                                        Timestamp)
from loyalty.api.schemas.members import MemberSchema
from loyalty.points.batch import MAX_BATCH
from loyalty.points.rules import (CAP_PERIODS, EXPIRY_POLICIES, MAX_ACTIVITY_CAP, MAX_ACTIVITY_POINTS,
                                  MAX_EXCLUDED_CODES, MAX_EXPIRY_DAYS, MAX_PAYMENT_POINTS_PER_UNIT,
                                  MAX_PENDING_DAYS, MAX_POINTS_PER_UNIT, MIN_PAYMENT_POINTS_PER_UNIT)

STORE = validate.Length(min=1, max=40)


class MemberReference(Schema):
    """A POS names the member by id, or by the token it scanned from the member's card QR."""

    member_id = RecordId()
    card = fields.String(validate=validate.Length(min=1, max=64))

    @validates_schema
    def one_reference(self, data, **kwargs):
        if ("member_id" in data) == ("card" in data):
            raise ValidationError("Name the member by exactly one of member_id or card.")


class ItemSchema(Schema):
    sku = fields.String(required=True, validate=validate.Length(min=1, max=64))
    category = fields.String(validate=validate.Length(max=64))
    quantity = fields.Integer(required=True, validate=validate.Range(min=1))
    amount = MoneyField(required=True)


class PurchaseCreateSchema(MemberReference):
    store_id = fields.String(validate=STORE, metadata={"description": "The POS key's own store"})
    receipt_no = Identifier(required=True)
    amount = MoneyField(required=True)
    currency = fields.String(validate=validate.Length(equal=3))
    occurred_at = Timestamp()
    items = fields.List(fields.Nested(ItemSchema), validate=validate.Length(max=500))
    channel = fields.String(validate=validate.Length(min=1, max=30), metadata={
        "description": "Where the purchase was made: store, online, mini_program... (default store); "
                       "promotions may be limited to channels"})


class BreakdownLineSchema(Schema):
    source = fields.String(metadata={"enum": ["base", "tier", "promotion", "referral"]})
    promotion_id = fields.Integer(metadata={"description": "Promotion lines only"})
    name = fields.String()
    points = PointsField()


class PurchaseResultSchema(Schema):
    purchase_id = fields.Integer(attribute="record.id")
    receipt_no = fields.String(attribute="record.receipt_no")
    store_id = fields.String(attribute="record.store_id")
    amount = MoneyField(attribute="record.amount")
    currency = fields.String(attribute="record.currency")
    points_earned = PointsField(attribute="record.total_points",
                                metadata={"description": "The sum of the breakdown's lines"})
    breakdown = fields.List(fields.Nested(BreakdownLineSchema), attribute="record.lines")
    channel = fields.String(attribute="record.channel", allow_none=True)
    status = fields.Method("get_status", metadata={"enum": ["available", "pending"]})
    available_at = Timestamp(attribute="record.available_at")
    member = fields.Nested(MemberSchema)

    def get_status(self, outcome):
        lot = outcome.record.lot
        return "pending" if lot is not None and lot.status == "pending" else "available"


class RefundCreateSchema(Schema):
    refund_no = Identifier(required=True)
    amount = MoneyField(required=True)


class RefundResultSchema(Schema):
    refund_id = fields.Integer(attribute="record.id")
    purchase_id = fields.Integer(attribute="record.purchase_id")
    refund_no = fields.String(attribute="record.refund_no")
    amount = MoneyField(attribute="record.amount")
    points_reversed = PointsField(attribute="record.total_points",
                                  metadata={"description": "Base and promotion points taken back"})
    member = fields.Nested(MemberSchema)


class ActivityCreateSchema(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=30))
    event_id = Identifier(required=True)
    occurred_at = Timestamp()


class ActivityResultSchema(Schema):
    activity_id = fields.Integer(attribute="record.id")
    type = fields.String(attribute="record.type")
    event_id = fields.String(attribute="record.event_id")
    points_awarded = PointsField(attribute="record.points_awarded")
    capped = fields.Boolean(attribute="record.capped")
    member = fields.Nested(MemberSchema)


class AdjustmentCreateSchema(Schema):
    points = PointsField(required=True, signed=True)
    reason = fields.String(required=True, validate=validate.Length(min=3, max=150))


class ReferenceSchema(Schema):
    type = fields.String()
    id = fields.String()


class EntrySchema(Schema):
    id = fields.Integer()
    type = fields.String()
    points = PointsField(signed=True)
    balance_after = PointsField(signed=True)
    description = fields.String()
    reference = fields.Nested(ReferenceSchema, allow_none=True)
    created_at = Timestamp()
    expires_at = Timestamp(allow_none=True)


class EntryPageSchema(Schema):
    items = fields.List(fields.Nested(EntrySchema))
    next_cursor = fields.String(allow_none=True)


class HistoryQuerySchema(Schema):
    type = fields.List(fields.String(), metadata={"description": "Entry types; repeat for several"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String()


class ExpiringSchema(Schema):
    points = PointsField()
    expires_at = Timestamp()


class PendingSchema(Schema):
    points = PointsField()
    available_at = Timestamp()


class PointsSummarySchema(Schema):
    available = PointsField(signed=True, metadata={"description": "Spendable points, net of any debt"})
    pending = PointsField(signed=True)
    lifetime_earned = PointsField(signed=True)
    debt = PointsField(signed=True, metadata={"description": "Points owed after a refund of spent points"})
    held = PointsField(metadata={"description": "Points reserved by open holds at tills"})
    expiring = fields.List(fields.Nested(ExpiringSchema))
    pending_lots = fields.List(fields.Nested(PendingSchema))


class PaymentCreateSchema(MemberReference):
    store_id = fields.String(validate=STORE)
    payment_no = Identifier(required=True)
    points = PointsField(required=True)


class PaymentResultSchema(Schema):
    payment_id = fields.Integer(attribute="record.id")
    payment_no = fields.String(attribute="record.payment_no")
    store_id = fields.String(attribute="record.store_id")
    points = PointsField(attribute="record.points")
    money_value = fields.Method("get_money_value", metadata={"type": "object"})
    status = fields.String(attribute="record.status", metadata={"enum": ["completed", "reversed"]})
    reversed_at = Timestamp(attribute="record.reversed_at", allow_none=True)
    member = fields.Nested(MemberSchema)

    def get_money_value(self, outcome):
        return MoneyValueSchema().dump({"amount": outcome.record.money_amount,
                                        "currency": outcome.record.currency})


class ActivityTypeSchema(Schema):
    type = fields.String(required=True, validate=[validate.Length(min=1, max=30),
                                                  validate.Regexp(r"^[a-z][a-z0-9_]*$")])
    points = PointsField(required=True, validate=validate.Range(max=MAX_ACTIVITY_POINTS))
    cap = fields.Integer(allow_none=True, load_default=None, validate=validate.Range(min=1, max=MAX_ACTIVITY_CAP))
    cap_period = fields.String(allow_none=True, load_default=None, validate=validate.OneOf(CAP_PERIODS))
    description = fields.String(load_default="", validate=validate.Length(max=100))

    @validates_schema
    def cap_has_period(self, data, **kwargs):
        if (data.get("cap") is None) != (data.get("cap_period") is None):
            raise ValidationError("Give both cap and cap_period, or neither.")


class EarningRulesSchema(Schema):
    points_per_unit = PointsField(required=True, validate=validate.Range(max=MAX_POINTS_PER_UNIT),
                                  metadata={"description": f"Points per currency unit spent (at most "
                                                           f"{MAX_POINTS_PER_UNIT})"})
    min_amount = MoneyField(required=True, allow_zero=True,
                            metadata={"description": "Purchases below this earn nothing"})
    excluded_categories = fields.List(fields.String(validate=validate.Length(min=1, max=64)), load_default=list,
                                      validate=validate.Length(max=MAX_EXCLUDED_CODES),
                                      metadata={"description": "Compared case-insensitively"})
    excluded_skus = fields.List(fields.String(validate=validate.Length(min=1, max=64)), load_default=list,
                                validate=validate.Length(max=MAX_EXCLUDED_CODES),
                                metadata={"description": "Compared case-insensitively"})
    pending_days = fields.Integer(required=True, validate=validate.Range(min=0, max=MAX_PENDING_DAYS))
    expiry_policy = fields.String(required=True, validate=validate.OneOf(EXPIRY_POLICIES))
    expiry_days = fields.Integer(load_default=365, validate=validate.Range(min=1, max=MAX_EXPIRY_DAYS))
    payment_points_per_unit = PointsField(
        required=True, validate=validate.Range(min=MIN_PAYMENT_POINTS_PER_UNIT, max=MAX_PAYMENT_POINTS_PER_UNIT),
        metadata={"description": f"Points that pay one currency unit at the till ({MIN_PAYMENT_POINTS_PER_UNIT} "
                                 f"to {MAX_PAYMENT_POINTS_PER_UNIT}: a point is worth at most 1.00)"})
    activities = fields.List(fields.Nested(ActivityTypeSchema), required=True, validate=validate.Length(max=50))

    @validates_schema
    def unique_activity_types(self, data, **kwargs):
        names = [a["type"] for a in data.get("activities", [])]
        if len(names) != len(set(names)):
            raise ValidationError("Each activity type may appear once.", field_name="activities")


class BatchItemSchema(MemberReference):
    receipt_no = Identifier(required=True)
    amount = MoneyField(required=True)
    occurred_at = Timestamp(required=True, metadata={"description": "When the till made the sale; at most "
                                                                    "LOYALTY_OFFLINE_MAX_DAYS (30) back"})
    items = fields.List(fields.Nested(ItemSchema), validate=validate.Length(max=500))


class BatchItems(fields.List):
    """The batch's purchases, each read on its own: one the schema refuses becomes that item's
    rejection ({"receipt_no", "error": {"error", "message"}}) instead of failing the whole batch."""

    def __init__(self, **kwargs):
        super().__init__(fields.Nested(BatchItemSchema), validate=validate.Length(min=1, max=MAX_BATCH), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise ValidationError("Not a valid list.")
        return [self._item(raw) for raw in value]

    @staticmethod
    def _item(raw):
        try:
            return BatchItemSchema().load(raw)
        except ValidationError as error:
            receipt_no = raw.get("receipt_no") if isinstance(raw, dict) else None
            return {"receipt_no": receipt_no if isinstance(receipt_no, str) and len(receipt_no) <= 64 else None,
                    "error": {"error": "validation_error",
                              "message": "This purchase was not recorded: " + _sentence(error.messages)}}


def _sentence(messages):
    if isinstance(messages, dict):
        return "; ".join(f"{'purchase' if key == '_schema' else key}: {_sentence(value)}"
                         for key, value in messages.items())
    if isinstance(messages, list):
        return " ".join(_sentence(message) for message in messages)
    return str(messages)


class BatchCreateSchema(Schema):
    store_id = fields.String(validate=STORE, metadata={"description": "The POS key's own store"})
    purchases = BatchItems(required=True)


class BatchErrorSchema(Schema):
    error = fields.String()
    message = fields.String()


class BatchResultSchema(Schema):
    receipt_no = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": ["credited", "replayed", "rejected"]})
    purchase_id = fields.Integer()
    points_earned = PointsField(metadata={"description": "The sum of the breakdown's lines"})
    breakdown = fields.List(fields.Nested(BreakdownLineSchema), metadata={
        "description": "As a single purchase's: base, tier, each promotion, referral"})
    error = fields.Nested(BatchErrorSchema)


class BatchResultsSchema(Schema):
    results = fields.List(fields.Nested(BatchResultSchema))
