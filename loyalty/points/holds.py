"""Points holds at the till: authorise (reserve points), then capture (a points payment) or
release. A hold past its expiry is released by the next write on its member (ledger.lock_account)
and by the `points.release_holds` job (points/jobs.py). Idempotent on (store_id, hold_no)."""
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from loyalty import clock
from loyalty.config import settings
from loyalty.database import transaction
from loyalty.errors import (Conflict, Forbidden, HoldClosed, HoldExpired, InsufficientPoints, NotFound,
                            ValidationFailed)
from loyalty.extensions import db
from loyalty.members.lookup import member_or_404
from loyalty.outcome import Outcome
from loyalty.points import ledger
from loyalty.points import rules as rules_mod
from loyalty.points import service as points_service
from loyalty.points.models import Account, HoldRefusal, PointsHold, PointsPayment
from loyalty.points.settings import current_rules

DEFAULT_TTL_SECONDS = 900
MAX_TTL_SECONDS = 86_400


def place_hold(member_id: int, store_id: str, hold_no: str, points: Decimal, ttl_seconds: int | None = None,
               api_key_id: int | None = None, now: datetime | None = None) -> Outcome:
    """Reserve points for a till; `insufficient_points` when the member has too few available.

    A refusal is an answer too, kept for the store and hold number like a refused points payment
    (points/service.py pay_with_points): the same hold sent again is refused again, even if points
    have arrived since (the till took cash; a retry must not reserve the member's points). The
    number with another member or other points, held or refused, is a `conflict`."""
    now = now or clock.now()
    ttl = DEFAULT_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    if not 1 <= ttl <= MAX_TTL_SECONDS:
        raise ValidationFailed(f"A hold lasts 1 to {MAX_TTL_SECONDS} seconds; choose a shorter ttl_seconds.",
                               errors={"ttl_seconds": [f"Must be between 1 and {MAX_TTL_SECONDS}."]})
    _check_payable(points)
    refused = None
    with transaction():
        existing = _hold_by_number(store_id, hold_no)
        if existing is None:
            account = ledger.lock_account(member_id, now)
            existing = _hold_by_number(store_id, hold_no)
        if existing is not None:
            _check_same_hold(existing, member_id, points)
            return Outcome(existing, member_or_404(existing.member_id), replayed=True)
        refusal = _refusal_by_number(store_id, hold_no)
        if refusal is None and account.available < points:
            refusal = _keep_refusal(account, store_id, hold_no, points, now)
        if refusal is not None:
            _check_same_hold(refusal, member_id, points)
            refused = points_service.refusal_error(refusal)
        else:
            row = PointsHold(member_id=member_id, store_id=store_id, hold_no=hold_no, points=points,
                             captured_points=ledger.ZERO, status="held", expires_at=now + timedelta(seconds=ttl),
                             api_key_id=api_key_id, created_at=now)
            db.session.add(row)
            db.session.flush()
            ledger.hold(account, row, now)
    if refused is not None:
        raise refused  # after the commit (or inside a caller's transaction, which keeps it)
    return Outcome(row, account.member)


def _check_same_hold(recorded: PointsHold | HoldRefusal, member_id: int, points: Decimal) -> None:
    if (recorded.member_id, recorded.points) != (member_id, points):
        raise Conflict(f"Hold {recorded.hold_no} of store {recorded.store_id} was already "
                       f"{'refused' if isinstance(recorded, HoldRefusal) else 'placed'} with a different "
                       "member or points; use a new hold number.")


def _keep_refusal(account: Account, store_id: str, hold_no: str, points: Decimal,
                  now: datetime) -> HoldRefusal | None:
    """Record the refusal of a hold (the account is locked); a twin's record if it got there first."""
    available = max(account.available, ledger.ZERO)
    refusal = points_service.insert_new(HoldRefusal, dict(
        member_id=account.member_id, store_id=store_id, hold_no=hold_no, points=points, available=available,
        error=InsufficientPoints.code, message=f"The member has {available} points available; {points} are needed.",
        created_at=now), (HoldRefusal.store_id, HoldRefusal.hold_no))
    return refusal or _refusal_by_number(store_id, hold_no)


def capture_hold(hold_id: int, store_id: str | None, payment_no: str, points: Decimal | None = None,
                 api_key_id: int | None = None, now: datetime | None = None) -> Outcome:
    """Turn all or part of a hold into a points payment (the same record as POST /points-payments,
    reversible the same way); the rest of the hold is released."""
    now = now or clock.now()
    currency = settings().currency
    with transaction():
        account, row = _locked(_own_hold(hold_id, store_id), now)  # may expire this very hold
        if row.status == "captured":
            payment = db.session.get_one(PointsPayment, row.payment_id)
            if payment.payment_no == payment_no and (points is None or points == payment.points):
                return Outcome(payment, account.member, replayed=True)
            raise HoldClosed(f"Hold {row.hold_no} was captured already (payment {payment.payment_no}); "
                             "place a new hold.")
        _check_open(row)
        points = row.points if points is None else points
        if points > row.points:
            raise ValidationFailed(f"The hold reserves {row.points} points; capture at most that many.",
                                   errors={"points": [f"Must be at most {row.points}."]})
        value = _check_payable(points)
        if db.session.scalar(sa.select(PointsPayment.id).where(
                PointsPayment.store_id == row.store_id, PointsPayment.payment_no == payment_no)) is not None:
            raise Conflict(f"Payment {payment_no} of store {row.store_id} was already recorded; "
                           "use a new payment number.")
        payment = PointsPayment(member_id=row.member_id, store_id=row.store_id, payment_no=payment_no,
                                points=points, money_amount=value, currency=currency, status="completed",
                                api_key_id=api_key_id, created_at=now)
        db.session.add(payment)
        db.session.flush()
        payment.entry = ledger.capture_hold(
            account, row, points,
            f"Paid {value} {currency} at store {row.store_id} (payment {payment_no}, hold {row.hold_no})",
            ("payment", payment.id), now)
        row.payment_id = payment.id
    return Outcome(payment, account.member)


def release_hold(hold_id: int, store_id: str | None, now: datetime | None = None) -> Outcome:
    """Give a hold's points back to the member. Releasing a released hold is a replay."""
    now = now or clock.now()
    with transaction():
        account, row = _locked(_own_hold(hold_id, store_id), now)
        if row.status == "released":
            return Outcome(row, account.member, replayed=True)
        _check_open(row)
        ledger.release_hold(account, row, "released", now)
    return Outcome(row, account.member)


def get_hold(hold_id: int, store_id: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The hold; one past its expiry reads `expired` even before anything has released it."""
    now = now or clock.now()
    row = _own_hold(hold_id, store_id)
    return {"hold_id": row.id, "hold_no": row.hold_no, "store_id": row.store_id, "member_id": row.member_id,
            "status": hold_status(row, now), "points": row.points, "captured_points": row.captured_points,
            "expires_at": row.expires_at, "payment_id": row.payment_id}


def hold_status(row: PointsHold, now: datetime) -> str:
    return "expired" if row.status == "held" and row.expires_at <= now else row.status


def _own_hold(hold_id: int, store_id: str | None) -> PointsHold:
    row = db.session.get(PointsHold, hold_id)
    if row is None:
        raise NotFound(f"No points hold with id {hold_id}.")
    if store_id is not None and row.store_id != store_id:
        raise Forbidden(f"Hold {hold_id} was placed at another store; only that store's tills can use it.")
    return row


def _locked(row: PointsHold, now: datetime) -> tuple[Account, PointsHold]:
    """The hold's member's account, locked, and the hold as it is now. A merge that committed while
    this waited may have moved the hold to the surviving member: then that member is locked (the
    closed one is never written again, so no one waits the other way round)."""
    account = ledger.lock_account(row.member_id, now)
    row = _reload(row)
    while row.member_id != account.member_id:
        account = ledger.lock_account(row.member_id, now)
        row = _reload(row)
    return account, row


def _reload(row: PointsHold) -> PointsHold:
    """The hold as it is now that its member is locked (a twin may have closed it meanwhile)."""
    return db.session.scalars(sa.select(PointsHold).where(PointsHold.id == row.id)
                              .execution_options(populate_existing=True)).one()


def _check_open(row: PointsHold) -> None:
    if row.status == "expired":
        raise HoldExpired(f"Hold {row.hold_no} expired at {row.expires_at.isoformat()} and its points went "
                          "back to the member; place a new hold.")
    if row.status != "held":
        raise HoldClosed(f"Hold {row.hold_no} is {row.status} already; place a new hold.")


def _check_payable(points: Decimal) -> Decimal:
    """Held points are paid as money: in whole cents. Returns their money value."""
    rules = current_rules()
    value = rules_mod.payment_money_value(points, rules)
    if value is None or value <= 0:
        step = f"{(rules.payment_points_per_unit / 100).normalize():f}"
        raise ValidationFailed(
            f"Points pay in whole cents: {rules.payment_points_per_unit.normalize():f} points are 1 "
            f"{settings().currency}, so hold and capture a multiple of {step} points.",
            errors={"points": [f"Must be a multiple of {step}."]})
    return value


def _hold_by_number(store_id: str, hold_no: str) -> PointsHold | None:
    return db.session.scalar(sa.select(PointsHold).where(
        PointsHold.store_id == store_id, PointsHold.hold_no == hold_no))


def _refusal_by_number(store_id: str, hold_no: str) -> HoldRefusal | None:
    return db.session.scalar(sa.select(HoldRefusal).where(
        HoldRefusal.store_id == store_id, HoldRefusal.hold_no == hold_no).execution_options(populate_existing=True))
