from marshmallow import fields, validate

from loyalty.api.schemas.common import Schema, Timestamp


class JobRunSchema(Schema):
    id = fields.Integer()
    job_id = fields.String()
    as_of = fields.Date()
    started_at = Timestamp()
    finished_at = Timestamp(allow_none=True)
    rows = fields.Integer(allow_none=True, metadata={"description": "Rows the run changed"})
    outcome = fields.String(metadata={"enum": ["running", "succeeded", "failed", "skipped"]})
    summary = fields.Dict(allow_none=True)
    error = fields.String(allow_none=True)
    runner = fields.String()


class JobSchema(Schema):
    id = fields.String()
    description = fields.String()
    schedule = fields.String(metadata={"description": "cron, in the deployment's time zone"})
    last_run = fields.Nested(JobRunSchema, allow_none=True)


class JobsSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    runs = fields.List(fields.Nested(JobRunSchema), metadata={"description": "Latest runs, newest first"})


class JobsQuerySchema(Schema):
    job_id = fields.String(validate=validate.Length(max=50))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
