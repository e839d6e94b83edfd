from marshmallow import fields, validate

from loyalty.api.schemas.common import PointsField, Schema, Timestamp

NOT_BLANK = validate.Regexp(r"\s*\S", error="Must not be blank.")


class BulkAwardCreateSchema(Schema):
    award_no = fields.String(required=True, validate=[validate.Length(min=1, max=64), NOT_BLANK], metadata={
        "description": "Your number for this award: the same number again answers the award queued first"})
    segment = fields.String(required=True, validate=validate.Length(min=1, max=80), metadata={
        "description": "A segment, as GET /segments/{name}/members names it: high_value, new, tier:gold, tag:vip..."})
    points = PointsField(required=True, metadata={"description": "Each member's points"})
    reason = fields.String(required=True, validate=[validate.Length(min=1, max=200), NOT_BLANK])
    expires_at = Timestamp(metadata={"description": "When the points expire (default: never)"})


class BulkAwardSchema(Schema):
    id = fields.Integer()
    award_no = fields.String()
    segment = fields.String()
    status = fields.String(metadata={
        "enum": ["queued", "running", "done", "failed"],
        "description": "failed: its runs failed MAX_ATTEMPTS times, or it was cancelled (cancelled_at); "
                       "no member is credited after that, those credited keep their points"})
    members = fields.Integer(metadata={"description": "The segment's members when the award was queued"})
    awarded = fields.Integer(metadata={"description": "Members credited so far"})
    points = PointsField(metadata={"description": "Each member's points"})
    points_awarded = PointsField(metadata={"description": "Points credited so far, all members together"})
    reason = fields.String()
    expires_at = Timestamp(allow_none=True)
    error = fields.String(allow_none=True, metadata={"description": "The last failed run's error, or why it was cancelled"})
    attempts = fields.Integer(metadata={"description": "Runs that failed; after the fifth it is failed and not tried again"})
    retry_at = Timestamp(allow_none=True, metadata={"description": "After a failed run: not tried again before"})
    cancelled_at = Timestamp(allow_none=True)
    created_at = Timestamp()
    started_at = Timestamp(allow_none=True)
    finished_at = Timestamp(allow_none=True)
