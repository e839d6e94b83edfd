import sqlalchemy as sa
from flask.views import MethodView
from marshmallow import fields

from loyalty.errors import error_response
from loyalty.extensions import db

from loyalty.api.base import Blueprint
from loyalty.api.schemas.common import Schema

blp = Blueprint("health", __name__, description="Liveness and database reachability")


class HealthSchema(Schema):
    status = fields.String()
    database = fields.String()


@blp.route("/healthz")
class Health(MethodView):
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    def get(self):
        """Is the service up and its database reachable? (no auth; 503 when not)"""
        try:
            db.session.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            db.session.rollback()
            return error_response(503, "unavailable", "The database is unreachable.",
                                  database="unreachable")
        return {"status": "ok", "database": "ok"}
