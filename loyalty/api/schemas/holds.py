from marshmallow import fields, validate

from loyalty.api.schemas.common import Identifier, PointsField, Schema, Timestamp
from loyalty.api.schemas.members import MemberSchema
from loyalty.api.schemas.points import STORE, MemberReference
from loyalty.points.holds import MAX_TTL_SECONDS

HOLD_STATUSES = ["held", "captured", "released", "expired"]


class HoldCreateSchema(MemberReference):
    store_id = fields.String(validate=STORE, metadata={"description": "The POS key's own store"})
    hold_no = Identifier(required=True)
    points = PointsField(required=True)
    ttl_seconds = fields.Integer(validate=validate.Range(min=1, max=MAX_TTL_SECONDS),
                                 metadata={"description": f"Default 900, at most {MAX_TTL_SECONDS}"})


class HoldResultSchema(Schema):
    hold_id = fields.Integer(attribute="record.id")
    hold_no = fields.String(attribute="record.hold_no")
    store_id = fields.String(attribute="record.store_id")
    status = fields.String(attribute="record.status", metadata={"enum": HOLD_STATUSES})
    points = PointsField(attribute="record.points")
    expires_at = Timestamp(attribute="record.expires_at")
    member = fields.Nested(MemberSchema)


class HoldCaptureSchema(Schema):
    payment_no = Identifier(required=True)
    points = PointsField(metadata={"description": "Default: all the held points; at most those"})


class HoldReleasedSchema(Schema):
    hold_id = fields.Integer(attribute="record.id")
    status = fields.String(attribute="record.status", metadata={"enum": HOLD_STATUSES})


class HoldSchema(Schema):
    hold_id = fields.Integer()
    hold_no = fields.String()
    store_id = fields.String()
    member_id = fields.Integer()
    status = fields.String(metadata={"enum": HOLD_STATUSES})
    points = PointsField()
    captured_points = PointsField()
    expires_at = Timestamp()
    payment_id = fields.Integer(allow_none=True)
