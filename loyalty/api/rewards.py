from flask import g
from flask.views import MethodView

from loyalty.api.base import QR_RESPONSES, Blueprint, qr_response
from loyalty.api.schemas.rewards import (CatalogQuerySchema, CatalogSchema, RedemptionCreateSchema,
                                         RedemptionPageSchema, RedemptionQuerySchema, RedemptionResultSchema,
                                         RewardCreateSchema, RewardFieldsSchema, RewardSchema, VoucherSchema,
                                         VoucherUseSchema)
from loyalty.auth import own_member, owner, roles, store_for
from loyalty.errors import Forbidden
from loyalty.idempotency import REPLAY_HEADER
from loyalty.rewards import service

blp = Blueprint("rewards", __name__, description="Rewards: the catalog, redemptions and vouchers")

VOUCHER_CODE = "<string(minlength=4, maxlength=40):code>"


def answer(outcome):
    record = outcome.record
    return (record, {REPLAY_HEADER: "true"}) if outcome.replayed else record


@blp.route("/rewards")
class Rewards(MethodView):
    @roles("app", "pos", "marketing", member=True)
    @blp.arguments(CatalogQuerySchema(), location="query")
    @blp.response(200, CatalogSchema)
    def get(self, query):
        """The rewards on offer now; with `member_id`, whether that member can redeem each and why not
        (a member token: always its own member)"""
        if query["include_inactive"] and g.principal.role not in ("marketing", "admin"):
            raise Forbidden("Only marketing sees rewards that are not on offer.")
        items = service.catalog(own_member(g.principal, query.get("member_id")), query["include_inactive"])
        return {"items": [{**service.reward_fields(item["reward"]),
                           **{k: v for k, v in item.items() if k != "reward"}} for item in items]}

    @roles("marketing")
    @blp.idempotent
    @blp.arguments(RewardCreateSchema())
    @blp.response(201, RewardSchema)
    def post(self, data):
        """Add a reward to the catalog (audit-logged)"""
        return service.create_reward(data, g.principal.actor)


@blp.route("/rewards/<id:reward_id>")
class RewardById(MethodView):
    @roles("app", "pos", "marketing")
    @blp.response(200, RewardSchema)
    def get(self, reward_id):
        """One reward"""
        return service.get_reward(reward_id)

    @roles("marketing")
    @blp.arguments(RewardFieldsSchema())
    @blp.response(200, RewardSchema)
    def patch(self, changes, reward_id):
        """Change a reward: price, stock, limits, dates, on or off (audit-logged)"""
        return service.update_reward(reward_id, changes, g.principal.actor)


@blp.route("/members/<id:member_id>/redemptions")
class MemberRedemptions(MethodView):
    @roles("app", member=True)
    @blp.idempotent
    @blp.arguments(RedemptionCreateSchema())
    @blp.response(201, RedemptionResultSchema)
    def post(self, data, member_id):
        """Spend points on a reward: one voucher per unit (send an Idempotency-Key: a retry redeems once)"""
        return answer(service.redeem(member_id, data["reward_id"], data["quantity"], actor=g.principal.actor))

    @roles("app", member=True)
    @blp.arguments(RedemptionQuerySchema(), location="query")
    @blp.response(200, RedemptionPageSchema)
    def get(self, query, member_id):
        """The member's redemptions and their vouchers, newest first"""
        items, next_cursor = service.member_redemptions(member_id, query["limit"], query.get("cursor"))
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/redemptions/<id:redemption_id>/cancel")
class RedemptionCancel(MethodView):
    @roles("app", member=True)
    @blp.idempotent
    @blp.response(200, RedemptionResultSchema)
    def post(self, redemption_id):
        """Cancel: unused vouchers become void and their points come back (used ones stay used)"""
        return answer(service.cancel_redemption(redemption_id, g.principal.actor, owner=owner(g.principal)))


@blp.route(f"/vouchers/{VOUCHER_CODE}")
class VoucherByCode(MethodView):
    @roles("pos", "app", member=True)
    @blp.response(200, VoucherSchema)
    def get(self, code):
        """A voucher: its reward and whether it can be used (issued, used, expired, void)"""
        return service.get_voucher(code, owner=owner(g.principal))


@blp.route(f"/vouchers/{VOUCHER_CODE}/use")
class VoucherUse(MethodView):
    @roles("pos")
    @blp.idempotent
    @blp.arguments(VoucherUseSchema())
    @blp.response(200, VoucherSchema)
    def post(self, data, code):
        """Accept a voucher at the till: once, ever (`409 voucher_used`, `voucher_expired`, `voucher_void`)"""
        return service.use_voucher(code, store_for(g.principal, data.get("store_id")),
                                   api_key_id=g.principal.key_id)


@blp.route(f"/vouchers/{VOUCHER_CODE}/qr.png", endpoint="VoucherQrPng", defaults={"fmt": "png"})
@blp.route(f"/vouchers/{VOUCHER_CODE}/qr.svg", endpoint="VoucherQrSvg", defaults={"fmt": "svg"})
class VoucherQr(MethodView):
    @roles("app", member=True)
    @blp.doc(responses=QR_RESPONSES)
    def get(self, code, fmt):
        """The voucher's QR code: its code, which a till scans and sends to `POST /vouchers/{code}/use`"""
        return qr_response(service.get_voucher(code, owner=owner(g.principal)).code, fmt)
