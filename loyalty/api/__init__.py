"""The HTTP API: one flask-smorest Blueprint per resource group under /api/v1."""
import flask_smorest
from flask import Response, current_app
from flask_smorest import Api
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from loyalty import qr

api = Api()


class ExactJSONParser(FlaskParser):
    """webargs parses JSON bodies itself, with floats; ours keeps every number a Decimal."""

    def _raw_load_json(self, req):
        if not is_json_request(req):
            return core.missing
        try:
            return current_app.json.loads(req.get_data(cache=True))
        except ValueError as error:
            return self._handle_invalid_json_error(error, req)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ExactJSONParser()


def register_blueprints(app):
    from loyalty.api import health, members, points, rules

    api.init_app(app)
    for module in (members, points, rules):
        api.register_blueprint(module.blp, url_prefix="/api/v1")
    api.register_blueprint(health.blp)


def qr_response(text, fmt):
    """A QR image answer; cacheable by the client for a short while, private to it."""
    return Response(qr.render(text, fmt), mimetype=qr.MEDIA_TYPES[fmt],
                    headers={"Cache-Control": "private, max-age=300"})


QR_RESPONSES = {
    200: {
        "description": "The QR code image",
        "content": {media: {"schema": {"type": "string", "format": "binary"}}
                    for media in qr.MEDIA_TYPES.values()},
    }
}
