"""`Idempotency-Key` for every POST: a retry gets the first answer and changes nothing.

The key is claimed (inserted) at the start of the request's transaction and the answer is stored
in the same transaction, so either both the change and its answer are committed or neither is.
A concurrent twin waits on the key's unique index (PostgreSQL) or the write lock (SQLite), then
finds the committed answer and replays it.

A refusal the service decided on the state of things (insufficient points, out of stock, a limit,
a voucher already used...) is an answer too: its change is rolled back, then the refusal alone is
kept for the key, so a duplicate of the request gets the same refusal even if points arrived in
between (a till that was told "not enough points" and took cash must not be charged later by a
retry). A refusal that says nothing about the outcome (malformed input, not found, a concurrent
twin) is not kept: the request may be corrected or sent again.

A points payment's refusal is also kept for its natural key (store + payment number) by the
service, in the request's transaction: that refusal is committed with the key's record rather than
rolled back, so no twin without this key can be charged in between (`recorded` errors).
"""
import hashlib
import json
from functools import wraps

import sqlalchemy as sa
from flask import Response, g, make_response, request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from loyalty import clock
from loyalty.database import BigId, UTCDateTime, transaction
from loyalty.errors import IdempotencyConflict, LoyaltyError, ValidationFailed, handle_loyalty_error
from loyalty.extensions import Model, db

REPLAY_HEADER = "Idempotent-Replayed"
KEPT_REFUSALS = {"insufficient_points", "out_of_stock", "limit_reached", "not_eligible", "voucher_used",
                 "voucher_expired", "voucher_void"}


class IdempotencyRecord(Model):
    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("api_key_id", "key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(sa.BigInteger)
    key: Mapped[str] = mapped_column(sa.String(255))
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[int | None] = mapped_column(sa.Integer)
    body: Mapped[str | None] = mapped_column(sa.Text)
    created_at = mapped_column(UTCDateTime, nullable=False, index=True)


def request_fingerprint():
    """Method, path and body; JSON bodies are compared by content, not by spacing or key order."""
    raw = request.get_data(cache=True)
    try:
        body = json.dumps(json.loads(raw or b"null"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        body = raw.decode("utf-8", "replace")
    text = f"{request.method} {request.path}?{request.query_string.decode()}\n{body}"
    return hashlib.sha256(text.encode()).hexdigest()


def replayed(response):
    """Mark a response as the replay of an earlier answer."""
    response = make_response(response)
    response.headers[REPLAY_HEADER] = "true"
    return response


def idempotent(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(*args, **kwargs)
        key = key.strip()
        if not 1 <= len(key) <= 255:
            raise ValidationFailed("The Idempotency-Key header must be 1 to 255 characters long.")
        fingerprint = request_fingerprint()
        scope = g.principal.idempotency_scope
        stored = _find(scope, key)
        if stored is not None:
            return _replay(stored, fingerprint)
        try:
            with transaction():
                record = IdempotencyRecord(api_key_id=scope, key=key, request_hash=fingerprint,
                                           created_at=clock.now())
                db.session.add(record)
                db.session.flush()  # claim the key now: a twin waits here until we commit
                response = _answer(view, args, kwargs)
                record.status = response.status_code
                record.body = response.get_data(as_text=True)
        except IntegrityError:
            stored = _find(scope, key)
            if stored is None:
                raise
            return _replay(stored, fingerprint)
        except LoyaltyError as error:
            if error.code not in KEPT_REFUSALS:
                raise
            return _keep_refusal(scope, key, fingerprint, handle_loyalty_error(error))
        return response

    return wrapper


def _answer(view, args, kwargs):
    """The view's answer; a refusal the use case `recorded` (kept for its natural key, a payment
    number) is an answer committed with its record, under the locks that decided it: rolled
    back, a twin without this key could be charged before the refusal was written again."""
    try:
        return make_response(view(*args, **kwargs))
    except LoyaltyError as error:
        if error.code in KEPT_REFUSALS and getattr(error, "recorded", False):
            return handle_loyalty_error(error)
        raise


def _keep_refusal(scope, key, fingerprint, response):
    db.session.rollback()
    try:
        with transaction():
            db.session.add(IdempotencyRecord(api_key_id=scope, key=key, request_hash=fingerprint,
                                             status=response.status_code, body=response.get_data(as_text=True),
                                             created_at=clock.now()))
    except IntegrityError:  # a twin got there first: its answer is the one
        stored = _find(scope, key)
        if stored is not None:
            return _replay(stored, fingerprint)
    return response


def _find(scope, key):
    return db.session.execute(_FIND, {"scope": scope, "key": key}).scalar_one_or_none()


# Built once: every POST with a key runs it (see ledger._LOCK_ACCOUNT).
_FIND = (sa.select(IdempotencyRecord)
         .where(IdempotencyRecord.api_key_id == sa.bindparam("scope"), IdempotencyRecord.key == sa.bindparam("key"))
         .execution_options(populate_existing=True))


def _replay(stored, fingerprint):
    if stored.request_hash != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used for a different request; "
            "send a new key with a new request."
        )
    return Response(stored.body, status=stored.status, mimetype="application/json",
                    headers={REPLAY_HEADER: "true"})
