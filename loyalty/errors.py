"""Typed errors that know their HTTP status, and the one handler that renders every error.

Every error body is `{"code", "status", "error", "message", "errors"?}` (API.md).
"""
import logging
from http import HTTPStatus

from flask import jsonify
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class LoyaltyError(Exception):
    """A failure a client can act on. Subclasses fix the status and the machine code."""

    status = 400
    code = "bad_request"
    headers: dict[str, str] = {}
    # A refusal kept for its natural key, to be committed, not rolled back (loyalty/idempotency.py).
    recorded = False

    def __init__(self, message, errors=None, **extra):
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.extra = extra


class ValidationFailed(LoyaltyError):
    status, code = 422, "validation_error"


class Unauthorized(LoyaltyError):
    status, code = 401, "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="loyalty"'}  # RFC 9110: a 401 names its scheme


class Forbidden(LoyaltyError):
    status, code = 403, "forbidden"


class NotFound(LoyaltyError):
    status, code = 404, "not_found"


class Conflict(LoyaltyError):
    status, code = 409, "conflict"


class IdempotencyConflict(LoyaltyError):
    status, code = 409, "idempotency_conflict"


class InsufficientPoints(LoyaltyError):
    status, code = 409, "insufficient_points"


class OutOfStock(LoyaltyError):
    status, code = 409, "out_of_stock"


class LimitReached(LoyaltyError):
    status, code = 409, "limit_reached"


class NotEligible(LoyaltyError):
    status, code = 409, "not_eligible"


class VoucherUsed(LoyaltyError):
    status, code = 409, "voucher_used"


class VoucherExpired(LoyaltyError):
    status, code = 409, "voucher_expired"


class HoldExpired(LoyaltyError):
    status, code = 409, "hold_expired"


class HoldClosed(LoyaltyError):
    status, code = 409, "hold_closed"


# Machine codes for errors raised by Flask/werkzeug itself (routing, bad JSON, ...).
HTTP_CODES = {
    400: ("bad_request", "The request could not be read; send a JSON body with the documented fields."),
    401: ("unauthorized", "Send a valid API key as 'Authorization: Bearer <key>'."),
    403: ("forbidden", "Your API key's role may not do this."),
    404: ("not_found", "Nothing exists at this address; check the path and the id."),
    405: ("method_not_allowed", "This address does not accept that HTTP method."),
    409: ("conflict", "The request conflicts with the current state; read it again and retry."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as JSON with 'Content-Type: application/json'."),
    422: ("validation_error", "Some fields are missing or invalid; see 'errors' for each one."),
    503: ("unavailable", "The service cannot reach its database; try again shortly."),
}


def error_response(status, code, message, errors=None, **extra):
    body = {"code": status, "status": HTTPStatus(status).phrase, "error": code, "message": message}
    if errors:
        body["errors"] = errors
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    return response


def handle_loyalty_error(error):
    response = error_response(error.status, error.code, error.message, error.errors, **error.extra)
    response.headers.extend(error.headers)
    return response


def handle_http_exception(error):
    """Werkzeug's errors, and webargs' validation errors (422, which carry `data.messages`)."""
    status = error.code or 500
    code, message = HTTP_CODES.get(status, ("error", error.description or "Request failed."))
    if error.description and error.description != type(error).description:
        message = error.description  # a sentence of ours: abort(415, "...")
    errors = None
    data = getattr(error, "data", None) or {}
    messages = data.get("messages") if status == 422 else None
    if messages:
        # webargs nests field errors by location (json, query, headers): flatten to field -> list.
        errors = {}
        for location_errors in messages.values():
            errors.update(location_errors if isinstance(location_errors, dict) else {"_schema": location_errors})
        if "_schema" in errors and len(errors) == 1:
            message = "; ".join(str(m) for m in errors["_schema"])
    if isinstance(data.get("message"), str):
        message = data["message"]
    response = error_response(status, code, message, errors)
    for name, value in error.get_headers():  # e.g. the Allow header of a 405
        if name.lower() != "content-type":
            response.headers[name] = value
    for name, value in (data.get("headers") or {}).items():
        response.headers[name] = value
    return response


def handle_integrity_error(error):
    """A unique key won by a concurrent twin: the client should retry, and will get a replay."""
    # The constraint's name, never the message: PostgreSQL's repeats the clashing values.
    diag = getattr(error.orig, "diag", None)
    log.info("integrity error turned into 409: %s", getattr(diag, "constraint_name", None) or type(error.orig).__name__)
    return error_response(
        409, "conflict", "A concurrent request changed the same record; send this request again."
    )


def handle_operational_error(error):
    log.error("database unavailable: %s: %s", type(error.orig).__name__, str(error.orig).split("\n")[0][:200])
    return error_response(503, "unavailable", HTTP_CODES[503][1])


def handle_unexpected_error(error):
    log.exception("unhandled error")
    return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")


def register_error_handlers(app):
    app.register_error_handler(LoyaltyError, handle_loyalty_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    app.register_error_handler(OperationalError, handle_operational_error)
    app.register_error_handler(Exception, handle_unexpected_error)


class VoucherVoid(LoyaltyError):
    status, code = 409, "voucher_void"
