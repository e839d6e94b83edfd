"""API keys, roles, and the decorator views use to declare who may call them.

A key is shown once, at creation; only its SHA-256 is stored (keys are 256-bit random, so a
fast hash is enough and costs nothing per request). Each key has one role; POS keys one store.

A member token (loyalty/members/tokens.py) is the other credential: its role is `member`, and it
may use only the views that say `roles(..., member=True)`, for its own member only: a view whose
path names a member is checked here (another member's id is 404, as if it did not exist); views
that find the member through something else (a redemption, a voucher) pass `owner(principal)` to
their service, which answers 404 for another member's records.
"""
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from functools import wraps

import sqlalchemy as sa
from flask import current_app, g, request
from sqlalchemy.orm import Mapped, mapped_column

from loyalty import audit, clock, settings_cache
from loyalty.database import BEFORE_COMMIT, BigId, PreparedSelect, UTCDateTime, transaction
from loyalty.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from loyalty.extensions import Model, db
from loyalty.members import tokens

ROLES = ("admin", "marketing", "pos", "app")  # the roles of API keys
MEMBER = "member"  # the role of a member token
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

    key_id: int | None  # None for a member token
    name: str
    role: str
    store_id: str | None
    member_id: int | None = None  # a member token's member

    @property
    def actor(self):
        if self.member_id is not None:
            return f"member {self.member_id} (member token)"
        return f"{self.name} (key {self.key_id}, {self.role})"

    @property
    def idempotency_scope(self):
        """Whose Idempotency-Keys these are: a key's id, or a member's (negative: key ids are not)."""
        return -self.member_id if self.member_id is not None else self.key_id


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
    _ROLES_SEEN.remember(key.key_hash, role)  # counted by the rate limiter from its first request here
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
    _ROLES_SEEN.forget(key.key_hash)  # other processes forget it within SECONDS; it is refused at once anyway
    _keys().forget(key.key_hash)  # other processes: the version this revocation bumped (settings_cache)
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


# Built once: a request runs it unless this process checked the key in the last 5 s (_KeyCache). It
# reads the settings version too, so a request learns of a settings change made by any process without
# another round trip (loyalty/settings_cache.py).
# On the driver's connection (database.PreparedSelect): outside a transaction it is one round trip with
# no BEGIN, and a third of the CPU of the session's execute (about 0.1 ms against 0.3).
_ACTIVE_KEY = PreparedSelect(sa.select(ApiKey.id, ApiKey.name, ApiKey.role, ApiKey.store_id, settings_cache.VERSION)
                             .where(ApiKey.key_hash == sa.bindparam("key_hash"), ApiKey.revoked_at.is_(None)))


# A key's revocation bumps the settings version (loyalty/settings_cache.py), as a change of the rules
# does: a request that trusts a key checked a few seconds ago learns of it from the version it reads
# with its data (roles).
settings_cache.watch(ApiKey, "api_keys")


def bearer_credential(header):
    """The credential of an Authorization header ('Bearer <key or token>'), or None."""
    scheme, _, credential = (header or "").partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


def authenticate(header):
    """The Principal for an Authorization header, or Unauthorized."""
    token = bearer_credential(header)
    if token is None:
        raise Unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    if tokens.looks_like_token(token):
        member_id, expiry = tokens.checked_token(token)
        principal = Principal(key_id=None, name=f"member {member_id}", role=MEMBER, store_id=None,
                              member_id=member_id)
        if not settings_cache.changed_here():
            _keys().remember(_TOKEN + token, settings_cache.seen() or 0, principal, until=expiry)
        return principal
    key_hash = hash_key(token)
    row = _ACTIVE_KEY.first(key_hash=key_hash)
    if row is None:
        raise Unauthorized("This API key is unknown or has been revoked; ask an admin for a valid key.")
    settings_cache.observe(row.settings_version)
    _ROLES_SEEN.remember(key_hash, row.role)
    principal = Principal(key_id=row.id, name=row.name, role=row.role, store_id=row.store_id)
    if not settings_cache.changed_here():
        # (A transaction that changed a watched table reads its own, uncommitted version: were it
        # rolled back, a later real change elsewhere could bring the same number. Kept only when read
        # outside such a transaction.)
        _keys().remember(key_hash, row.settings_version or 0, principal)
    return principal


def roles(*allowed, member=False):
    """Let only these roles (and admin, who may do everything) call the view; with `member`, also
    a member token, for its own member: a `member_id` in the path must be the token's.

    A credential this process checked less than _KeyCache.SECONDS ago is trusted without a round
    trip of its own, and confirmed by the settings version (a key revoked or a member's tokens revoked
    anywhere moves it, settings_cache) that the request reads with its data: a version that moved
    means the credential is read again, and a revoked one gets its 401 before anything is answered or
    written (_confirmed).
    - A write is confirmed inside each of its transactions, just before it commits (database.
      BEFORE_COMMIT), by the version that transaction read (a purchase's lock reads it) or, if it read
      none, by reading the credential there; and after the view if nothing was committed (a refusal,
      a replay). A revocation committed before the version was read refuses the write; one committed
      after is as if it came after the write, as when the key was read before the transaction.
    - A read is confirmed once the view has run, by the version its statement read with the data (the
      member, points and tier reads read it), so the confirmation costs nothing more; a view that read
      none reads the credential then.
    A key revoked behind the service's back (an UPDATE in psql) moves no version: it is refused once
    this process's 5 s trust ends."""
    allowed = set(allowed) | {"admin"} | ({MEMBER} if member else set())

    def check(principal, kwargs):
        if principal.role not in allowed:
            what = "member token" if principal.role == MEMBER else f"{principal.role} key"
            raise Forbidden(
                f"{'An' if what[0] in 'aeiou' else 'A'} {what} may not do this; it needs one of: "
                f"{', '.join(sorted(allowed))}."
            )
        if "member_id" in kwargs:
            own_member(principal, kwargs["member_id"])

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            header = request.headers.get("Authorization")
            hit = _keys().get(header)
            if hit is None or hit[1].role not in allowed:
                principal = authenticate(header)
                check(principal, kwargs)
                g.principal = principal
                return view(*args, **kwargs)
            version, principal = hit
            check(principal, kwargs)
            g.principal = principal
            settings_cache.renew()
            return _confirmed(view, args, kwargs, header, version)

        return wrapper

    return decorator


def _confirmed(view, args, kwargs, header, version):
    """Run the view on a credential trusted from _KeyCache: confirmed just before each transaction of
    the view commits (database.BEFORE_COMMIT; a read that writes, such as a staff read's audit line,
    too), else once the view has run, even if it failed (a revoked key's 401 comes first, even before
    a 404)."""
    session = db.session()
    confirmed = []

    def before_commit():
        confirmed.append(True)  # set first: a refusal here is the answer, not to be asked again
        _confirm(header, version)

    session.info[BEFORE_COMMIT] = before_commit
    try:
        answer = view(*args, **kwargs)
    except Exception:
        if not confirmed:
            _confirm(header, version)
        raise
    finally:
        session.info.pop(BEFORE_COMMIT, None)
    if not confirmed:
        _confirm(header, version)
    return answer


def _confirm(header, version):
    """The cached credential still stands if the settings version this session read is the one it
    was checked under; otherwise read it again (Unauthorized if it is revoked)."""
    if settings_cache.seen() != version:
        authenticate(header)


def owner(principal):
    """The member whose records alone this caller may see (a member token's), or None for keys."""
    return principal.member_id


def own_member(principal, member_id):
    """The member a request is about: a member token may name only its own (another id is a 404,
    so that a token does not reveal which members exist); a key may name any."""
    if principal.member_id is None:
        return member_id
    if member_id is None:
        return principal.member_id
    if member_id != principal.member_id:
        raise NotFound(f"No member with id {member_id}.")
    return member_id


class _RoleCache:
    """Key hash -> role of the keys this process has seen authenticate lately (each use renews
    the entry): the rate limiter picks a key's limit from it before any database work. Only ever
    a limit's choice: whether the key is still valid is decided by authenticate(), every time."""

    SECONDS = 600

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.roles: dict[str, tuple[float, str]] = {}

    def remember(self, key_hash, role):
        with self.lock:
            if len(self.roles) > 10_000:
                self.roles.clear()
            self.roles[key_hash] = (time.monotonic(), role)

    def forget(self, key_hash):
        with self.lock:
            self.roles.pop(key_hash, None)

    def role(self, key_hash):
        hit = self.roles.get(key_hash)
        return hit[1] if hit is not None and time.monotonic() - hit[0] < self.SECONDS else None


_ROLES_SEEN = _RoleCache()


class _KeyCache:
    """Credential -> (when checked, the settings version read with it, Principal, a token's expiry as
    a Unix time or None for a key): what a request (roles) may trust for SECONDS without reading the
    credential again. API
    keys by their hash; member tokens by themselves (until their expiry). A key revoked in this
    process is forgotten at once; any other change that must refuse a cached credential (a key
    revoked elsewhere, a member's tokens revoked, a member closed or erased) moves the settings
    version, which the request sees with its data (_confirm)."""

    SECONDS = 5.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[str, tuple[float, int, Principal, int | None]] = {}

    def remember(self, name, version, principal, until=None):
        with self.lock:
            if len(self.keys) > 10_000:
                self.keys.clear()
            self.keys[name] = (time.monotonic(), version, principal, until)

    def forget(self, name):
        with self.lock:
            self.keys.pop(name, None)

    def get(self, header):
        """(version, Principal) of the credential in the header if checked less than SECONDS ago
        (and, a token, not expired since), else None."""
        credential = bearer_credential(header)
        if credential is None:
            return None
        if tokens.looks_like_token(credential):
            hit = self.keys.get(_TOKEN + credential)
            if hit is not None and hit[3] is not None and hit[3] <= time.time():
                return None  # expired since: checked again, it gets its 401
        else:
            hit = self.keys.get(hash_key(credential))
        if hit is None or time.monotonic() - hit[0] >= self.SECONDS:
            return None
        return hit[1], hit[2]


_TOKEN = "token:"  # a member token's entry in _KeyCache (key hashes are hex)
def _keys() -> _KeyCache:
    """This app's cache (per app, not per process: apps with other databases or token secrets, as
    tests build side by side, must not trust each other's credentials)."""
    return current_app.extensions.setdefault("loyalty.key_cache", _KeyCache())


def rate_limit_identity(header):
    """(bucket, role) of the credential in an Authorization header, for the rate limiter, without
    the database; None when it is not one we know. A member token is known by its signature and
    counted per member; an API key by its hash, if this process has seen it authenticate in the
    last ten minutes (a key's first request after a quiet spell is not counted: the limiter does
    not read the database for keys, so a flood of guesses costs no query once its address is
    refused; it reads it only for the stored token secret until the first token is issued).
    Neither the key nor the token is in the bucket's name."""
    credential = bearer_credential(header)
    if credential is None:
        return None
    if tokens.looks_like_token(credential):
        # A token this app checked in full (signature, expiry, revocation) in the last few seconds is
        # known by that check: verifying its signature again was 34 µs of a 0.5 ms member read.
        hit = _keys().get(header)
        if hit is not None:
            return f"member:{hit[1].member_id}", MEMBER
        signed = tokens.signed_member(credential)
        return None if signed is None else (f"member:{signed[0]}", MEMBER)
    key_hash = hash_key(credential)
    role = _ROLES_SEEN.role(key_hash)
    return None if role is None else (f"key:{key_hash[:32]}", role)


def known_without_database(header):
    """Whether the credential is one we issued, judged without the database (a member token's
    signature, or an API key this process has seen lately): such a caller is not a guesser, and
    the failed-authentication limit of its address does not stop it."""
    credential = bearer_credential(header)
    if credential is None:
        return False
    if tokens.looks_like_token(credential):
        return tokens.signed_member(credential) is not None
    return _ROLES_SEEN.role(hash_key(credential)) is not None


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
