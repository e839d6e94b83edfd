from flask import g
from flask.views import MethodView

from loyalty.api.schemas.points import (ActivityCreateSchema, ActivityResultSchema,
                                        AdjustmentCreateSchema, BatchCreateSchema, BatchResultsSchema, EntryPageSchema, EntrySchema,
                                        HistoryQuerySchema, PaymentCreateSchema, PaymentResultSchema,
                                        PointsSummarySchema, PurchaseCreateSchema, PurchaseResultSchema,
                                        RefundCreateSchema, RefundResultSchema)
from loyalty.auth import roles, store_for
from loyalty.idempotency import REPLAY_HEADER
from loyalty.members.service import member_id_for
from loyalty.points import batch, service

from loyalty.api.base import Blueprint

blp = Blueprint("points", __name__, description="The points ledger: earning, refunds, payments, history")


def answer(outcome):
    """A write's answer; a natural-key replay says so in a header, with the first result."""
    return (outcome, {REPLAY_HEADER: "true"}) if outcome.replayed else outcome


@blp.route("/purchases")
class Purchases(MethodView):
    @roles("pos")
    @blp.idempotent
    @blp.arguments(PurchaseCreateSchema())
    @blp.response(201, PurchaseResultSchema)
    def post(self, data):
        """Credit a purchase's points (a repeated store + receipt is a replay)"""
        return answer(service.credit_purchase(
            member_id_for(data.pop("member_id", None), data.pop("card", None)),
            store_for(g.principal, data.pop("store_id", None)), **data, api_key_id=g.principal.key_id))


@blp.route("/purchases/batch")
class PurchaseBatches(MethodView):
    @roles("pos")
    @blp.idempotent
    @blp.arguments(BatchCreateSchema())
    @blp.response(200, BatchResultsSchema)
    def post(self, data):
        """Upload an offline till's purchases (1 to 500), each once by store + receipt, answered in order"""
        return {"results": batch.credit_batch(store_for(g.principal, data.get("store_id")), data["purchases"],
                                              api_key_id=g.principal.key_id)}


@blp.route("/purchases/<id:purchase_id>/refunds")
class PurchaseRefunds(MethodView):
    @roles("pos")
    @blp.idempotent
    @blp.arguments(RefundCreateSchema())
    @blp.response(201, RefundResultSchema)
    def post(self, data, purchase_id):
        """Refund a purchase and claw back its points pro rata"""
        store = g.principal.store_id if g.principal.role == "pos" else None
        return answer(service.refund_purchase(purchase_id, store, **data, api_key_id=g.principal.key_id))


@blp.route("/members/<id:member_id>/activities")
class MemberActivities(MethodView):
    @roles("app")
    @blp.idempotent
    @blp.arguments(ActivityCreateSchema())
    @blp.response(201, ActivityResultSchema)
    def post(self, data, member_id):
        """Record a behaviour activity (sign-in, share, review...) within its cap"""
        return answer(service.record_activity(member_id, data["type"], data["event_id"],
                                              data.get("occurred_at")))


@blp.route("/members/<id:member_id>/adjustments")
class MemberAdjustments(MethodView):
    @roles("admin")
    @blp.idempotent
    @blp.arguments(AdjustmentCreateSchema())
    @blp.response(201, EntrySchema)
    def post(self, data, member_id):
        """Add or remove points by hand, with a reason (audit-logged)"""
        return service.adjust_points(member_id, data["points"], data["reason"], g.principal.actor)


@blp.route("/members/<id:member_id>/points")
class MemberPoints(MethodView):
    @roles("app", "pos", "marketing", member=True)
    @blp.response(200, PointsSummarySchema)
    def get(self, member_id):
        """Points available and pending, and what expires when"""
        return service.points_summary(member_id)


@blp.route("/members/<id:member_id>/points/history")
class MemberPointsHistory(MethodView):
    @roles("app", "pos", "marketing", member=True)
    @blp.arguments(HistoryQuerySchema(), location="query")
    @blp.response(200, EntryPageSchema)
    def get(self, query, member_id):
        """Ledger entries, newest first, paginated by cursor"""
        items, next_cursor = service.history(member_id, query.get("type"), query["limit"],
                                             query.get("cursor"))
        return {"items": items, "next_cursor": next_cursor}


@blp.route("/points-payments")
class PointsPayments(MethodView):
    @roles("pos")
    @blp.idempotent
    @blp.arguments(PaymentCreateSchema())
    @blp.response(201, PaymentResultSchema)
    def post(self, data):
        """Pay with points at the till (409 insufficient_points when the member has too few)"""
        return answer(service.pay_with_points(
            member_id_for(data.pop("member_id", None), data.pop("card", None)),
            store_for(g.principal, data.pop("store_id", None)), data["payment_no"], data["points"],
            api_key_id=g.principal.key_id))


@blp.route("/points-payments/<id:payment_id>/reversal")
class PointsPaymentReversal(MethodView):
    @roles("pos")
    @blp.idempotent
    @blp.response(201, PaymentResultSchema)
    def post(self, payment_id):
        """Reverse a points payment: the points return to the lots they came from"""
        store = g.principal.store_id if g.principal.role == "pos" else None
        return answer(service.reverse_payment(payment_id, store, api_key_id=g.principal.key_id))
