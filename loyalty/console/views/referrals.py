from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from loyalty import clock
from loyalty.api.schemas.referrals import CampaignCreateSchema, CampaignFieldsSchema
from loyalty.console.base import FormErrors, actor, attempt, blp, form_values, load, local_times, nullable, staff_only
from loyalty.referrals import service
from loyalty.referrals.service import CAMPAIGN_FIELDS

TIMES = ("starts_at", "ends_at")
NULLABLE = ("ends_at", "max_rewards_per_referrer", "ambassador_threshold")


@blp.route("/referrals")
def referrals():
    """Campaigns, latest first, each with its stats; the form for a new one."""
    items, next_cursor = attempt(service.campaigns, 50, request.args.get("cursor") or None)
    now = clock.now()
    rows = [(c, service.campaign_stats(c.id), c.starts_at <= now and (c.ends_at is None or c.ends_at > now))
            for c in items]
    return render_template("console/referrals/list.html", rows=rows, next_cursor=next_cursor)


@blp.route("/referrals/new", methods=["GET", "POST"])
@staff_only("marketing")
def new_campaign():
    if request.method == "GET":
        return render_template("console/referrals/form.html", campaign=None, values={}, errors={})
    values = local_times(form_values(CAMPAIGN_FIELDS), TIMES)
    try:
        data = load(CampaignCreateSchema(), values)
        campaign = attempt(service.create_campaign, data, actor())
    except FormErrors as error:
        return render_template("console/referrals/form.html", campaign=None, values=request.form,
                               errors=error.errors, message=error.message), 422
    flash(_("Referral campaign created."), "ok")
    return redirect(url_for("console.referrals", _anchor=f"campaign-{campaign.id}"))


@blp.route("/referrals/<id:campaign_id>", methods=["GET", "POST"])
@staff_only("marketing")
def edit_campaign(campaign_id):
    campaign = service.get_campaign(campaign_id)
    if request.method == "GET":
        return render_template("console/referrals/form.html", campaign=campaign,
                               values=service.campaign_document(campaign), errors={})
    values = nullable(local_times(form_values(CAMPAIGN_FIELDS), TIMES), NULLABLE)
    try:
        changes = load(CampaignFieldsSchema(), values, partial=True)
        attempt(service.update_campaign, campaign_id, changes, actor())
    except FormErrors as error:
        return render_template("console/referrals/form.html", campaign=campaign, values=request.form,
                               errors=error.errors, message=error.message), 422
    flash(_("Referral campaign saved."), "ok")
    return redirect(url_for("console.referrals"))


@blp.route("/referrals/<id:campaign_id>/stop", methods=["POST"])
@staff_only("marketing")
def stop_campaign(campaign_id):
    """Ends the campaign now (PATCH ends_at): referrals already made keep their terms."""
    try:
        attempt(service.update_campaign, campaign_id, {"ends_at": clock.now()}, actor())
    except FormErrors as error:
        flash(error.message, "error")
        return redirect(url_for("console.referrals"))
    flash(_("Referral campaign stopped."), "ok")
    return redirect(url_for("console.referrals"))
