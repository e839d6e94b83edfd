from flask import g
from flask.views import MethodView

from loyalty.api.base import QR_RESPONSES, Blueprint, qr_response
from loyalty.api.schemas.common import ListQuerySchema
from loyalty.api.schemas.members import MemberSchema
from loyalty.api.schemas.referrals import (ApplyCodeSchema, CampaignCreateSchema, CampaignFieldsSchema,
                                           CampaignListSchema, CampaignSchema, CampaignStatsSchema,
                                           MemberReferralSchema)
from loyalty.auth import roles
from loyalty.referrals import service

blp = Blueprint("referrals", __name__, description="Referral campaigns, codes, links and ambassadors")


@blp.route("/referral-campaigns")
class Campaigns(MethodView):
    @roles("marketing")
    @blp.arguments(ListQuerySchema(), location="query")
    @blp.response(200, CampaignListSchema)
    def get(self, query):
        """The campaigns, latest start first; paginated by cursor"""
        items, next_cursor = service.campaigns(query["limit"], query.get("cursor"))
        return {"items": items, "next_cursor": next_cursor}

    @roles("marketing")
    @blp.idempotent
    @blp.arguments(CampaignCreateSchema())
    @blp.response(201, CampaignSchema)
    def post(self, data):
        """Start a campaign (one runs at a time; audit-logged)"""
        return service.create_campaign(data, g.principal.actor)


@blp.route("/referral-campaigns/<id:campaign_id>")
class CampaignById(MethodView):
    @roles("marketing")
    @blp.response(200, CampaignSchema)
    def get(self, campaign_id):
        """A campaign"""
        return service.get_campaign(campaign_id)

    @roles("marketing")
    @blp.arguments(CampaignFieldsSchema())
    @blp.response(200, CampaignSchema)
    def patch(self, changes, campaign_id):
        """Change a campaign (referrals already made keep their terms; audit-logged)"""
        return service.update_campaign(campaign_id, changes, g.principal.actor)


@blp.route("/referral-campaigns/<id:campaign_id>/stats")
class CampaignStats(MethodView):
    @roles("marketing")
    @blp.response(200, CampaignStatsSchema)
    def get(self, campaign_id):
        """Invited, qualified, rewarded, expired, points granted, conversion rate"""
        return service.campaign_stats(campaign_id)


@blp.route("/members/<id:member_id>/referral")
class MemberReferral(MethodView):
    @roles("app", member=True)
    @blp.response(200, MemberReferralSchema)
    def get(self, member_id):
        """The member's referral code and link, how many they invited and qualified, ambassador or not"""
        return service.member_referral(member_id)

    @roles("app")
    @blp.arguments(ApplyCodeSchema())
    @blp.response(200, MemberSchema)
    def put(self, data, member_id):
        """Enter the referral code a new member was given (before their first purchase)"""
        return service.apply_code(member_id, data["referral_code"])


@blp.route("/members/<id:member_id>/referral/qr.png", endpoint="ReferralQrPng", defaults={"fmt": "png"})
@blp.route("/members/<id:member_id>/referral/qr.svg", endpoint="ReferralQrSvg", defaults={"fmt": "svg"})
class MemberReferralQr(MethodView):
    @roles("app", member=True)
    @blp.doc(responses=QR_RESPONSES)
    def get(self, member_id, fmt):
        """The QR code of the member's referral link"""
        return qr_response(service.member_referral(member_id)["link"], fmt)
