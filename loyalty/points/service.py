"""The ledger's use cases: each one validates, locks the member's account, writes, commits.

Every write has a natural key (store + receipt, purchase + refund number, member + activity
event, store + payment number); repeating one returns the first result with `replayed=True`.
"""
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql, sqlite

from loyalty import audit, clock, settings_cache
from loyalty.cursors import decode_cursor, encode_cursor
from loyalty.config import settings
from loyalty.database import Points, PreparedSelect, UTCDateTime, transaction
from loyalty.errors import (
    Conflict,
    Forbidden,
    InsufficientPoints,
    NotFound,
    ValidationFailed,
)
from loyalty.extensions import db
from loyalty.members.lookup import member_or_404
from loyalty.members.models import Member
from loyalty.outcome import Outcome
from loyalty.points import ledger, plain_purchase
from loyalty.points import rules as rules_mod
from loyalty.points.models import (
    Account,
    Activity,
    EarningRulesRow,
    Entry,
    HoldRefusal,
    Lot,
    PaymentRefusal,
    PointsHold,
    PointsPayment,
    Purchase,
    Refund,
)
from loyalty.points.rules import EarningRules
from loyalty.points.settings import current_rules
from loyalty.promotions import service as promotions
from loyalty.promotions.rules import Award
from loyalty.referrals import service as referrals
from loyalty.tiers import service as tiers
from loyalty.webhooks import service as webhooks

ZERO = Decimal("0.00")
ENTRY_TYPES = ("earn_purchase", "earn_activity", "bonus", "redeem", "payment", "reverse", "expire", "adjust",
               "import")  # import: an opening balance brought from a previous system (loyalty import members)
CLOCK_SKEW = timedelta(minutes=5)  # how far in the future a till's clock may run
ACTIVITY_BACKDATE_LIMIT = timedelta(days=7)
Items = Sequence[Mapping[str, Any]]  # a purchase's items: {"sku", "category", "amount"}
Row = TypeVar("Row")



# --- earning rules ------------------------------------------------------------------------------

def seed_rules(now: datetime | None = None) -> None:
    """Store the default rules if none are stored yet. Safe to run on every start."""
    now = now or clock.now()
    with transaction():
        if db.session.get(EarningRulesRow, 1) is None:
            db.session.add(EarningRulesRow(id=1, settings=EarningRules().to_document(), version=1,
                                           updated_at=now))


def update_rules(new_rules: EarningRules, actor: str, now: datetime | None = None) -> EarningRules:
    """Replace the earning rules; the change is audit-logged with before and after."""
    now = now or clock.now()
    with transaction():
        row = db.session.get(EarningRulesRow, 1, with_for_update=True)
        before = None if row is None else row.settings
        after = new_rules.to_document()
        if row is None:
            row = EarningRulesRow(id=1, settings=after, version=1, updated_at=now)
            db.session.add(row)
        else:
            row.settings, row.version, row.updated_at = after, row.version + 1, now
        audit.record(actor, "earning_rules.update", "earning_rules", 1, before, after, now)
    return new_rules


# --- purchases and refunds ----------------------------------------------------------------------

def credit_purchase(member_id: int, store_id: str, receipt_no: str, amount: Decimal, currency: str | None = None,
                    occurred_at: datetime | None = None, items: Items | None = None, channel: str | None = None,
                    now: datetime | None = None, api_key_id: int | None = None) -> Outcome:
    """Record a purchase and credit its points (pending for the return window, if one is set): the
    earning rules' base points with the tier's multiplier, one `bonus` entry per promotion that
    applies, and a referral's welcome reward. `purchase.breakdown` lists them line by line."""
    now = now or clock.now()
    home_currency, tz = settings().currency, settings().timezone
    currency = (currency or home_currency).upper()
    occurred_at = clock.as_utc(occurred_at) if occurred_at else now
    if currency != home_currency:
        raise ValidationFailed(f"This programme earns on {home_currency} only; convert the amount first.",
                               errors={"currency": [f"Must be {home_currency}."]})
    if occurred_at > now + CLOCK_SKEW:
        raise ValidationFailed("The purchase time is in the future; check the till's clock.",
                               errors={"occurred_at": ["Must not be in the future."]})
    _check_positive(amount, "A purchase")
    _check_items(amount, items)
    with transaction():
        # A retry racing its first attempt waits here for the account's lock, then finds the receipt.
        # On PostgreSQL the lock reads the account and member as plain values (plain_purchase.lock);
        # should the purchase not be plain, or something be due on the account, the ORM's objects
        # are loaded after it (the row locked already).
        # Its first statement: it reads the settings version too, which the cached settings (and a
        # cached API key, auth.roles) answer to.
        locked = plain_purchase.lock(member_id, now)
        account: Account | plain_purchase.LockedAccount
        tags: frozenset[str] | None
        if locked is not None:
            account, tags = locked
        elif promotions.needs_tags(store_id, channel, occurred_at):
            account, tags = ledger.lock_account_and_tags(member_id, now)
        else:
            account, tags = ledger.lock_account(member_id, now), None
        rules = current_rules()
        eligible, base, points = _earning(amount, items, rules, account.member)
        available_at = max(rules_mod.available_at(occurred_at, rules), now) \
            if rules.pending_days else now
        expires_at = rules_mod.expires_at(available_at, occurred_at, rules, tz)
        # The basket is read before the purchase is recorded (what it reads, the member's tags and
        # earlier purchases, excludes this one either way).
        basket = promotions.basket_for(account.member, store_id, channel, amount, items, occurred_at, tags=tags)
        values = dict(
            member_id=member_id, store_id=store_id, receipt_no=receipt_no, amount=amount,
            eligible_amount=eligible, currency=currency, points_earned=points, available_at=available_at,
            items=_items_json(items), channel=channel, occurred_at=occurred_at, created_at=now,
            api_key_id=api_key_id)
        description = f"Purchase {receipt_no} at store {store_id}"
        # A plain purchase goes in one statement. Whether a promotion awards anything is asked without
        # locking its budget: with no award nothing of a promotion is written (a budget raised meanwhile
        # is as if raised after this purchase), and the ORM way below locks budgets after the receipt,
        # in the order every writer takes (accounts, receipts, budgets: points/batch.py too).
        if plain_purchase.applies(account, points) and not referrals.may_settle(account) \
                and not promotions.plan(member_id, basket, rules):
            credited = plain_purchase.credit(
                account, values, breakdown(account.member, base, points, (), ZERO), description, expires_at,
                tiers.window_start(clock.local_date(now, tz)), now)
            if credited is None:
                return _replayed(member_id, store_id, receipt_no, amount, currency)
            webhooks.emit("points.credited", ledger.credited_event(
                account, "earn_purchase", points, available_at > now, available_at, expires_at, description,
                ("purchase", credited.purchase.id)), now)
            tiers.upgrade_if_qualified(account.member, now, purchase=credited.purchase, window=credited.window)
            return Outcome(credited.purchase, account.member)
        if isinstance(account, plain_purchase.LockedAccount):
            account = ledger.lock_account(member_id, now)  # the ORM way works on the ORM's objects
        purchase = _claim_receipt(values)
        if purchase is None:  # the receipt was recorded before: a replay, or a mistake
            return _replayed(member_id, store_id, receipt_no, amount, currency)
        if points > 0:
            _, purchase.lot = ledger.credit(
                account, "earn_purchase", points, description, ("purchase", purchase.id), now,
                available_at=available_at, expires_at=expires_at)
        awards = promotions.plan(member_id, basket, rules, lock=True)
        promotions.grant(account, purchase, awards, now, available_at, expires_at)
        referral = referrals.on_purchase(account, purchase, now)
        welcome = referral.referee_points if referral is not None and referral.purchase_id == purchase.id \
            and referral.status == "qualified" else ZERO
        purchase.breakdown = breakdown_json(breakdown(account.member, base, points, awards, welcome))
        tiers.upgrade_if_qualified(account.member, now, purchase=purchase)
    return Outcome(purchase, account.member)


def _replayed(member_id: int, store_id: str, receipt_no: str, amount: Decimal, currency: str) -> Outcome:
    """A purchase whose store and receipt were recorded before: the first one's answer if it is the same
    purchase (a till's retry), else a conflict."""
    existing = _purchase_by_receipt(store_id, receipt_no)
    if (existing.member_id, existing.amount, existing.currency) != (member_id, amount, currency):
        raise Conflict(f"Receipt {receipt_no} of store {store_id} was already recorded with a "
                       "different member or amount; use a new receipt number.")
    return Outcome(existing, member_or_404(existing.member_id), replayed=True)


def quote_purchase(member_id: int | None, store_id: str, amount: Decimal, items: Items | None = None,
                   channel: str | None = None, at: datetime | None = None, include_drafts: bool = False,
                   now: datetime | None = None) -> dict[str, Any]:
    """What a purchase would earn at `at` (default now), line by line, writing nothing: the same
    rules, promotions (limits and budgets as they stand) and referral reward as `credit_purchase`.
    Without a member: a member of the lowest tier, on a first purchase, with no tags. Returns
    {"points", "breakdown", "at"}."""
    now = now or clock.now()
    at = clock.as_utc(at) if at else now
    _check_positive(amount, "A purchase")
    _check_items(amount, items)
    member = member_or_404(member_id) if member_id is not None else None
    rules = current_rules()
    _, base, points = _earning(amount, items, rules, member)
    basket = promotions.basket_for(member, store_id, channel, amount, items, at, include_drafts=include_drafts)
    awards = promotions.plan(member_id, basket, rules, include_drafts=include_drafts)
    welcome = referrals.first_purchase_reward(member, amount, now)
    lines = breakdown(member, base, points, awards, welcome)
    return {"points": sum((line["points"] for line in lines), ZERO), "breakdown": lines, "at": at}


def _earning(amount: Decimal, items: Items | None, rules: EarningRules,
             member: Member | None) -> tuple[Decimal, Decimal, Decimal]:
    """(eligible amount, base points, base and tier points) of a purchase by `member` (None: a guest
    of the lowest tier). The tier multiplies base points only; promotions come on top."""
    eligible, base = rules_mod.purchase_points(amount, items, rules)
    _, points = rules_mod.purchase_points(amount, items, rules, multiplier=_multiplier(member))
    return eligible, base, points


def _multiplier(member: Member | None) -> Decimal:
    """The multiplier of the member's tier as the purchase starts: an upgrade the purchase itself
    earns applies from the next one."""
    return tiers.earn_multiplier(member) if member is not None else tiers.ladder()[0].earn_multiplier


def breakdown(member: Member | None, base: Decimal, points: Decimal, awards: Iterable[Award],
               welcome: Decimal) -> list[dict[str, Any]]:
    """The lines of a purchase's points: base, the tier's extra, each promotion, the referral reward."""
    lines = [{"source": "base", "name": "Base points", "points": base}]
    if points > base:
        tier = next((t for t in tiers.ladder() if t.code == (member.tier_code if member else None)),
                    tiers.ladder()[0])
        lines.append({"source": "tier", "name": f"{tier.name or tier.code} tier x{tier.earn_multiplier.normalize():f}",
                      "points": points - base})
    lines += [{"source": "promotion", "promotion_id": award.promotion_id, "name": award.name,
               "points": award.points} for award in awards]
    if welcome > 0:
        lines.append({"source": "referral", "name": "Welcome reward: joined with a referral", "points": welcome})
    return lines


breakdown_json = rules_mod.breakdown_json


def refund_purchase(purchase_id: int, store_id: str | None, refund_no: str, amount: Decimal,
                    now: datetime | None = None, api_key_id: int | None = None) -> Outcome:
    """Refund part or all of a purchase and claw back its points pro rata (into debt if spent)."""
    now = now or clock.now()
    _check_positive(amount, "A refund")
    with transaction():
        purchase = db.session.get(Purchase, purchase_id)
        if purchase is None:
            raise NotFound(f"No purchase with id {purchase_id}.")
        if store_id is not None and purchase.store_id != store_id:
            raise Forbidden(f"Purchase {purchase_id} was made at another store; refund it there.")
        account = ledger.lock_account(purchase.member_id, now)
        db.session.refresh(purchase)
        existing = db.session.scalar(sa.select(Refund).where(
            Refund.purchase_id == purchase.id, Refund.refund_no == refund_no))
        if existing is not None:
            if existing.amount != amount:
                raise Conflict(f"Refund {refund_no} of this purchase was already recorded with "
                               f"amount {existing.amount}; use a new refund number.")
            return Outcome(existing, account.member, replayed=True)
        refundable = purchase.amount - purchase.refunded_amount
        if amount > refundable:
            raise ValidationFailed(
                f"Refunds cannot exceed the purchase: {purchase.refunded_amount} of {purchase.amount} "
                f"is already refunded, so at most {refundable} can be refunded now.",
                errors={"amount": [f"Must be at most {refundable}."]})
        due = rules_mod.reversal_points(purchase.points_earned, purchase.amount,
                                        purchase.refunded_amount, amount, purchase.points_reversed)
        # Points of this purchase that expired are gone already: they count as reversed first.
        points = due - min(due, _expired_not_yet_reversed(purchase))
        refund = Refund(purchase_id=purchase.id, refund_no=refund_no, amount=amount,
                        points_reversed=points, api_key_id=api_key_id, created_at=now)
        db.session.add(refund)
        db.session.flush()
        if points > 0:
            entry = ledger.claw_back(account, points,
                                     f"Refund {refund_no} of purchase {purchase.receipt_no}",
                                     ("refund", refund.id), now, first_lot=purchase.lot)
            db.session.flush()
            refund.entry_id = entry.id
        account.lifetime_earned -= due - points  # the expired part was not earned either
        refund.promotion_points = promotions.on_refund(account, purchase, refund, purchase.refunded_amount, now)
        purchase.refunded_amount += amount
        purchase.points_reversed += due
        referrals.on_refund(account, purchase, now)
        tiers.undo_returned_upgrades(account.member, purchase, amount, now)
    return Outcome(refund, account.member)


def _expired_not_yet_reversed(purchase: Purchase) -> Decimal:
    """Points of the purchase's lot that expired and that no refund has counted yet.

    A purchase's `points_reversed` is what its refunds reversed in all; each refund's own
    `points_reversed` is what it took from the member. The difference is the expired points
    earlier refunds already counted."""
    if purchase.lot_id is None:
        return ZERO
    expired = -db.session.execute(  # a coalesced sum: one row, never None
        sa.select(sa.func.coalesce(sa.func.sum(Entry.points), 0)).where(
            Entry.member_id == purchase.member_id, Entry.type == "expire",
            Entry.reference_type == "lot", Entry.reference_id == str(purchase.lot_id))).scalar_one()
    taken = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Refund.points_reversed), 0))
        .where(Refund.purchase_id == purchase.id))
    return max(expired - (purchase.points_reversed - taken), ZERO)


# --- behaviour ------------------------------------------------------------------------------------

def record_activity(member_id: int, type_: str, event_id: str, occurred_at: datetime | None = None,
                    now: datetime | None = None) -> Outcome:
    """Award behaviour points for one event, within the type's cap for its period."""
    now = now or clock.now()
    tz = settings().timezone
    occurred_at = clock.as_utc(occurred_at) if occurred_at else now
    if occurred_at > now + CLOCK_SKEW or occurred_at < now - ACTIVITY_BACKDATE_LIMIT:
        raise ValidationFailed("The activity time must be within the last 7 days and not in the future.",
                               errors={"occurred_at": ["Must be within the last 7 days."]})
    rules = current_rules()
    kind = rules.activity(type_)
    if kind is None:
        known = ", ".join(a.type for a in rules.activities) or "none"
        raise ValidationFailed(f"Unknown activity type {type_!r}; configured types: {known}.",
                               errors={"type": [f"Must be one of: {known}."]})
    with transaction():
        account = ledger.lock_account(member_id, now)
        joined_at = account.member.joined_at
        if occurred_at < joined_at - CLOCK_SKEW:  # the same allowance for a device's clock as above
            raise ValidationFailed(
                f"The activity time {occurred_at.isoformat()} is before the member joined "
                f"({joined_at.isoformat()}); only activities since joining earn points.",
                errors={"occurred_at": ["Must not be before the member joined."]})
        period = rules_mod.cap_period_key(occurred_at, kind.cap_period, tz)
        capped = kind.cap is not None and db.session.scalar(
            _AWARDED_IN_PERIOD, {"member_id": member_id, "type": type_, "period": period}) >= kind.cap
        points = ZERO if capped else kind.points
        activity = insert_new(Activity, dict(
            member_id=member_id, type=type_, event_id=event_id, period=period, points_awarded=points,
            capped=capped, occurred_at=occurred_at, created_at=now), (Activity.member_id, Activity.type,
                                                                       Activity.event_id))
        if activity is None:  # this event was recorded before: a replay
            existing = db.session.scalar(sa.select(Activity).where(
                Activity.member_id == member_id, Activity.type == type_, Activity.event_id == event_id))
            return Outcome(existing, account.member, replayed=True)
        if points > 0:
            ledger.credit(account, "earn_activity", points, kind.description or type_.replace("_", " "),
                          ("activity", activity.id), now,
                          expires_at=rules_mod.expires_at(now, occurred_at, rules, tz))
        if not capped:
            tiers.upgrade_if_qualified(account.member, now)
    return Outcome(activity, account.member)


# --- manual adjustments -------------------------------------------------------------------------

def adjust_points(member_id: int, points: Decimal, reason: str, actor: str, now: datetime | None = None) -> Entry:
    """An admin's correction: a credit (a new lot) or a debit (available first, then debt)."""
    now = now or clock.now()
    tz = settings().timezone
    if points == 0:
        raise ValidationFailed("An adjustment must add or remove points; 0 changes nothing.",
                               errors={"points": ["Must not be 0."]})
    if points != points.quantize(rules_mod.CENT):
        raise ValidationFailed("Points have at most 2 decimal places; round the adjustment.",
                               errors={"points": ["Must have at most 2 decimal places."]})
    points = points.quantize(rules_mod.CENT)
    with transaction():
        account = ledger.lock_account(member_id, now)
        balance = lambda: {"available": str(account.available), "pending": str(account.pending),  # noqa: E731
                           "debt": str(account.debt)}
        before = balance()
        description = f"Adjustment: {reason}"
        if points > 0:
            entry, _ = ledger.credit(account, "adjust", points, description, None, now,
                                     expires_at=rules_mod.expires_at(now, now, current_rules(), tz))
        else:
            entry = ledger.claw_back(account, -points, description, None, now, type_="adjust",
                                     unearned=False)
        db.session.flush()
        audit.record(actor, "points.adjust", "member", member_id, before,
                     {"points": str(points), "reason": reason, "entry_id": entry.id, **balance()}, now)
    return entry


# --- points as payment ----------------------------------------------------------------------------

def pay_with_points(member_id: int, store_id: str, payment_no: str, points: Decimal, now: datetime | None = None,
                    api_key_id: int | None = None) -> Outcome:
    """Take points as money at the till. Never below zero: `insufficient_points` otherwise.

    A refusal is an answer too: it is kept for the store and payment number (in the refusal's
    own transaction, under the account's lock), so the same payment sent again is refused again,
    even if points have arrived since: the till took cash, and a retry must not charge the member."""
    now = now or clock.now()
    currency = settings().currency
    rules = current_rules()
    value = rules_mod.payment_money_value(points, rules)
    if value is None or value <= 0:
        step = f"{(rules.payment_points_per_unit / 100).normalize():f}"  # 1, not 1E+0
        raise ValidationFailed(
            f"Points pay in whole cents: {rules.payment_points_per_unit.normalize():f} points are 1 "
            f"{currency}, so pay a multiple of {step} points.",
            errors={"points": [f"Must be a multiple of {step}."]})
    refused = None
    with transaction():
        existing = _payment_by_number(store_id, payment_no)
        if existing is None:
            account = ledger.lock_account(member_id, now)
            existing = _payment_by_number(store_id, payment_no)
        if existing is not None:
            if (existing.member_id, existing.points) != (member_id, points):
                raise _payment_number_taken(store_id, payment_no)
            return Outcome(existing, member_or_404(existing.member_id), replayed=True)
        refusal = _refusal_by_number(store_id, payment_no)
        if refusal is None and account.available < points:
            refusal = _keep_payment_refusal(account, store_id, payment_no, points, now)
        if refusal is not None:
            if (refusal.member_id, refusal.points) != (member_id, points):
                raise _payment_number_taken(store_id, payment_no)
            refused = refusal_error(refusal)
        else:
            payment = PointsPayment(member_id=member_id, store_id=store_id, payment_no=payment_no,
                                    points=points, money_amount=value, currency=currency,
                                    status="completed", api_key_id=api_key_id, created_at=now)
            db.session.add(payment)
            db.session.flush()
            payment.entry = ledger.debit(
                account, "payment", points,
                f"Paid {value} {currency} at store {store_id} (payment {payment_no})",
                ("payment", payment.id), now)
    if refused is not None:
        raise refused  # after the commit (or inside a caller's transaction, which keeps it)
    return Outcome(payment, account.member)


def _payment_number_taken(store_id: str, payment_no: str) -> Conflict:
    return Conflict(f"Payment {payment_no} of store {store_id} was already recorded with a "
                    "different member or points; use a new payment number.")


def _keep_payment_refusal(account: Account, store_id: str, payment_no: str, points: Decimal,
                          now: datetime) -> PaymentRefusal | None:
    """Record the refusal of a payment (the account is locked); a twin's record if it got there
    first (the insert waits for it on PostgreSQL)."""
    available = max(account.available, ZERO)
    refusal = insert_new(PaymentRefusal, dict(
        member_id=account.member_id, store_id=store_id, payment_no=payment_no, points=points,
        available=available, error=InsufficientPoints.code,
        message=f"The member has {available} points available; {points} are needed.", created_at=now),
        (PaymentRefusal.store_id, PaymentRefusal.payment_no))
    return refusal or _refusal_by_number(store_id, payment_no)


def refusal_error(refusal: PaymentRefusal | HoldRefusal) -> InsufficientPoints:
    """The refusal as the error it was first answered with: the same status and body. It is
    `recorded` in the transaction: a caller that holds the transaction open (the Idempotency-Key
    path, loyalty/idempotency.py) commits it rather than rolling it back."""
    error = InsufficientPoints(refusal.message, available=refusal.available, needed=refusal.points)
    error.recorded = True
    return error


def reverse_payment(payment_id: int, store_id: str | None, now: datetime | None = None,
                    api_key_id: int | None = None) -> Outcome:
    """Give back the points of a payment (the sale was voided); they return to their lots."""
    now = now or clock.now()
    with transaction():
        payment = db.session.get(PointsPayment, payment_id)
        if payment is None:
            raise NotFound(f"No points payment with id {payment_id}.")
        if store_id is not None and payment.store_id != store_id:
            raise Forbidden(f"Payment {payment_id} was taken at another store; reverse it there.")
        account = ledger.lock_account(payment.member_id, now)
        db.session.refresh(payment)
        if payment.status == "reversed":
            return Outcome(payment, account.member, replayed=True)
        entry = ledger.restore(account, payment.entry, f"Reversal of payment {payment.payment_no}",
                               ("payment", payment.id), now)
        payment.status, payment.reversal_entry, payment.reversed_at = "reversed", entry, now
        payment.reversal_api_key_id = api_key_id
    return Outcome(payment, account.member)


# --- reading --------------------------------------------------------------------------------------

def points_summary(member_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Balances, and what expires when (lots grouped by expiry), and what is still pending, as of
    `now`: lots that have become available or expired since the account was last settled are
    counted as settled, so a member never sees points that are gone or misses points that have
    arrived. The read writes nothing (writes and the nightly jobs settle the lots) and is one
    statement (_SUMMARY), one snapshot, with the settings version for the key check (auth.roles).

    Only when a hold has run out, or a debt would be paid from the lots that fell due, does it
    settle the account first, in a write transaction: what it shows then is what settle() wrote."""
    now = now or clock.now()
    rows = _SUMMARY.rows(member_id=member_id, now=now)
    head = next((row for row in rows if row.kind == 0), None)
    if head is None:
        raise NotFound(f"No member with id {member_id}.")
    settings_cache.observe(head.settings_version)
    if head.holds_due or (head.lots_due and head.debt > 0):
        with transaction():
            ledger.lock_account(member_id, now)
        return points_summary(member_id, now)
    released, expired = head.released or ZERO, head.expired or ZERO
    return {
        "available": head.points + released - expired, "pending": head.pending - released,
        "lifetime_earned": head.lifetime_earned, "debt": head.debt, "held": head.held,
        "expiring": [{"points": row.points, "expires_at": row.at} for row in rows if row.kind == 1],
        "pending_lots": [{"points": row.points, "available_at": row.at} for row in rows if row.kind == 2],
    }


def _summary_statement() -> sa.CompoundSelect:
    """points_summary's one statement: the account (with what settling now would release and
    expire, and whether a hold or a lot is due), then the expiring groups, then the pending groups,
    as rows (kind, at, points, ...) of one UNION ALL. It is settle()'s rule, read-only (its conditions
    come from ledger.arrived, past_expiry and falls_due): a pending lot
    whose time has come counts as available (and expires if it is past its expiry too); an
    available lot past its expiry counts as expired."""
    member_id: sa.BindParameter[int] = sa.bindparam("member_id")
    now = sa.bindparam("now", type_=UTCDateTime())
    of_member = Lot.member_id == Account.member_id
    arrived, gone = ledger.arrived(now), ledger.past_expiry(now)
    remaining = sa.type_coerce(sa.func.coalesce(sa.func.sum(Lot.remaining), 0), Points())

    def none(type_: Any) -> Any:
        return sa.type_coerce(sa.null(), type_)

    account = sa.select(
        sa.literal_column("0").label("kind"), none(UTCDateTime()).label("at"),
        Account.available.label("points"), Account.pending, Account.lifetime_earned, Account.debt,
        Account.held,
        sa.select(remaining).where(of_member, arrived).scalar_subquery().label("released"),
        sa.select(remaining).where(of_member, gone).scalar_subquery().label("expired"),
        sa.exists().where(of_member, ledger.falls_due(now)).label("lots_due"),
        sa.exists().where(PointsHold.member_id == Account.member_id, PointsHold.status == "held",
                          PointsHold.expires_at <= now).label("holds_due"),
        settings_cache.VERSION,
    ).where(Account.member_id == member_id)

    def groups(kind: int, at: Any, *where: Any) -> sa.Select:
        points = sa.type_coerce(sa.func.sum(Lot.remaining), Points())
        inner = (sa.select(at.label("at"), points.label("points")).where(Lot.member_id == member_id, *where)
                 .group_by(at).order_by(at).limit(100).subquery())
        rest = [none(t).label(n) for n, t in (("pending", Points()), ("lifetime_earned", Points()),
                                              ("debt", Points()), ("held", Points()),
                                              ("released", Points()), ("expired", Points()),
                                              ("lots_due", sa.Boolean()), ("holds_due", sa.Boolean()),
                                              ("settings_version", sa.BigInteger()))]
        return sa.select(sa.literal_column(str(kind)).label("kind"), inner.c.at, inner.c.points, *rest)

    expiring = groups(1, Lot.expires_at, Lot.remaining > 0, Lot.expires_at > now,
                      sa.or_(Lot.status == "available", arrived))
    pending = groups(2, Lot.available_at, Lot.status == "pending", Lot.remaining > 0, Lot.available_at > now)
    return sa.union_all(account, expiring, pending)


_SUMMARY = PreparedSelect(_summary_statement())


def history(member_id: int, types: Sequence[str] | None = None, limit: int = 50,
            cursor: str | None = None) -> tuple[Sequence[Entry], str | None]:
    """Entries newest first, keyset-paginated on the entry id."""
    member_or_404(member_id)
    query = sa.select(Entry).where(Entry.member_id == member_id)
    if types:
        unknown = set(types) - set(ENTRY_TYPES)
        if unknown:
            raise ValidationFailed(f"Unknown entry type {sorted(unknown)[0]!r}; use one of: "
                                   f"{', '.join(ENTRY_TYPES)}.", errors={"type": ["Unknown entry type."]})
        query = query.where(Entry.type.in_(types))
    if cursor:
        query = query.where(Entry.id < decode_cursor(cursor))
    entries = db.session.scalars(query.order_by(Entry.id.desc()).limit(limit + 1)).all()
    next_cursor = encode_cursor(entries[limit - 1].id) if len(entries) > limit else None
    return entries[:limit], next_cursor


def get_purchase(purchase_id: int) -> Purchase:
    purchase = db.session.get(Purchase, purchase_id)
    if purchase is None:
        raise NotFound(f"No purchase with id {purchase_id}.")
    return purchase


# --- helpers --------------------------------------------------------------------------------------



def _claim_receipt(values: Mapping[str, Any]) -> Purchase | None:
    """Insert the purchase unless its store and receipt are recorded already (then None)."""
    return insert_new(Purchase, values, (Purchase.store_id, Purchase.receipt_no))


def insert_new(model: type[Row], values: Mapping[str, Any], natural_key: Sequence[Any]) -> Row | None:
    """Insert a row unless one with the same natural key (a unique constraint's columns) exists,
    then None: the duplicate check and the insert in one statement (INSERT ... ON CONFLICT DO
    NOTHING RETURNING). On PostgreSQL a twin inserting the same key makes this wait for its outcome."""
    dialect = db.session.get_bind().dialect.name
    cache_key = (dialect, model, tuple(values), tuple(natural_key))
    statement = _INSERT_NEW.get(cache_key)
    if statement is None:
        statement = _INSERT_NEW[cache_key] = _insert_new_statement(dialect, model, tuple(values), natural_key)
    row = db.session.connection().execute(statement, dict(values)).one_or_none()
    return None if row is None else _attach_inserted(model, row._asdict())


def _attach_inserted(model: type[Row], values: Mapping[str, Any]) -> Row:
    """The object of a row just inserted by a Core statement, every column in `values` (by
    attribute name), as a persistent object of the session: later changes to it are flushed as
    UPDATEs, as if it had been loaded."""
    row = model(**values)
    orm.make_transient_to_detached(row)
    db.session.add(row)
    return row


# insert_new's statements, built once per model and set of columns: building one per call (the values,
# then its cache key) was ~15 % of a profiled POS credit; with bound parameters it is the same
# statement every time, compiled once. Core, not the ORM's bulk insert (its per-call work was ~10 % of a
# credit); every column comes back, labelled by attribute name, to make the object. A handful of entries.
_INSERT_NEW: dict[tuple[Any, ...], Any] = {}


def _insert_new_statement(dialect: str, model: type[Any], names: Sequence[str], natural_key: Sequence[Any]) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    columns = {attribute.key: attribute.columns[0] for attribute in sa.inspect(model).column_attrs}
    binds = {columns[name]: sa.bindparam(name, type_=columns[name].type) for name in names}
    return (insert(model.__table__).values(binds).on_conflict_do_nothing(index_elements=list(natural_key))
            .returning(*(column.label(key) for key, column in columns.items())))


# Built once (every activity runs it; see ledger._LOCK_ACCOUNT): the events of a type that earned
# points in a cap period.
_AWARDED_IN_PERIOD = sa.select(sa.func.count()).select_from(Activity).where(
    Activity.member_id == sa.bindparam("member_id"), Activity.type == sa.bindparam("type"),
    Activity.period == sa.bindparam("period"), Activity.points_awarded > 0)


def _purchase_by_receipt(store_id: str, receipt_no: str) -> Purchase:
    """The purchase whose insert conflicted with this one: it exists."""
    return db.session.scalars(sa.select(Purchase).where(
        Purchase.store_id == store_id, Purchase.receipt_no == receipt_no)).one()


def _payment_by_number(store_id: str, payment_no: str) -> PointsPayment | None:
    return db.session.scalar(sa.select(PointsPayment).where(
        PointsPayment.store_id == store_id, PointsPayment.payment_no == payment_no))


def _refusal_by_number(store_id: str, payment_no: str) -> PaymentRefusal | None:
    return db.session.scalar(sa.select(PaymentRefusal).where(
        PaymentRefusal.store_id == store_id, PaymentRefusal.payment_no == payment_no)
        .execution_options(populate_existing=True))


def _check_positive(amount: Decimal, what: str) -> None:
    """Money written to the ledger is positive: a negative refund would un-refund a purchase."""
    if amount <= 0:
        raise ValidationFailed(f"{what} must be for an amount greater than 0.",
                               errors={"amount": ["Must be greater than 0."]})


def _check_items(amount: Decimal, items: Items | None) -> None:
    if items and sum((Decimal(i["amount"]) for i in items), ZERO) > amount:
        raise ValidationFailed("The items add up to more than the purchase amount; check the receipt.",
                               errors={"items": ["Item amounts must not exceed the purchase amount."]})


def _items_json(items: Items | None) -> list[dict[str, Any]] | None:
    if not items:
        return None
    return [{**item, "amount": str(item["amount"])} for item in items]
