from marshmallow import fields, validate

from loyalty.api.schemas.common import MoneyField, PointsField, Schema, Timestamp
from loyalty.api.schemas.referrals import CampaignStatsSchema


class SegmentQuerySchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=1000))
    cursor = fields.String()
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]),
                           metadata={"description": "`csv` streams every member of the segment as CSV"})


class SegmentMemberSchema(Schema):
    id = fields.Integer()
    member_no = fields.String()
    name = fields.String()
    phone = fields.String(metadata={"description": "Masked: +86138****5678"})
    tier = fields.String()
    lifecycle_stage = fields.String(allow_none=True)
    value_segment = fields.String(allow_none=True)
    available_points = PointsField(signed=True)
    spend_12_months = MoneyField(allow_zero=True)
    last_purchase_at = Timestamp(allow_none=True)


class SegmentPageSchema(Schema):
    items = fields.List(fields.Nested(SegmentMemberSchema))
    next_cursor = fields.String(allow_none=True)


class TagsSchema(Schema):
    tags = fields.List(fields.String(validate=validate.Length(min=1, max=40)), required=True,
                       validate=validate.Length(min=1, max=50))


class MoneyValueSchema(Schema):
    amount = MoneyField(allow_zero=True)
    currency = fields.String()


class OverviewPointsSchema(Schema):
    outstanding = PointsField(signed=True, metadata={"description": "Available (not below 0) plus pending "
                                                                    "plus held"})
    available = PointsField(signed=True)
    pending = PointsField(signed=True)
    held = PointsField(metadata={"description": "Reserved by open holds at tills"})
    debt = PointsField(signed=True)
    outstanding_money_value = fields.Nested(MoneyValueSchema)
    expiring_30_days = PointsField(signed=True)


class FlowsSchema(Schema):
    earned = PointsField(signed=True)
    redeemed = PointsField(signed=True)
    paid = PointsField(signed=True)
    expired = PointsField(signed=True)
    reversed = PointsField(signed=True)
    adjusted = PointsField(signed=True)
    imported = PointsField(signed=True, metadata={"description": "opening balances brought by loyalty import members"})


class OverviewSchema(Schema):
    members = fields.Dict()
    points = fields.Nested(OverviewPointsSchema)
    last_30_days = fields.Nested(FlowsSchema)
    referrals = fields.Nested(CampaignStatsSchema, allow_none=True)
    as_of = Timestamp()


class LiabilityMonthSchema(Schema):
    month = fields.String(metadata={"example": "2027-03"})
    points = PointsField(signed=True)


class LiabilitySchema(Schema):
    items = fields.List(fields.Nested(LiabilityMonthSchema))
    never_expires = PointsField(signed=True)
    total = PointsField(signed=True)
    as_of = Timestamp()


class AuditQuerySchema(Schema):
    entity_type = fields.String(validate=validate.Length(max=30))
    action = fields.String(validate=validate.Length(max=50))
    actor = fields.String(validate=validate.Length(max=150))
    since = Timestamp()
    until = Timestamp()
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String()


class AuditEntrySchema(Schema):
    id = fields.Integer()
    actor = fields.String()
    action = fields.String()
    entity_type = fields.String()
    entity_id = fields.String(allow_none=True)
    before = fields.Raw(allow_none=True)
    after = fields.Raw(allow_none=True)
    created_at = Timestamp()


class AuditPageSchema(Schema):
    items = fields.List(fields.Nested(AuditEntrySchema))
    next_cursor = fields.String(allow_none=True)


class SalesFiguresSchema(Schema):
    count = fields.Integer()
    amount = MoneyField(allow_zero=True)
    currency = fields.String()
    points = PointsField()


class PaymentFiguresSchema(Schema):
    count = fields.Integer()
    points = PointsField()
    money_value = fields.Nested(MoneyValueSchema)


class VoucherLineSchema(Schema):
    reward_id = fields.Integer()
    name = fields.String()
    count = fields.Integer()


class DayFiguresSchema(Schema):
    purchases = fields.Nested(SalesFiguresSchema, metadata={"description": "By the purchase's occurred_at"})
    refunds = fields.Nested(SalesFiguresSchema)
    points_payments = fields.Nested(PaymentFiguresSchema)
    reversals = fields.Nested(PaymentFiguresSchema, metadata={"description": "Points payments reversed that day"})
    vouchers_used = fields.List(fields.Nested(VoucherLineSchema))
    holds_open = fields.Integer(metadata={"description": "Holds placed that day and still open now"})
    holds_open_points = PointsField()


class KeyDaySchema(DayFiguresSchema):
    key_id = fields.Integer(allow_none=True, metadata={"description": "null: records made before keys were kept"})
    key_name = fields.String(allow_none=True)


class StoreDaySchema(DayFiguresSchema):
    store_id = fields.String()
    date = fields.String()
    timezone = fields.String()
    from_ = Timestamp(data_key="from")
    until = Timestamp()
    by_key = fields.List(fields.Nested(KeyDaySchema))
