from marshmallow import fields, validate

from loyalty.api.schemas.common import MoneyField, PointsField, Schema, Timestamp

COUNT = validate.Range(min=1, max=1_000_000)
# A referral or ambassador reward of at most 100 000 points (1 000.00 at the default till rate).
MAX_CAMPAIGN_POINTS = 100_000
CAMPAIGN_POINTS = validate.Range(min=0, max=MAX_CAMPAIGN_POINTS)


class CampaignFieldsSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=100))
    starts_at = Timestamp()
    ends_at = Timestamp(allow_none=True)
    referrer_points = PointsField(signed=True, validate=CAMPAIGN_POINTS)
    referee_points = PointsField(signed=True, validate=CAMPAIGN_POINTS)
    min_first_purchase = MoneyField(allow_zero=True, metadata={
        "description": "The referee's first purchase must be at least this much to qualify"})
    qualify_within_days = fields.Integer(validate=validate.Range(min=1, max=3650), metadata={
        "description": "Days after joining within which the first purchase must come"})
    return_window_days = fields.Integer(validate=validate.Range(min=0, max=365), metadata={
        "description": "A refund below the minimum within this many days takes both rewards back (default 30)"})
    max_rewards_per_referrer = fields.Integer(allow_none=True, validate=COUNT)
    ambassador_threshold = fields.Integer(allow_none=True, validate=COUNT, metadata={
        "description": "Qualified referrals that make a member an ambassador (推荐大使)"})
    ambassador_bonus_points = PointsField(signed=True, validate=CAMPAIGN_POINTS)
    link_template = fields.String(validate=validate.Length(min=8, max=500), metadata={
        "example": "https://shop.example/join?ref={code}"})


class CampaignCreateSchema(CampaignFieldsSchema):
    """Only what a marketer must decide is required; the rest has the defaults of
    referrals.service.CAMPAIGN_DEFAULTS (documented on each field)."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    referrer_points = PointsField(required=True, signed=True, validate=CAMPAIGN_POINTS)
    referee_points = PointsField(required=True, signed=True, validate=CAMPAIGN_POINTS)
    starts_at = Timestamp(metadata={"description": "Default: now"})
    min_first_purchase = MoneyField(allow_zero=True, metadata={
        "description": "The referee's first purchase must be at least this much to qualify (default 0.00: any)"})
    qualify_within_days = fields.Integer(validate=validate.Range(min=1, max=3650), metadata={
        "description": "Days after joining within which the first purchase must come (default 30)"})
    link_template = fields.String(validate=validate.Length(min=8, max=500), metadata={
        "description": "Where a member's referral link points, with {code} (default: LOYALTY_REFERRAL_LINK)",
        "example": "https://shop.example/join?ref={code}"})


class CampaignSchema(CampaignFieldsSchema):
    id = fields.Integer()
    created_at = Timestamp()
    updated_at = Timestamp()


class CampaignListSchema(Schema):
    items = fields.List(fields.Nested(CampaignSchema))
    next_cursor = fields.String(allow_none=True)


class CampaignStatsSchema(Schema):
    campaign_id = fields.Integer()
    invited = fields.Integer()
    pending = fields.Integer()
    qualified = fields.Integer()
    rewarded = fields.Integer(metadata={"description": "Referrers rewarded (not over their cap)"})
    referrer_over_cap = fields.Integer()
    missed = fields.Integer(metadata={"description": "First purchase below the minimum"})
    expired = fields.Integer()
    clawed_back = fields.Integer()
    points_granted = PointsField(metadata={"description": "Points given by the campaign's referrals, "
                                                         "including those later clawed back"})
    points_clawed_back = PointsField(metadata={"description": "Of those, points taken back because the "
                                                             "first purchase was refunded below the minimum"})
    conversion_rate = fields.Decimal(as_string=False, places=4)


class MemberReferralSchema(Schema):
    code = fields.String()
    link = fields.String()
    invited = fields.Integer()
    qualified = fields.Integer()
    pending = fields.Integer()
    ambassador = fields.Boolean()
    ambassador_since = Timestamp(allow_none=True)
    campaign_id = fields.Integer(allow_none=True)


class ApplyCodeSchema(Schema):
    referral_code = fields.String(required=True, validate=validate.Length(min=1, max=16))
