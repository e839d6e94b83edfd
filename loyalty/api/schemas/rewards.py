from marshmallow import fields, validate

from loyalty.api.schemas.common import MAX_ID, MoneyField, PointsField, RecordId, Schema, Timestamp
from loyalty.api.schemas.members import MemberSchema
from loyalty.rewards.models import KINDS, LIMIT_PERIODS
from loyalty import clock
from loyalty.rewards.service import MAX_QUANTITY, voucher_status

VOUCHER_STATUSES = ["issued", "used", "expired", "void"]
# A reward costs at most 10 000 000 points (100 000.00 at the default till rate): beyond, a typo.
# Times MAX_QUANTITY it stays far inside a BIGINT of hundredths.
MAX_POINTS_COST = 10_000_000


class RewardFieldsSchema(Schema):
    """What marketing sets on a reward. On create, `name`, `kind`, `points_cost` and
    `voucher_valid_days` are required; on PATCH every field is optional."""

    name = fields.String(validate=validate.Length(min=1, max=100))
    description = fields.String(validate=validate.Length(max=2000))
    kind = fields.String(validate=validate.OneOf(KINDS))
    cash_value = MoneyField(allow_none=True, metadata={"description": "A cash voucher's money value"})
    points_cost = PointsField(validate=validate.Range(max=MAX_POINTS_COST))
    stock = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=10**9),
                           metadata={"description": "Units left; null for unlimited"})
    per_member_limit = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=10**6),
                                      metadata={"description": "Units per member per `limit_period`; null: none"})
    limit_period = fields.String(validate=validate.OneOf(LIMIT_PERIODS),
                                 metadata={"description": "`month` (calendar, local time) or `ever`"})
    min_tier = fields.String(allow_none=True, validate=validate.Length(max=20))
    valid_from = Timestamp(allow_none=True)
    valid_until = Timestamp(allow_none=True)
    voucher_valid_days = fields.Integer(validate=validate.Range(min=0, max=3650),
                                        metadata={"description": "Days a voucher stays valid after today"})
    active = fields.Boolean()
    image_url = fields.URL(allow_none=True, validate=validate.Length(max=500))


class RewardCreateSchema(RewardFieldsSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    points_cost = PointsField(required=True, validate=validate.Range(max=MAX_POINTS_COST))
    voucher_valid_days = fields.Integer(validate=validate.Range(min=0, max=3650), metadata={
        "description": "Days a voucher stays valid after today (default 30)"})


class RewardSchema(RewardFieldsSchema):
    id = fields.Integer()
    created_at = Timestamp()
    updated_at = Timestamp()


class CatalogItemSchema(RewardSchema):
    redeemable = fields.Boolean(metadata={"description": "With ?member_id=: can that member redeem one now"})
    reason = fields.String(allow_none=True, metadata={
        "enum": ["insufficient_points", "out_of_stock", "limit_reached", "not_eligible", None]})


class CatalogSchema(Schema):
    items = fields.List(fields.Nested(CatalogItemSchema))


class CatalogQuerySchema(Schema):
    member_id = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))  # a query string: not strict
    include_inactive = fields.Boolean(load_default=False, metadata={
        "description": "Marketing and admin: also rewards switched off or outside their dates"})


class RewardRefSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    kind = fields.String()
    cash_value = MoneyField(allow_none=True)


class VoucherSchema(Schema):
    code = fields.String()
    reward = fields.Nested(RewardRefSchema)
    status = fields.Method("get_status", metadata={"enum": VOUCHER_STATUSES})
    expires_at = Timestamp()
    member_id = fields.Integer()
    redemption_id = fields.Integer()
    used_at = Timestamp(allow_none=True)
    used_store_id = fields.String(allow_none=True)

    def get_status(self, voucher):
        return voucher_status(voucher, clock.now())


class RedemptionCreateSchema(Schema):
    reward_id = RecordId(required=True)
    quantity = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_QUANTITY))


class RedemptionSchema(Schema):
    redemption_id = fields.Integer(attribute="id")
    reward = fields.Nested(RewardRefSchema)
    quantity = fields.Integer()
    points_spent = PointsField()
    points_returned = PointsField()
    status = fields.String(metadata={"enum": ["completed", "cancelled"]})
    vouchers = fields.List(fields.Nested(VoucherSchema))
    created_at = Timestamp()
    cancelled_at = Timestamp(allow_none=True)


class RedemptionResultSchema(RedemptionSchema):
    member = fields.Nested(MemberSchema)


class RedemptionPageSchema(Schema):
    items = fields.List(fields.Nested(RedemptionSchema))
    next_cursor = fields.String(allow_none=True)


class RedemptionQuerySchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String()


class VoucherUseSchema(Schema):
    store_id = fields.String(validate=validate.Length(min=1, max=40),
                             metadata={"description": "The POS key's own store"})
