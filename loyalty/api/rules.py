from flask import g
from flask.views import MethodView

from loyalty.api.schemas.points import EarningRulesSchema
from loyalty.auth import roles
from loyalty.points import service
from loyalty.points.rules import EarningRules

from loyalty.api.base import Blueprint

blp = Blueprint("earning-rules", __name__, description="How points are earned, held, expired and spent")


@blp.route("/earning-rules")
class EarningRulesView(MethodView):
    @roles("app", "pos", "marketing")
    @blp.response(200, EarningRulesSchema)
    def get(self):
        """The earning rules in force"""
        return service.current_rules().to_document()

    @roles("marketing")
    @blp.arguments(EarningRulesSchema())
    @blp.response(200, EarningRulesSchema)
    def put(self, data):
        """Replace the earning rules (audit-logged with before and after)"""
        rules = EarningRules.from_document(data)
        return service.update_rules(rules, g.principal.actor).to_document()
