from flask import g
from flask.views import MethodView

from loyalty.api.base import Blueprint
from loyalty.api.schemas.bulk_awards import BulkAwardCreateSchema, BulkAwardSchema
from loyalty.auth import roles
from loyalty.bulk_awards import service

blp = Blueprint("bulk_awards", __name__, description="Bulk awards: points to every member of a segment")


@blp.route("/bulk-awards")
class BulkAwards(MethodView):
    @roles("marketing")
    @blp.idempotent
    @blp.arguments(BulkAwardCreateSchema())
    @blp.response(202, BulkAwardSchema)
    def post(self, data):
        """Queue points for every member of a segment as it is now (the `bulk_awards.run` job credits
        them within a minute, each once; idempotent on `award_no`; audit-logged)"""
        return service.queue_award(service.Order(**data), g.principal.actor)


@blp.route("/bulk-awards/<id:award_id>")
class BulkAwardById(MethodView):
    @roles("marketing")
    @blp.response(200, BulkAwardSchema)
    def get(self, award_id):
        """A bulk award's status and totals so far"""
        return service.get_award(award_id)
