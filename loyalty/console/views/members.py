from flask import flash, redirect, render_template, request, url_for, g
from flask_babel import gettext as _

from loyalty.api.schemas.members import MergeSchema
from loyalty.api.schemas.points import AdjustmentCreateSchema
from loyalty.api.schemas.reports import TagsSchema
from loyalty.api.schemas.tiers import MemberTierSetSchema
from loyalty.console.base import FormErrors, actor, attempt, blp, form_values, load, staff_only
from loyalty.members import merge, privacy
from loyalty.members import service as members_service
from loyalty.points import service as points_service
from loyalty.referrals import service as referrals_service
from loyalty.rewards import service as rewards_service
from loyalty.segments import service as segments_service
from loyalty.tiers import service as tiers_service

HISTORY_PAGE = 20


@blp.route("/members")
def members():
    """Find a member by phone (any spelling), member number, email or card QR token."""
    query = request.args.get("q", "").strip()
    found, message = [], None
    if query:
        try:
            found = attempt(members_service.search, query)
        except FormErrors as error:
            message = error.message
        if len(found) == 1:
            return redirect(url_for("console.member", member_id=found[0].id))
        if not found and message is None:
            message = _("No member matches %(query)s.", query=query)
    return render_template("console/members/search.html", query=query, found=found, message=message)


@blp.route("/members/<id:member_id>")
def member(member_id, errors=None, status=200):
    """A member's page: profile, points and expiry, tier and progress, history (paged),
    redemptions, referrals, tags; the actions their role allows."""
    profile = members_service.get_member(member_id)
    if not errors:  # a refused form shows the page again: the read was recorded on the way in
        privacy.record_read(actor(), g.staff.role, "profile (console member page)", member_id)
    cursor = request.args.get("cursor") or None
    entries, next_cursor = points_service.history(member_id, limit=HISTORY_PAGE, cursor=cursor)
    redemptions, _more = rewards_service.member_redemptions(member_id, limit=20)
    return render_template(
        "console/members/member.html", member=profile, points=points_service.points_summary(member_id),
        tier=tiers_service.member_tier(member_id), entries=entries, next_cursor=next_cursor, cursor=cursor,
        redemptions=redemptions, referral=referrals_service.member_referral(member_id),
        tags=segments_service.member_tags(member_id), tiers=tiers_service.ladder(),
        errors=errors or {}, form=request.form if errors else {}), status


def _back(member_id, message):
    flash(message, "ok")
    return redirect(url_for("console.member", member_id=member_id))


def _refused(member_id, error, form_name):
    """The member's page again, the service's sentence above the form that failed, field
    messages next to their fields."""
    return member(member_id, errors={f"{form_name}.{k}": v for k, v in error.errors.items()} | {form_name: [error.message]},
                  status=422)


@blp.route("/members/<id:member_id>/adjust", methods=["POST"])
@staff_only("admin")
def adjust(member_id):
    try:
        data = load(AdjustmentCreateSchema(), form_values(("points", "reason")))
        attempt(points_service.adjust_points, member_id, data["points"], data["reason"], actor())
    except FormErrors as error:
        return _refused(member_id, error, "adjust")
    return _back(member_id, _("Points adjusted."))


@blp.route("/members/<id:member_id>/tags", methods=["POST"])
@staff_only("marketing")
def tag(member_id):
    values = form_values(("tag", "remove"))
    try:
        data = load(TagsSchema(), {"tags": [values["tag"]] if "tag" in values else []})
        change = segments_service.remove_tags if request.form.get("remove") else segments_service.add_tags
        attempt(change, member_id, data["tags"], actor())
    except FormErrors as error:
        return _refused(member_id, error, "tags")
    return _back(member_id, _("Tags saved."))


@blp.route("/members/<id:member_id>/tier", methods=["POST"])
@staff_only("admin")
def set_tier(member_id):
    try:
        data = load(MemberTierSetSchema(), form_values(("tier", "reason", "guaranteed_until")))
        attempt(tiers_service.set_member_tier, member_id, data["tier"], data["reason"], actor(),
                guaranteed_until=data.get("guaranteed_until"))
    except FormErrors as error:
        return _refused(member_id, error, "tier")
    return _back(member_id, _("Tier set."))


@blp.route("/members/<id:member_id>/merge", methods=["POST"])
@staff_only("admin")
def merge_member(member_id):
    values = form_values(("from_member_id",))
    try:
        if "from_member_id" in values and values["from_member_id"].isascii() and values["from_member_id"].isdigit():
            values["from_member_id"] = int(values["from_member_id"])  # the API's field takes a JSON integer
        data = load(MergeSchema(), values)
        attempt(merge.merge_members, member_id, data["from_member_id"], actor())
    except FormErrors as error:
        return _refused(member_id, error, "merge")
    return _back(member_id, _("Member merged into this one."))
