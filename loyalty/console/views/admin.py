"""Admin's pages: the audit log, webhooks (deliveries, replay), jobs (last runs, run now; bulk awards:
cancel, retry), API keys."""
from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from loyalty import audit, auth, clock
from loyalty.bulk_awards import service as bulk_awards
from loyalty.config import settings
from loyalty.console.base import FormErrors, actor, attempt, blp, form_values, staff_only
from loyalty.cursors import decode_cursor, encode_cursor
from loyalty.jobs import registry, runner
from loyalty.jobs.scheduler import schedule_of
from loyalty.webhooks import service as webhooks

AUDIT_PAGE = 50


@blp.route("/audit-log")
@staff_only("admin")
def audit_log():
    filters = form_values_from_args(("entity_type", "action", "actor"))
    cursor = request.args.get("cursor")
    items, last = audit.entries(**filters, limit=AUDIT_PAGE, before_id=decode_cursor(cursor) if cursor else None)
    return render_template("console/admin/audit.html", items=items, filters=filters,
                           next_cursor=encode_cursor(last) if last else None)


def form_values_from_args(names):
    return {name: request.args[name].strip() for name in names if request.args.get(name, "").strip()}


@blp.route("/webhooks", endpoint="webhooks")
@staff_only("admin")
def webhooks_page():
    items, _last = webhooks.subscriptions(100)
    stats = webhooks.subscription_stats([s.id for s in items])
    return render_template("console/admin/webhooks.html", items=items, stats=stats)


@blp.route("/webhooks/<id:subscription_id>")
@staff_only("admin")
def webhook_deliveries(subscription_id):
    subscription = webhooks.get_subscription(subscription_id)
    status = request.args.get("status") or None
    cursor = request.args.get("cursor")
    items, last = webhooks.deliveries(subscription_id, status if status in ("pending", "delivered", "dead", "cancelled")
                                      else None, 50, decode_cursor(cursor) if cursor else None)
    return render_template("console/admin/deliveries.html", subscription=subscription, items=items, status=status,
                           next_cursor=encode_cursor(last) if last else None)


@blp.route("/webhooks/<id:subscription_id>/replay", methods=["POST"])
@staff_only("admin")
def replay_dead(subscription_id):
    count = attempt(webhooks.replay_dead, subscription_id, actor())
    flash(_("%(count)s dead deliveries will be sent again.", count=count), "ok")
    return redirect(url_for("console.webhook_deliveries", subscription_id=subscription_id))


@blp.route("/webhook-deliveries/<id:delivery_id>/replay", methods=["POST"])
@staff_only("admin")
def replay_delivery(delivery_id):
    delivery = attempt(webhooks.replay, delivery_id, actor())
    flash(_("The delivery will be sent again."), "ok")
    return redirect(url_for("console.webhook_deliveries", subscription_id=delivery.subscription_id))


@blp.route("/jobs")
@staff_only("admin")
def jobs():
    last = runner.last_runs()
    rows = [(job, schedule_of(current_app, job), last.get(job.id)) for job in registry.JOBS]
    return render_template("console/admin/jobs.html", rows=rows, runs=runner.recent_runs(limit=20),
                           awards=bulk_awards.recent_awards())


@blp.route("/bulk-awards/<id:award_id>/cancel", methods=["POST"])
@staff_only("admin")
def cancel_bulk_award(award_id):
    """As `loyalty bulk-awards cancel`: nobody is credited after this; the credited keep their points."""
    try:
        award = attempt(bulk_awards.cancel_award, award_id, form_values(("reason",)).get("reason", ""), actor())
    except FormErrors as error:
        flash(error.message, "error")
        return redirect(url_for("console.jobs"))
    flash(_("Bulk award %(no)s cancelled: %(awarded)s of %(members)s members had been credited and keep their "
            "points.", no=award.award_no, awarded=award.awarded, members=award.members), "ok")
    return redirect(url_for("console.jobs"))


@blp.route("/bulk-awards/<id:award_id>/retry", methods=["POST"])
@staff_only("admin")
def retry_bulk_award(award_id):
    try:
        award = attempt(bulk_awards.retry_award, award_id, actor())
    except FormErrors as error:
        flash(error.message, "error")
        return redirect(url_for("console.jobs"))
    flash(_("Bulk award %(no)s queued again.", no=award.award_no), "ok")
    return redirect(url_for("console.jobs"))


@blp.route("/jobs/<string(maxlength=50):job_id>/run", methods=["POST"])
@staff_only("admin")
def run_job(job_id):
    """Runs the job once for today, as `loyalty jobs run` does: locked, recorded."""
    job = registry.get(job_id)
    if job is None:
        flash(_("There is no such job."), "error")
        return redirect(url_for("console.jobs"))
    try:
        record = attempt(runner.run, job, clock.local_date(clock.now(), settings().timezone))
    except FormErrors as error:
        flash(error.message, "error")
        return redirect(url_for("console.jobs"))
    flash(_("%(job)s: %(outcome)s.", job=job.id, outcome=record.outcome), "ok")
    return redirect(url_for("console.jobs"))


@blp.route("/api-keys")
@staff_only("admin")
def api_keys():
    return render_template("console/admin/api_keys.html", keys=auth.list_keys(), roles=auth.ROLES,
                           created=None, errors={})


@blp.route("/api-keys", methods=["POST"])
@staff_only("admin")
def create_api_key():
    """The key is shown once, on the page this answers with; only its hash is kept."""
    values = form_values(("role", "store_id", "name"))
    try:
        key, plaintext = attempt(auth.create_key, values.get("role", ""), name=values.get("name"),
                                 store_id=values.get("store_id"), actor=actor())
    except FormErrors as error:
        return render_template("console/admin/api_keys.html", keys=auth.list_keys(), roles=auth.ROLES,
                               created=None, errors={"role": [error.message]}, message=error.message), 422
    response = render_template("console/admin/api_keys.html", keys=auth.list_keys(), roles=auth.ROLES,
                               created=(key, plaintext), errors={})
    return response, 201, {"Cache-Control": "no-store"}


@blp.route("/api-keys/<id:key_id>/revoke", methods=["POST"])
@staff_only("admin")
def revoke_api_key(key_id):
    attempt(auth.revoke_key, key_id, actor=actor())
    flash(_("API key revoked."), "ok")
    return redirect(url_for("console.api_keys"))
