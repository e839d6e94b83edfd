from marshmallow import fields, validate

from loyalty.api.schemas.common import Schema, Timestamp
from loyalty.webhooks.models import EVENTS

EVENT_LIST = fields.List(fields.String(validate=validate.OneOf(EVENTS)), validate=validate.Length(min=1),
                         metadata={"description": f"Any of: {', '.join(EVENTS)}"})


class SubscriptionFieldsSchema(Schema):
    url = fields.String(validate=validate.Length(min=8, max=500), metadata={
        "example": "https://crm.example/hooks/loyalty"})
    events = EVENT_LIST
    secret = fields.String(load_only=True, validate=validate.Length(min=16, max=200), metadata={
        "description": "Signs every body: header X-Loyalty-Signature is `sha256=` and the hex "
                       "HMAC-SHA256 of the raw body under this secret. Never shown again."})
    description = fields.String(validate=validate.Length(max=200))
    active = fields.Boolean(metadata={"description": "A paused subscription keeps its deliveries until resumed"})


class SubscriptionCreateSchema(SubscriptionFieldsSchema):
    url = fields.String(required=True, validate=validate.Length(min=8, max=500))
    events = fields.List(fields.String(validate=validate.OneOf(EVENTS)), required=True,
                         validate=validate.Length(min=1))
    secret = fields.String(required=True, load_only=True, validate=validate.Length(min=16, max=200))


class DeliveryCountsSchema(Schema):
    pending = fields.Integer()
    delivered = fields.Integer()
    dead = fields.Integer()
    cancelled = fields.Integer()


class SubscriptionSchema(SubscriptionFieldsSchema):
    id = fields.Integer()
    created_at = Timestamp()
    updated_at = Timestamp()
    deliveries = fields.Nested(DeliveryCountsSchema)


class SubscriptionListSchema(Schema):
    items = fields.List(fields.Nested(SubscriptionSchema))
    next_cursor = fields.String(allow_none=True)


class AttemptSchema(Schema):
    attempted_at = Timestamp()
    status_code = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    duration_ms = fields.Integer()


class DeliverySchema(Schema):
    id = fields.Integer()
    subscription_id = fields.Integer()
    event_id = fields.String()
    event_type = fields.String(attribute="event.type")
    body = fields.String(attribute="event.body", metadata={"description": "The exact JSON sent"})
    status = fields.String(metadata={"description": "pending, delivered, dead or cancelled"})
    attempts = fields.Integer()
    next_attempt_at = Timestamp(allow_none=True)
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    delivered_at = Timestamp(allow_none=True)
    created_at = Timestamp()
    attempt_log = fields.List(fields.Nested(AttemptSchema), attribute="attempt_rows")


class DeliveryQuerySchema(Schema):
    status = fields.String(validate=validate.OneOf(["pending", "delivered", "dead", "cancelled"]))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String()


class DeliveryPageSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))
    next_cursor = fields.String(allow_none=True)


class ReplayedSchema(Schema):
    replayed = fields.Integer()
