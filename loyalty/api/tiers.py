from flask import g
from flask.views import MethodView

from loyalty.api.base import Blueprint
from loyalty.api.schemas.tiers import MemberTierSchema, MemberTierSetSchema, TierSchema
from loyalty.auth import roles
from loyalty.tiers import service

blp = Blueprint("tiers", __name__, description="Membership tiers: the ladder and each member's place on it")


@blp.route("/tiers")
class Tiers(MethodView):
    @roles("app", "pos", "marketing")
    @blp.response(200, TierSchema(many=True))
    def get(self):
        """The tiers, lowest rank first, with their qualification and benefits (a plain list: there are few)"""
        return [service.tier_document(tier) for tier in service.ladder()]


@blp.route("/tiers/<string(maxlength=20):code>")
class TierByCode(MethodView):
    @roles("marketing")
    @blp.arguments(TierSchema())
    @blp.response(200, TierSchema)
    def put(self, data, code):
        """Change a tier's name, qualification and benefits (the ladder must stay in order; audit-logged)"""
        tier = service.update_tier(code, data["name"], data["qualification"], data["benefits"],
                                   g.principal.actor)
        return service.tier_document(tier)


@blp.route("/members/<id:member_id>/tier")
class MemberTier(MethodView):
    @roles("app", "pos", "marketing", member=True)
    @blp.response(200, MemberTierSchema)
    def get(self, member_id):
        """A member's tier: since when, until when at least, progress, what is needed, history"""
        return service.member_tier(member_id)

    @roles("admin")
    @blp.arguments(MemberTierSetSchema())
    @blp.response(200, MemberTierSchema)
    def put(self, data, member_id):
        """Put a member in a tier by hand, with a reason and an optional guarantee (audit-logged)"""
        service.set_member_tier(member_id, data["tier"], data["reason"], g.principal.actor,
                                guaranteed_until=data.get("guaranteed_until"))
        return service.member_tier(member_id)
