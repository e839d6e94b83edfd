from flask import current_app
from flask.views import MethodView

from loyalty.api.base import Blueprint
from loyalty.api.schemas.jobs import JobsQuerySchema, JobsSchema
from loyalty.auth import roles
from loyalty.jobs import registry, runner
from loyalty.jobs.scheduler import schedule_of

blp = Blueprint("jobs", __name__, description="Scheduled jobs and their runs")


@blp.route("/jobs")
class Jobs(MethodView):
    @roles("admin")
    @blp.arguments(JobsQuerySchema(), location="query")
    @blp.response(200, JobsSchema)
    def get(self, query):
        """Every job with its schedule and last run, and the latest runs (filter with `job_id`)"""
        last = runner.last_runs()
        return {"jobs": [{"id": job.id, "description": job.description,
                          "schedule": schedule_of(current_app, job), "last_run": last.get(job.id)}
                         for job in registry.JOBS],
                "runs": runner.recent_runs(query.get("job_id"), query["limit"])}
