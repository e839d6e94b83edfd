from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from loyalty.api.schemas.rewards import RewardCreateSchema, RewardFieldsSchema
from loyalty.console.base import FormErrors, actor, attempt, blp, form_values, load, local_times, nullable, staff_only
from loyalty.rewards import service
from loyalty.rewards.models import KINDS, LIMIT_PERIODS
from loyalty.tiers import service as tiers_service

FIELDS = ("name", "description", "kind", "cash_value", "points_cost", "stock", "per_member_limit", "limit_period",
          "min_tier", "valid_from", "valid_until", "voucher_valid_days", "active", "image_url")
TIMES = ("valid_from", "valid_until")
NULLABLE = ("cash_value", "stock", "per_member_limit", "min_tier", "valid_from", "valid_until", "image_url")


@blp.route("/rewards")
def rewards():
    """The catalog, on offer or not, with stock."""
    items = service.catalog(include_inactive=True)
    return render_template("console/rewards/list.html", items=[item["reward"] for item in items])


def _form(reward, values, errors, message=None, status=200):
    return render_template("console/rewards/form.html", reward=reward, values=values, errors=errors,
                           message=message, kinds=KINDS, periods=LIMIT_PERIODS, tiers=tiers_service.ladder()), status


@blp.route("/rewards/new", methods=["GET", "POST"])
@staff_only("marketing")
def new_reward():
    if request.method == "GET":
        return _form(None, {"active": True}, {})
    values = local_times(form_values(FIELDS), TIMES)
    values["active"] = "active" in request.form
    try:
        data = load(RewardCreateSchema(), values)
        attempt(service.create_reward, data, actor())
    except FormErrors as error:
        return _form(None, request.form, error.errors, error.message, 422)
    flash(_("Reward added to the catalog."), "ok")
    return redirect(url_for("console.rewards"))


@blp.route("/rewards/<id:reward_id>", methods=["GET", "POST"])
@staff_only("marketing")
def edit_reward(reward_id):
    reward = service.get_reward(reward_id)
    if request.method == "GET":
        return _form(reward, service.reward_fields(reward), {})
    values = nullable(local_times(form_values(FIELDS), TIMES), NULLABLE)
    values["active"] = "active" in request.form
    try:
        changes = load(RewardFieldsSchema(), values, partial=True)
        attempt(service.update_reward, reward_id, changes, actor())
    except FormErrors as error:
        return _form(reward, request.form, error.errors, error.message, 422)
    flash(_("Reward saved."), "ok")
    return redirect(url_for("console.rewards"))
