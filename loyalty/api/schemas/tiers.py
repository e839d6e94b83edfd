from marshmallow import fields, validate

from loyalty.api.schemas.common import MoneyField, PointsField, Schema, Timestamp
from loyalty.tiers.rules import MAX_BIRTHDAY_POINTS, MAX_EARN_MULTIPLIER, MODES


class QualificationSchema(Schema):
    spend = MoneyField(required=True, allow_zero=True,
                       metadata={"description": "Qualifying spend over the window, net of refunds"})
    activities = fields.Integer(required=True, validate=validate.Range(min=0, max=100_000),
                                metadata={"description": "Activities over the window (not capped ones)"})
    mode = fields.String(required=True, validate=validate.OneOf(MODES),
                         metadata={"description": "`all`: both thresholds; `any`: either one"})


class BenefitsSchema(Schema):
    earn_multiplier = PointsField(required=True, validate=validate.Range(min=1, max=MAX_EARN_MULTIPLIER),
                                  metadata={"description": "Points per point a lowest-tier member earns "
                                                           f"(1 to {MAX_EARN_MULTIPLIER})"})
    birthday_points = PointsField(required=True, signed=True, validate=validate.Range(min=0, max=MAX_BIRTHDAY_POINTS),
                                  metadata={"description": "Points given on the member's birthday "
                                                           f"(at most {MAX_BIRTHDAY_POINTS})"})
    service_level = fields.String(required=True, validate=validate.Length(max=200))
    perks = fields.List(fields.String(validate=validate.Length(min=1, max=100)), required=True,
                        validate=validate.Length(max=30))


class TierSchema(Schema):
    code = fields.String(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=50))
    rank = fields.Integer(dump_only=True)
    qualification = fields.Nested(QualificationSchema, required=True)
    benefits = fields.Nested(BenefitsSchema, required=True)


class MemberTierRefSchema(Schema):
    code = fields.String()
    name = fields.String()
    rank = fields.Integer()
    benefits = fields.Nested(BenefitsSchema)


class ProgressSchema(Schema):
    spend = MoneyField(allow_zero=True)
    activities = fields.Integer()
    window_start = Timestamp()


class NeededSchema(Schema):
    spend_needed = MoneyField(allow_zero=True, allow_none=True,
                              metadata={"description": "null: not one of the ways in (mode `any`)"})
    activities_needed = fields.Integer(allow_none=True)


class NextTierSchema(NeededSchema):
    code = fields.String()
    name = fields.String()
    mode = fields.String()


class TierChangeSchema(Schema):
    from_ = fields.String(data_key="from", attribute="from", allow_none=True)
    to = fields.String()
    reason = fields.String(metadata={"enum": ["upgrade", "downgrade", "manual", "refund", "import"], "description":
                                     "`refund`: a refund took back the spend an upgrade was reached with"})
    note = fields.String(allow_none=True)
    purchase_id = fields.Integer(allow_none=True, metadata={
        "description": "The purchase that made the upgrade, or whose refund undid it"})
    at = Timestamp()


class GuaranteeSchema(Schema):
    tier = fields.String()
    until = Timestamp()


class MemberTierSchema(Schema):
    tier = fields.Nested(MemberTierRefSchema)
    since = Timestamp()
    valid_until = Timestamp(allow_none=True, metadata={
        "description": "The tier is held at least until then (protection period or guarantee)"})
    guaranteed = fields.Nested(GuaranteeSchema, allow_none=True, metadata={
        "description": "An admin's guarantee still running: the member stays at least in this tier until then"})
    qualifying = fields.Nested(ProgressSchema)
    keep = fields.Nested(NeededSchema, metadata={
        "description": "What the window still needs for the member to keep this tier"})
    next = fields.Nested(NextTierSchema, allow_none=True)
    history = fields.List(fields.Nested(TierChangeSchema))


class MemberTierSetSchema(Schema):
    tier = fields.String(required=True, validate=validate.Length(min=1, max=20))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))
    guaranteed_until = fields.Date(allow_none=True, metadata={
        "description": "The nightly recompute keeps the member in this tier through this local date"})
