from flask import render_template
from flask_babel import gettext as _

from loyalty.console.base import blp
from loyalty.promotions import service as promotions_service
from loyalty.segments import service as reports
from loyalty.tiers import service as tiers_service


@blp.route("/")
def dashboard():
    """Members by tier and stage, earned vs burned per day, the liability by expiry month, points
    expiring in 30 days, the running referral campaign's funnel: charts and their numbers."""
    overview = reports.overview()
    liability = reports.liability()
    flows = reports.daily_flows(30)
    names = {tier.code: tier.name for tier in tiers_service.ladder()}
    # The charts' labels in the page's language; the numbers as exact strings (JSON has no decimals).
    charts = {
        "labels": {"earned": _("Earned"), "burned": _("Burned")},
        "tiers": [[names.get(code, code), count] for code, count in overview["members"]["by_tier"].items()],
        "stages": [[_(stage), count] for stage, count in overview["members"]["by_lifecycle_stage"].items()],
        "flows": [[day["day"], str(day["earned"]), str(day["burned"])] for day in flows],
        "liability": [[item["month"], str(item["points"])] for item in liability["items"]],
    }
    return render_template("console/dashboard.html", overview=overview, liability=liability, flows=flows,
                           charts=charts, promotions=promotions_service.running_promotions())

