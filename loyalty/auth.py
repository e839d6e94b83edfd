"""API keys, roles, and the decorator views use to declare who may call them.

A key is shown once, at creation; only its SHA-256 is stored (keys are 256-bit random, so a
fast hash is enough and costs nothing per request). Each key has one role; POS keys one store.
"""
import hashlib
import secrets
from dataclasses import dataclass
from functools import wraps

import sqlalchemy as sa
from flask import g, request
from sqlalchemy.orm import Mapped, mapped_column

from loyalty import audit, clock, settings_cache
from loyalty.database import BigId, UTCDateTime, transaction
from loyalty.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from loyalty.extensions import Model, db

ROLES = ("admin", "marketing", "pos", "app")
KEY_PREFIX = "lk_"


class ApiKey(Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    role: Mapped[str] = mapped_column(sa.String(20))
    store_id: Mapped[str | None] = mapped_column(sa.String(40))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    key_hint: Mapped[str] = mapped_column(sa.String(16))
    created_at = mapped_column(UTCDateTime, nullable=False)
    revoked_at = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Principal:
    """Who is calling: plain values, safe to keep after the request's transaction ends."""

    key_id: int
    name: str
    role: str
    store_id: str | None

    @property
    def actor(self):
        return f"{self.name} (key {self.key_id}, {self.role})"


def hash_key(plaintext):
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_key(role, name=None, store_id=None, actor="cli", now=None):
    """Create a key; return (ApiKey, plaintext). The plaintext is not kept anywhere."""
    now = now or clock.now()
    if role not in ROLES:
        raise ValidationFailed(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    if role == "pos" and not store_id:
        raise ValidationFailed("A POS key acts for one store: give its store id (--store).")
    if role != "pos" and store_id:
        raise ValidationFailed("Only POS keys are bound to a store; leave out the store for this role.")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction():
        key = ApiKey(name=name or f"{role} key", role=role, store_id=store_id,
                     key_hash=hash_key(plaintext), key_hint=plaintext[:8], created_at=now)
        db.session.add(key)
        db.session.flush()
        audit.record(actor, "api_key.create", "api_key", key.id, None, describe(key), now)
    return key, plaintext


def revoke_key(key_id, actor="cli", now=None):
    now = now or clock.now()
    with transaction():
        key = db.session.get(ApiKey, key_id, with_for_update=True)
        if key is None:
            raise NotFound(f"No API key with id {key_id}.")
        if key.revoked_at is None:
            before = describe(key)
            key.revoked_at = now
            audit.record(actor, "api_key.revoke", "api_key", key.id, before, describe(key), now)
    return key


def list_keys():
    return db.session.scalars(sa.select(ApiKey).order_by(ApiKey.id)).all()


def has_active_admin_key():
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(ApiKey)
        .where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
    ) > 0


def describe(key):
    return {"id": key.id, "name": key.name, "role": key.role, "store_id": key.store_id,
            "key_hint": key.key_hint, "revoked": key.revoked_at is not None}


# Built once: every request runs it (see ledger._LOCK_ACCOUNT). It reads the settings version too, so
# a request learns of a settings change made by any process without another round trip
# (loyalty/settings_cache.py).
_ACTIVE_KEY = (sa.select(ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.store_id, settings_cache.VERSION)
               .where(ApiKey.key_hash == sa.bindparam("key_hash"), ApiKey.revoked_at.is_(None)))


def authenticate(header):
    """The Principal for an Authorization header, or Unauthorized."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    row = db.session.execute(_ACTIVE_KEY, {"key_hash": hash_key(token.strip())}).first()
    if row is None:
        raise Unauthorized("This API key is unknown or has been revoked; ask an admin for a valid key.")
    settings_cache.observe(row.settings_version)
    return Principal(key_id=row.id, name=row.name, role=row.role, store_id=row.store_id)


def roles(*allowed):
    """Let only these roles (and admin, who may do everything) call the view."""
    allowed = set(allowed) | {"admin"}

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            principal = authenticate(request.headers.get("Authorization"))
            if principal.role not in allowed:
                raise Forbidden(
                    f"{'An' if principal.role[0] in 'aeiou' else 'A'} {principal.role} key may not do this; it needs one of: "
                    f"{', '.join(sorted(allowed))}."
                )
            g.principal = principal
            return view(*args, **kwargs)

        return wrapper

    return decorator


def current_principal():
    return g.principal


def store_for(principal, requested_store_id):
    """The store a POS request acts for: always the key's own. Admin must name one."""
    if principal.role == "pos":
        if requested_store_id not in (None, principal.store_id):
            raise Forbidden(
                f"This POS key belongs to store {principal.store_id!r} and cannot act for "
                f"store {requested_store_id!r}."
            )
        return principal.store_id
    if not requested_store_id:
        raise ValidationFailed("Name the store this is for.", errors={"store_id": ["Missing data for required field."]})
    return requested_store_id
