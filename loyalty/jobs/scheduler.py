"""The scheduler: APScheduler in its own process (`loyalty scheduler`), never in web workers.

Each job of registry.JOBS runs on its cron (deployment time zone; LOYALTY_JOB_SCHEDULES overrides
any of them) through jobs.runner, so a run is locked, recorded and logged like one from the CLI."""
import logging

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from loyalty import clock
from loyalty.extensions import db
from loyalty.jobs import registry, runner
from loyalty.config import Settings, settings

log = logging.getLogger("loyalty.scheduler")


def schedule_of(app, job):
    return Settings.from_config(app.config).job_schedules.get(job.id, job.cron)


def build(app, scheduler_class=BlockingScheduler):
    tz = Settings.from_config(app.config).timezone
    scheduler = scheduler_class(timezone=tz)
    for job in registry.JOBS:
        scheduler.add_job(run_job, CronTrigger.from_crontab(schedule_of(app, job), timezone=tz),
                          args=[app, job.id], id=job.id, name=job.description, coalesce=True,
                          max_instances=1, misfire_grace_time=3600, replace_existing=True)
    return scheduler


def run_job(app, job_id):
    """One scheduled run, as of the local day it starts on."""
    with app.app_context():
        job = registry.get(job_id)
        as_of = clock.local_date(clock.now(), settings().timezone)
        try:
            record = runner.run(job, as_of)
        except Exception:
            log.exception("job %s as of %s failed", job_id, as_of)
            return
        finally:
            db.session.remove()
        if record.outcome == "skipped":
            log.warning("job %s as of %s skipped: another runner holds its lock", job_id, as_of)
        else:
            log.info("job %s as of %s %s: %s", job_id, as_of, record.outcome, record.summary)
