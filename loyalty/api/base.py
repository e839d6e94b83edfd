"""What every resource group's blueprint shares: the API object, the exact-JSON parser, the edge
checks, the id converter, idempotency and QR answers. Below the resource modules, so they import
it and the package imports them, one way."""
import re
from urllib.parse import unquote_to_bytes

import flask_smorest
import marshmallow as ma
from flask import Response, abort, g, request
from flask_smorest import Api
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.routing import IntegerConverter

from loyalty import idempotency, qr
from loyalty.api.schemas.common import MAX_ID, ErrorSchema
from loyalty.json import MalformedBody, loads_request


class LoyaltyApi(Api):
    ERROR_SCHEMA = ErrorSchema  # document the error body we send, not flask-smorest's own


api = LoyaltyApi()


class ExactJSONParser(FlaskParser):
    """webargs parses JSON bodies itself, with floats; ours keeps every number a Decimal.

    A body that is not JSON is refused (415) rather than read as missing, so a client sending
    form data learns why instead of being told every field is missing; a typo in a query
    parameter (`?typ=`) is refused rather than silently ignored."""

    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
                                   "query": ma.RAISE, "querystring": ma.RAISE}

    def _raw_load_json(self, req):
        if not req.get_data(cache=True):
            return core.missing
        return g.request_json  # read and checked by refuse_malformed_input, before any view

    def _handle_invalid_json_error(self, error, req, *args, **kwargs):
        abort(400, f"The body is not valid JSON ({error}); send a JSON object with the documented fields.")


_QUERY_PARTS = re.compile(rb"[&=]")


def refuse_malformed_input():
    """Every request, before authentication and any view (app.before_request): what no operation can
    take is refused here, once, rather than field by field. The address, the query string and the
    headers must be valid UTF-8 (no lone surrogates) without NUL characters; a body must be JSON
    (415) that loyalty.json.loads_request accepts (400: no duplicate keys, NULs, lone surrogates,
    deep nesting or absurd numbers). PostgreSQL refuses a NUL in text, and nothing of ours means one."""
    environ = request.environ
    _check_text(_wsgi_bytes(environ.get("PATH_INFO", "")), "The address")
    query = environ.get("QUERY_STRING")
    if query:
        for part in _QUERY_PARTS.split(_wsgi_bytes(query)):
            _check_text(unquote_to_bytes(part.replace(b"+", b" ")), "The query string")
    if any("\x00" in value for value in environ.values() if type(value) is str):  # headers are among them
        for name, value in request.headers.items():
            if "\x00" in value:
                abort(400, f"The {name} header has a NUL character; send it without.")
    if request.blueprint == "console":
        # The console's pages post HTML forms: their values must be free of NULs like the rest.
        for name, value in request.form.items(multi=True):
            if "\x00" in value or "\x00" in name:
                abort(400, "A form field has a NUL character; send it without.")
        return
    raw = request.get_data(cache=True)
    if not raw:
        return
    if not is_json_request(request):
        abort(415)
    try:
        g.request_json = loads_request(raw)
    except MalformedBody as error:
        abort(400, str(error))


def _wsgi_bytes(text):
    """WSGI hands the address and query over as bytes decoded as latin-1: the bytes again."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # a server that decoded them already
        return text.encode("utf-8", "surrogatepass")


def _check_text(raw, what):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        abort(400, f"{what} is not valid UTF-8 (percent-encoded bytes must spell UTF-8 text, "
                   "without lone surrogates).")
    if "\x00" in text:
        abort(400, f"{what} has a NUL character (%00); send it without.")


IDEMPOTENCY_KEY = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Any unique string. Sending the same key and body again returns the first answer "
                   f"(with `{idempotency.REPLAY_HEADER}: true`) and changes nothing; the same key with "
                   "another body is 409 idempotency_conflict.",
}


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ExactJSONParser()

    def idempotent(self, view):
        """Accept an `Idempotency-Key` on this view (loyalty.idempotency), and document it."""
        return self.doc(parameters=[IDEMPOTENCY_KEY])(idempotency.idempotent(view))


class IdConverter(IntegerConverter):
    """`<id:member_id>`: a record id, 1 to 2**63 - 1, in ASCII digits; anything else (`/members/１`,
    `/members/+1`) is a 404, not a database error."""

    regex = r"[0-9]+"  # werkzeug's is \d+, which matches every script's digits

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=MAX_ID)


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
