"""Staff use cases: create, list, disable, reset a password, sign in (with lockout), change a password.

Passwords are hashed with argon2id (argon2-cffi's defaults: memory-hard). Five failed sign-ins
in a row lock the account for 15 minutes; while locked, even the right password is refused, and
the password is not checked at all (a locked account tells a guesser nothing)."""
import secrets
from datetime import timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from loyalty import audit, clock
from loyalty.database import transaction
from loyalty.errors import Conflict, LoyaltyError, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.staff.models import StaffMember

ROLES = ("marketing", "admin")
MAX_FAILED_SIGN_INS = 5
LOCK_MINUTES = 15
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 200

# argon2id with argon2-cffi's RFC 9106 low-memory defaults (64 MiB, 3 passes); tests swap in a cheaper one.
HASHER = PasswordHasher()
# Verified against when the email is unknown, so an unknown email costs as long as a wrong password.
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))


class SignInRefused(LoyaltyError):
    status, code = 401, "sign_in_refused"


class AccountLocked(LoyaltyError):
    status, code = 423, "locked"


def actor_of(staff):
    """How the audit log names a staff member: "staff:alice@example.com (marketing)"."""
    return f"staff:{staff.email} ({staff.role})"


def normalise_email(email):
    return (email or "").strip().lower()


def one_time_password():
    return secrets.token_urlsafe(12)


def create_staff(email, role, name=None, actor="cli", now=None):
    """A new staff member with a one-time password: return (staff, password). Shown once."""
    now = now or clock.now()
    email = normalise_email(email)
    if "@" not in email or len(email) > 254 or any(c.isspace() for c in email):
        raise ValidationFailed(f"{email!r} is not an email address.", errors={"email": ["Not an email address."]})
    if role not in ROLES:
        raise ValidationFailed(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.",
                               errors={"role": ["Unknown role."]})
    password = one_time_password()
    with transaction():
        if db.session.scalar(sa.select(StaffMember.id).where(StaffMember.email == email)) is not None:
            raise Conflict(f"A staff member with the email {email} exists already.")
        staff = StaffMember(email=email, name=(name or email.split("@")[0]).strip()[:100], role=role,
                            password_hash=HASHER.hash(password), must_change_password=True,
                            failed_sign_ins=0, password_changed_at=now, created_at=now)
        db.session.add(staff)
        db.session.flush()
        audit.record(actor, "staff.create", "staff", staff.id, None, describe(staff), now)
    return staff, password


def describe(staff):
    return {"email": staff.email, "name": staff.name, "role": staff.role,
            "disabled": staff.disabled_at is not None}


def list_staff():
    return db.session.scalars(sa.select(StaffMember).order_by(StaffMember.id)).all()


def _by_email(email, lock=False):
    query = sa.select(StaffMember).where(StaffMember.email == normalise_email(email))
    staff = db.session.scalar(query.with_for_update() if lock else query)
    if staff is None:
        raise NotFound(f"No staff member with the email {normalise_email(email)}.")
    return staff


def get_staff(staff_id):
    return db.session.get(StaffMember, staff_id)


def disable_staff(email, actor="cli", now=None):
    now = now or clock.now()
    with transaction():
        staff = _by_email(email, lock=True)
        if staff.disabled_at is None:
            before = describe(staff)
            staff.disabled_at = now
            staff.password_changed_at = now  # signs out every session at once
            audit.record(actor, "staff.disable", "staff", staff.id, before, describe(staff), now)
    return staff


def reset_password(email, actor="cli", now=None):
    """A new one-time password (which must be changed at the next sign-in); unlocks and re-enables."""
    now = now or clock.now()
    password = one_time_password()
    with transaction():
        staff = _by_email(email, lock=True)
        before = describe(staff)
        staff.password_hash = HASHER.hash(password)
        staff.must_change_password = True
        staff.failed_sign_ins = 0
        staff.locked_until = None
        staff.disabled_at = None
        staff.password_changed_at = now
        audit.record(actor, "staff.reset_password", "staff", staff.id, before, describe(staff), now)
    return staff, password


def sign_in(email, password, now=None):
    """The staff member whose email and password these are, or SignInRefused / AccountLocked.

    The row is locked while the attempt is judged, so concurrent guesses are each counted."""
    now = now or clock.now()
    refused = SignInRefused("The email or the password is wrong.")
    with transaction():
        staff = db.session.scalar(sa.select(StaffMember).where(StaffMember.email == normalise_email(email))
                                  .with_for_update())
        if staff is None or staff.disabled_at is not None:
            _verify(_DUMMY_HASH, password)
            raise refused
        if staff.locked_until is not None and staff.locked_until > now:
            raise AccountLocked(_locked_message(staff.locked_until, now))
        if not _verify(staff.password_hash, password):
            staff.failed_sign_ins = (staff.failed_sign_ins or 0) + 1
            if staff.failed_sign_ins >= MAX_FAILED_SIGN_INS:
                staff.failed_sign_ins = 0
                staff.locked_until = now + timedelta(minutes=LOCK_MINUTES)
                audit.record(actor_of(staff), "staff.locked", "staff", staff.id, None,
                             {"locked_until": staff.locked_until.isoformat()}, now)
                # Committed, then refused: the lock must survive the refusal.
                locked = AccountLocked(_locked_message(staff.locked_until, now))
            else:
                locked = None
        else:
            staff.failed_sign_ins = 0
            staff.locked_until = None
            staff.last_sign_in_at = now
            return staff
    raise locked or refused


def _locked_message(until, now):
    minutes = max(1, -(-int((until - now).total_seconds()) // 60))
    return (f"Too many wrong passwords: this account is locked for {minutes} more minute"
            f"{'s' if minutes != 1 else ''}. Try again later or ask an admin to reset the password.")


def _verify(password_hash, password):
    try:
        return HASHER.verify(password_hash, password or "")
    except (VerificationError, InvalidHashError):
        return False


def change_password(staff_id, current, new, repeat, now=None):
    """Replace the password (the one-time one included): the current one must be right."""
    now = now or clock.now()
    errors = {}
    if len(new or "") < MIN_PASSWORD_LENGTH:
        errors["new_password"] = [f"Use at least {MIN_PASSWORD_LENGTH} characters."]
    elif len(new) > MAX_PASSWORD_LENGTH:
        errors["new_password"] = [f"Use at most {MAX_PASSWORD_LENGTH} characters."]
    elif new == current:
        errors["new_password"] = ["Choose a password different from the current one."]
    if new != repeat:
        errors["repeat_password"] = ["The two new passwords differ."]
    with transaction():
        staff = db.session.get(StaffMember, staff_id, with_for_update=True)
        if staff is None or staff.disabled_at is not None:
            raise NotFound("This staff account no longer exists or is disabled.")
        if not _verify(staff.password_hash, current):
            errors["current_password"] = ["The current password is wrong."]
        if errors:
            raise ValidationFailed(next(iter(errors.values()))[0], errors=errors)
        staff.password_hash = HASHER.hash(new)
        staff.must_change_password = False
        staff.password_changed_at = now
        audit.record(actor_of(staff), "staff.change_password", "staff", staff.id, None, None, now)
    return staff
