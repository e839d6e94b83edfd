from flask import g
from flask.views import MethodView

from loyalty.api.base import Blueprint
from loyalty.api.points import answer
from loyalty.api.schemas.holds import (HoldCaptureSchema, HoldCreateSchema, HoldReleasedSchema,
                                       HoldResultSchema, HoldSchema)
from loyalty.api.schemas.points import PaymentResultSchema
from loyalty.auth import roles, store_for
from loyalty.members.service import member_id_for
from loyalty.points import holds

blp = Blueprint("holds", __name__, description="Points holds at the till: reserve, then capture or release")


def own_store():
    return g.principal.store_id if g.principal.role == "pos" else None


@blp.route("/points-holds")
class PointsHolds(MethodView):
    @roles("pos")
    @blp.idempotent
    @blp.arguments(HoldCreateSchema())
    @blp.response(201, HoldResultSchema)
    def post(self, data):
        """Reserve points for a till (409 insufficient_points when the member has too few)"""
        return answer(holds.place_hold(
            member_id_for(data.pop("member_id", None), data.pop("card", None)),
            store_for(g.principal, data.pop("store_id", None)), data["hold_no"], data["points"],
            data.get("ttl_seconds"), api_key_id=g.principal.key_id))


@blp.route("/points-holds/<id:hold_id>")
class PointsHold(MethodView):
    @roles("pos")
    @blp.response(200, HoldSchema)
    def get(self, hold_id):
        """A hold and what became of it"""
        return holds.get_hold(hold_id, own_store())


@blp.route("/points-holds/<id:hold_id>/capture")
class PointsHoldCapture(MethodView):
    @roles("pos")
    @blp.idempotent
    @blp.arguments(HoldCaptureSchema())
    @blp.response(201, PaymentResultSchema)
    def post(self, data, hold_id):
        """Pay with all or part of the held points; the rest goes back (409 hold_expired / hold_closed)"""
        return answer(holds.capture_hold(hold_id, own_store(), data["payment_no"], data.get("points"),
                                         api_key_id=g.principal.key_id))


@blp.route("/points-holds/<id:hold_id>/release")
class PointsHoldRelease(MethodView):
    @roles("pos")
    @blp.idempotent
    @blp.response(200, HoldReleasedSchema)
    def post(self, hold_id):
        """Give the held points back to the member"""
        return answer(holds.release_hold(hold_id, own_store()))
