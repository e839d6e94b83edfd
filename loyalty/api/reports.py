import re

from flask import Response, g, stream_with_context
from flask.views import MethodView

from loyalty import audit
from loyalty.api.base import Blueprint
from loyalty.api.schemas.reports import (AuditPageSchema, AuditQuerySchema, LiabilitySchema, OverviewSchema,
                                         SegmentPageSchema, SegmentQuerySchema, StoreDaySchema, TagsSchema)
from loyalty.auth import roles, store_for
from loyalty.cursors import decode_cursor, encode_cursor
from loyalty.members import privacy
from loyalty.members.lookup import member_or_404
from loyalty.points.store_day import store_day
from loyalty.segments import service

blp = Blueprint("reports", __name__, description="Marketing: segments, tags, reports; the audit log")


@blp.route("/segments/<string(maxlength=80):name>/members")
class SegmentMembers(MethodView):
    @roles("marketing")
    @blp.arguments(SegmentQuerySchema(), location="query")
    @blp.response(200, SegmentPageSchema, content_type="application/json")
    @blp.alt_response(200, success=True, content_type="text/csv", description="With ?format=csv",
                      schema={"type": "string"})
    def get(self, query, name):
        """Members of a segment: a lifecycle stage, a value segment, `tier:<code>` or `tag:<tag>`"""
        if query["format"] == "csv":
            rows = service.csv_rows(name)
            first = next(rows)  # an unknown segment fails here, as a 404, before anything is sent
            privacy.record_read(g.principal.actor, g.principal.role, f"segment {name} csv")
            return Response(stream_with_context(_chain(first, rows)), mimetype="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{_file_name(name)}.csv"'})
        after = decode_cursor(query["cursor"]) if query.get("cursor") else None
        members, figures, last = service.segment_page(name, query["limit"], after)
        privacy.record_read(g.principal.actor, g.principal.role, f"segment {name}", [m.id for m in members])
        items = []
        for member in members:
            spend, last_purchase = figures.get(member.id, (None, None))
            items.append({"id": member.id, "member_no": member.member_no, "name": member.name,
                          "phone": service.mask_phone(member.phone), "tier": member.tier_code,
                          "lifecycle_stage": member.lifecycle_stage, "value_segment": member.value_segment,
                          "available_points": member.account.available, "spend_12_months": spend or 0,
                          "last_purchase_at": last_purchase})
        return {"items": items, "next_cursor": encode_cursor(last) if last else None}


@blp.route("/reports/stores/<string(maxlength=40):store_id>/days/<string(maxlength=40):date>")
class StoreDay(MethodView):
    @roles("pos", "marketing")
    @blp.response(200, StoreDaySchema)
    def get(self, store_id, date):
        """The store's local day for the shift reconciliation, in total and by till key (a POS key: its own store)"""
        store = store_for(g.principal, store_id) if g.principal.role == "pos" else store_id
        return store_day(store, date)


def _file_name(name):
    """The segment's name as a safe file name: letters, digits, - _ . only."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def _chain(first, rest):
    yield first
    yield from rest


@blp.route("/members/<id:member_id>/tags")
class MemberTags(MethodView):
    @roles("marketing")
    @blp.response(200, TagsSchema)
    def get(self, member_id):
        """The member's tags"""
        member_or_404(member_id)
        return {"tags": service.member_tags(member_id)}

    @roles("marketing")
    @blp.idempotent
    @blp.arguments(TagsSchema())
    @blp.response(200, TagsSchema)
    def post(self, data, member_id):
        """Put tags on a member (already there: no change)"""
        return {"tags": service.add_tags(member_id, data["tags"], g.principal.actor)}

    @roles("marketing")
    @blp.arguments(TagsSchema())
    @blp.response(200, TagsSchema)
    def delete(self, data, member_id):
        """Take tags off a member"""
        return {"tags": service.remove_tags(member_id, data["tags"], g.principal.actor)}


@blp.route("/reports/overview")
class Overview(MethodView):
    @roles("marketing")
    @blp.response(200, OverviewSchema)
    def get(self):
        """Members by tier, stage and segment; the points liability; the last 30 days; referrals"""
        return service.overview()


@blp.route("/reports/liability")
class Liability(MethodView):
    @roles("marketing")
    @blp.response(200, LiabilitySchema)
    def get(self):
        """Outstanding points by the month they expire in"""
        return service.liability()


@blp.route("/audit-log")
class AuditLog(MethodView):
    @roles("admin")
    @blp.arguments(AuditQuerySchema(), location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, query):
        """Every change by marketing and admin: who, what, before, after, when; newest first"""
        cursor = query.pop("cursor", None)
        limit = query.pop("limit")
        items, last = audit.entries(**query, limit=limit, before_id=decode_cursor(cursor) if cursor else None)
        return {"items": items, "next_cursor": encode_cursor(last) if last else None}
