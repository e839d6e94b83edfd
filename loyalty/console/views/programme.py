"""The programme's settings marketing edits: the tier ladder and the earning rules."""
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from loyalty.api.schemas.points import EarningRulesSchema
from loyalty.api.schemas.tiers import TierSchema
from loyalty.console.base import FormErrors, actor, attempt, blp, form_values, load, staff_only
from loyalty.points import service as points_service
from loyalty.points.rules import EXPIRY_POLICIES, EarningRules
from loyalty.tiers import service as tiers_service
from loyalty.tiers.rules import MODES

TIER_FIELDS = ("name", "qualification.spend", "qualification.activities", "qualification.mode",
               "benefits.earn_multiplier", "benefits.birthday_points", "benefits.service_level", "benefits.perks")


@blp.route("/tiers")
def tiers():
    return render_template("console/tiers.html", tiers=[tiers_service.tier_document(t) for t in tiers_service.read_ladder()],
                           modes=MODES, errors={}, failed=None)


@blp.route("/tiers/<string(maxlength=20):code>", methods=["POST"])
@staff_only("marketing")
def update_tier(code):
    """The same checks as PUT /tiers/{code}: an out-of-order ladder is refused, and the message
    stands next to the field that breaks the order."""
    values = form_values(TIER_FIELDS)
    document = {"name": values.get("name"), "qualification": {}, "benefits": {}}
    for key, value in values.items():
        group, _dot, field = key.partition(".")
        if field:
            document[group][field] = value
    document["benefits"]["perks"] = [p.strip() for p in values.get("benefits.perks", "").split(",") if p.strip()]
    document["benefits"].setdefault("service_level", "")
    try:
        data = load(TierSchema(), {k: v for k, v in document.items() if v is not None})
        attempt(tiers_service.update_tier, code, data["name"], data["qualification"], data["benefits"], actor())
    except FormErrors as error:
        ladder = [tiers_service.tier_document(t) for t in tiers_service.read_ladder()]
        return render_template("console/tiers.html", tiers=ladder, modes=MODES, errors=_by_field(error.errors),
                               message=error.message, failed=code, form=request.form), 422
    flash(_("Tier saved."), "ok")
    return redirect(url_for("console.tiers"))


# The ladder's problems (loyalty/tiers/rules.validate_ladder) are sentences about the whole ladder;
# each is shown next to the field of the edited tier it is about.
_LADDER_FIELDS = (("multiplier", "benefits.earn_multiplier"), ("birthday", "benefits.birthday_points"),
                  ("mode", "qualification.mode"), ("threshold", "qualification.spend"),
                  ("spend", "qualification.spend"), ("rank", "name"))


def _by_field(errors):
    placed = {key: list(value) for key, value in errors.items() if key != "tier"}
    for problem in errors.get("tier", []):
        field = next((name for word, name in _LADDER_FIELDS if word in problem), "name")
        placed.setdefault(field, []).append(problem)
    return placed


@blp.route("/earning-rules")
def earning_rules():
    return render_template("console/earning_rules.html", rules=points_service.current_rules().to_document(),
                           policies=EXPIRY_POLICIES, errors={})


RULE_FIELDS = ("points_per_unit", "min_amount", "pending_days", "expiry_policy", "expiry_days",
               "payment_points_per_unit", "excluded_categories", "excluded_skus")


@blp.route("/earning-rules", methods=["POST"])
@staff_only("marketing")
def update_earning_rules():
    """The scalar rules and the excluded codes from the form; the activity types as they are."""
    document = points_service.current_rules().to_document()
    values = form_values(RULE_FIELDS)
    for name in RULE_FIELDS:
        if name.startswith("excluded_"):
            document[name] = [c.strip() for c in values.get(name, "").split(",") if c.strip()]
        elif name in values:
            document[name] = values[name]
        else:
            document.pop(name, None)
    try:
        data = load(EarningRulesSchema(), document)
        attempt(points_service.update_rules, EarningRules.from_document(data), actor())
    except FormErrors as error:
        shown = {**document, **{k: request.form.get(k, "") for k in RULE_FIELDS}}
        return render_template("console/earning_rules.html", rules=shown, policies=EXPIRY_POLICIES,
                               errors=error.errors, message=error.message), 422
    flash(_("Earning rules saved."), "ok")
    return redirect(url_for("console.earning_rules"))
