from marshmallow import fields, validate, validates_schema, ValidationError

from loyalty.api.schemas.common import PointsField, RecordId, Schema, Timestamp
from loyalty.config import MAX_MEMBER_TOKEN_SECONDS
from loyalty.errors import ValidationFailed
from loyalty.members import service
from loyalty.tiers.service import ladder

NOT_BLANK = validate.Regexp(r"\s*\S", error="Must not be blank.")
NAME = [validate.Length(min=1, max=100), NOT_BLANK]
CHANNEL = [validate.Length(min=1, max=30), NOT_BLANK]


class PhoneField(fields.String):
    """A phone number as people type it ("138 0000-0001"), checked and put in E.164 here so that
    every invalid field of a request is reported at once."""

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {}).setdefault(
            "description", "A phone number in any usual spelling (+86 138 0013 8000, 13800138000, 0086 138-0013-8000): "
                           "read in the deployment's region (LOYALTY_PHONE_REGION) unless it has a country code, "
                           "stored and answered in E.164 (+8613800138000); not a valid number: 422")
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return service.normalise_phone(text)
        except ValidationFailed as error:
            raise ValidationError(error.errors["phone"]) from None


class ExternalIdSchema(Schema):
    channel = fields.String(required=True, validate=CHANNEL)
    id = fields.String(required=True, validate=[validate.Length(min=1, max=100), NOT_BLANK])


class MemberCreateSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    phone = PhoneField()
    email = fields.Email(validate=validate.Length(max=254))
    birthday = fields.Date()
    channel = fields.String(validate=CHANNEL)
    external_ids = fields.List(fields.Nested(ExternalIdSchema), validate=validate.Length(max=20))
    referral_code = fields.String(validate=validate.Length(min=4, max=16))


class MemberUpdateSchema(Schema):
    name = fields.String(validate=NAME)
    phone = PhoneField(allow_none=True)
    email = fields.Email(validate=validate.Length(max=254), allow_none=True)
    birthday = fields.Date(allow_none=True)
    channel = fields.String(validate=CHANNEL, allow_none=True)

    @validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError("Send at least one field to change: name, phone, email, birthday, channel.")


class MemberLookupSchema(Schema):
    phone = PhoneField()
    email = fields.String()
    channel = fields.String()
    external_id = fields.String()
    card = fields.String()

    @validates_schema
    def one_identity(self, data, **kwargs):
        given = {"phone", "email", "card"} & set(data)
        if {"channel", "external_id"} & set(data):
            given.add("channel and external_id")
        if len(given) > 1:
            raise ValidationError("Look a member up by one identity at a time: phone, email, card, "
                                  "or channel together with external_id.")


class TierRefSchema(Schema):
    code = fields.String()
    name = fields.String()


class TierRef(fields.Nested):
    """A member's tier as answers show it: its code, and its name from the ladder this process keeps
    (settings_cache), not a query per member."""

    def _serialize(self, code, attr, obj, **kwargs):
        name = next((tier.name for tier in ladder() if tier.code == code), code)
        return super()._serialize({"code": code, "name": name}, attr, obj, **kwargs)


class BalanceSchema(Schema):
    available = PointsField(signed=True)
    pending = PointsField(signed=True)
    held = PointsField(signed=True, metadata={"description": "reserved by an open points hold at a till"})
    lifetime_earned = PointsField(signed=True)


class MemberSchema(Schema):
    id = fields.Integer()
    member_no = fields.String()
    name = fields.String()
    phone = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    birthday = fields.Date(allow_none=True)
    channel = fields.String(allow_none=True)
    external_ids = fields.Method("get_external_ids")
    tier = TierRef(TierRefSchema, attribute="tier_code")
    points = fields.Nested(BalanceSchema, attribute="account")
    lifecycle_stage = fields.String(allow_none=True)
    referral_code = fields.String()
    ambassador = fields.Method("get_ambassador", metadata={"description": "推荐大使: a top referrer"})
    joined_at = Timestamp()
    status = fields.String(metadata={"enum": ["active", "closed", "erased"]})
    merged_into_id = fields.Integer(allow_none=True, metadata={
        "description": "A member closed by a merge: the member it was merged into"})

    def get_ambassador(self, member):
        return member.ambassador_since is not None

    def get_external_ids(self, member):
        return [{"channel": i.channel, "id": i.external_id} for i in member.identities]


class MemberListSchema(Schema):
    items = fields.List(fields.Nested(MemberSchema))


class MergeSchema(Schema):
    from_member_id = RecordId(required=True)


class TokenCreateSchema(Schema):
    ttl_seconds = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_MEMBER_TOKEN_SECONDS, error=(
        "Must be between {min} and {max} seconds (30 days).")), metadata={
        "description": "How long the token works (default LOYALTY_MEMBER_TOKEN_SECONDS, 3600; at most 30 days)"})


class TokenSchema(Schema):
    token = fields.String(metadata={"description": "Send as `Authorization: Bearer <token>` from the member's device"})
    member_id = fields.Integer()
    expires_at = Timestamp()


class EraseSchema(Schema):
    reason = fields.String(required=True, validate=[validate.Length(min=1, max=500), NOT_BLANK])


class ExportSchema(Schema):
    """Everything held about one member (GET /members/{id}/export)."""
    member = fields.Raw()
    identities = fields.List(fields.Raw())
    tags = fields.List(fields.String())
    points = fields.Raw(allow_none=True)
    entries = fields.List(fields.Raw())
    purchases = fields.List(fields.Raw())
    refunds = fields.List(fields.Raw())
    activities = fields.List(fields.Raw())
    points_payments = fields.List(fields.Raw())
    points_holds = fields.List(fields.Raw())
    points_hold_refusals = fields.List(fields.Raw())
    points_payment_refusals = fields.List(fields.Raw())
    redemptions = fields.List(fields.Raw())
    vouchers = fields.List(fields.Raw())
    referrals = fields.List(fields.Raw())
    tier_history = fields.List(fields.Raw())
    exported_at = Timestamp()
