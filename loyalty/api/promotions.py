from flask import g
from flask.views import MethodView

from loyalty.api.base import IDEMPOTENCY_KEY, Blueprint
from loyalty.api.schemas.promotions import (PromotionCreateSchema, PromotionFieldsSchema, PromotionListQuerySchema,
                                           PromotionListSchema, PromotionSchema, PromotionStatsSchema,
                                           SimulateResultSchema, SimulateSchema)
from loyalty.auth import own_member, roles, store_for
from loyalty.errors import Forbidden
from loyalty.points.service import quote_purchase
from loyalty.promotions import service

blp = Blueprint("promotions", __name__, description="Promotions: points campaigns on top of the earning rules")


@blp.route("/promotions")
class Promotions(MethodView):
    @roles("marketing")
    @blp.arguments(PromotionListQuerySchema(), location="query")
    @blp.response(200, PromotionListSchema)
    def get(self, query):
        """The promotions, newest first, by status; paginated by cursor"""
        items, next_cursor = service.promotions(query.get("status"), query["limit"], query.get("cursor"))
        return {"items": items, "next_cursor": next_cursor}

    @roles("marketing")
    @blp.idempotent
    @blp.arguments(PromotionCreateSchema())
    @blp.response(201, PromotionSchema)
    def post(self, data):
        """Create a promotion, draft or active (audit-logged)"""
        return service.create_promotion(data, g.principal.actor)


@blp.route("/promotions/<id:promotion_id>")
class PromotionById(MethodView):
    @roles("marketing")
    @blp.response(200, PromotionSchema)
    def get(self, promotion_id):
        """A promotion"""
        return service.get_promotion(promotion_id)

    @roles("marketing")
    @blp.arguments(PromotionFieldsSchema())
    @blp.response(200, PromotionSchema)
    def patch(self, changes, promotion_id):
        """Change a promotion; purchases after the change see it (audit-logged)"""
        return service.update_promotion(promotion_id, changes, g.principal.actor)


@blp.route("/promotions/<id:promotion_id>/stop")
class PromotionStop(MethodView):
    @roles("marketing")
    @blp.idempotent
    @blp.response(200, PromotionSchema)
    def post(self, promotion_id):
        """Stop a promotion for good (audit-logged)"""
        return service.stop_promotion(promotion_id, g.principal.actor)


@blp.route("/promotions/<id:promotion_id>/stats")
class PromotionStats(MethodView):
    @roles("marketing")
    @blp.response(200, PromotionStatsSchema)
    def get(self, promotion_id):
        """Purchases, members, points granted and clawed back, qualifying spend, budget left"""
        return service.promotion_stats(promotion_id)


@blp.route("/promotions/simulate")
class PromotionSimulate(MethodView):
    @roles("marketing", "pos", "app", member=True)
    @blp.doc(parameters=[IDEMPOTENCY_KEY])  # accepted, and needs no record: a simulation writes nothing
    @blp.arguments(SimulateSchema())
    @blp.response(200, SimulateResultSchema)
    def post(self, data):
        """What a basket would earn, line by line, as a purchase would credit it; writes nothing"""
        include_drafts = data.pop("include_drafts")
        if include_drafts and g.principal.role not in ("marketing", "admin"):
            raise Forbidden("Only marketing and admin keys may simulate draft promotions; leave out include_drafts.")
        store = store_for(g.principal, data.pop("store_id", None))
        member_id = own_member(g.principal, data.pop("member_id", None))  # a member token: for itself
        return quote_purchase(member_id, store, include_drafts=include_drafts, **data)
