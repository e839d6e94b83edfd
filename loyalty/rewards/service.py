"""Rewards: the catalog marketing runs, redemptions that spend points on it, and the vouchers a
store accepts. Every write is one transaction; redemptions and cancellations lock the member's
account first (like every balance change), stock is taken with a conditional UPDATE, and a voucher
is used with a conditional UPDATE, so two tills scanning it at once cannot both succeed."""
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from loyalty import audit, clock
from loyalty.cursors import decode_cursor, encode_cursor
from loyalty.database import rows_changed, transaction
from loyalty.errors import (
    Conflict,
    InsufficientPoints,
    LimitReached,
    NotEligible,
    NotFound,
    OutOfStock,
    ValidationFailed,
    VoucherExpired,
    VoucherUsed,
    VoucherVoid,
)
from loyalty.extensions import db
from loyalty.members.lookup import member_or_404
from loyalty.members.models import Member
from loyalty.outcome import Outcome
from loyalty.points import ledger
from loyalty.points.models import Entry
from loyalty.rewards.models import KINDS, LIMIT_PERIODS, Redemption, Reward, Voucher
from loyalty.tiers import service as tiers
from loyalty.webhooks import service as webhooks
from loyalty.config import settings

# No 0/O, 1/I/L: a cashier may have to type it. 12 characters of 31: about 2^59 codes.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 12
MAX_QUANTITY = 20
EDITABLE = ("name", "description", "kind", "cash_value", "points_cost", "stock", "per_member_limit",
            "limit_period", "min_tier", "valid_from", "valid_until", "voucher_valid_days", "active",
            "image_url")



# --- the catalog ----------------------------------------------------------------------------------

# What a new reward is unless marketing says otherwise: a marketer decides the name, the kind and
# the cost; a voucher is good for a month, like most retailers' coupons.
REWARD_DEFAULTS = {"description": "", "limit_period": "ever", "active": True, "voucher_valid_days": 30}


def create_reward(fields: Mapping[str, Any], actor: str, now: datetime | None = None) -> Reward:
    now = now or clock.now()
    fields = {**REWARD_DEFAULTS, **fields}
    _check_reward(fields)
    with transaction():
        reward = Reward(**{key: fields.get(key) for key in EDITABLE}, created_at=now, updated_at=now)
        db.session.add(reward)
        db.session.flush()
        audit.record(actor, "reward.create", "reward", reward.id, None, reward_document(reward), now)
    return reward


def update_reward(reward_id: int, changes: Mapping[str, Any], actor: str, now: datetime | None = None) -> Reward:
    now = now or clock.now()
    with transaction():
        reward = db.session.get(Reward, reward_id, with_for_update=True)
        if reward is None:
            raise NotFound(f"No reward with id {reward_id}.")
        before = reward_document(reward)
        merged = {key: getattr(reward, key) for key in EDITABLE} | dict(changes)
        _check_reward(merged)
        for key, value in changes.items():
            setattr(reward, key, value)
        reward.updated_at = now
        audit.record(actor, "reward.update", "reward", reward.id, before, reward_document(reward), now)
    return reward


def _check_reward(fields: Mapping[str, Any]) -> None:
    errors: dict[str, list[str]] = {}
    if fields.get("kind") not in KINDS:
        errors["kind"] = [f"Must be one of: {', '.join(KINDS)}."]
    if fields.get("kind") == "cash_voucher" and not fields.get("cash_value"):
        errors["cash_value"] = ["A cash voucher needs its money value."]
    if fields.get("kind") != "cash_voucher" and fields.get("cash_value"):
        errors["cash_value"] = ["Only cash vouchers have a money value."]
    if fields.get("limit_period") not in LIMIT_PERIODS:
        errors["limit_period"] = [f"Must be one of: {', '.join(LIMIT_PERIODS)}."]
    if fields.get("valid_from") and fields.get("valid_until") and fields["valid_until"] <= fields["valid_from"]:
        errors["valid_until"] = ["Must be after valid_from."]
    if fields.get("min_tier") and fields["min_tier"] not in {tier.code for tier in tiers.ladder()}:
        known = ", ".join(tier.code for tier in tiers.ladder())
        errors["min_tier"] = [f"Must be one of: {known}."]
    if errors:
        field, [problem] = next(iter(errors.items()))
        raise ValidationFailed(f"The reward is not valid: {field}: {problem}", errors=errors)


def reward_fields(reward: Reward) -> dict[str, Any]:
    return {key: getattr(reward, key) for key in ("id",) + EDITABLE + ("created_at", "updated_at")}


def reward_document(reward: Reward) -> dict[str, Any]:
    return audit.document(reward, ("id",) + EDITABLE)


def get_reward(reward_id: int) -> Reward:
    reward = db.session.get(Reward, reward_id)
    if reward is None:
        raise NotFound(f"No reward with id {reward_id}.")
    return reward


def catalog(member_id: int | None = None, include_inactive: bool = False,
            now: datetime | None = None) -> list[dict[str, Any]]:
    """The rewards on offer now (all of them with `include_inactive`), cheapest first. With a
    member, each says whether that member can redeem one now and, if not, why."""
    now = now or clock.now()
    query = sa.select(Reward).order_by(Reward.points_cost, Reward.id)
    if not include_inactive:
        query = query.where(Reward.active.is_(True),
                            sa.or_(Reward.valid_from.is_(None), Reward.valid_from <= now),
                            sa.or_(Reward.valid_until.is_(None), Reward.valid_until > now))
    rewards = db.session.scalars(query).all()
    if member_id is None:
        return [{"reward": reward} for reward in rewards]
    member = member_or_404(member_id)
    if ledger.has_due_lots(member_id, now):  # points released or expired since the last write
        with transaction():
            ledger.lock_account(member_id, now)
    account = db.session.get_one(type(member.account), member_id, populate_existing=True)
    redeemed = _units_redeemed(member_id, [r.id for r in rewards], now)
    items = []
    for reward in rewards:
        reason = _why_not(reward, member, account.available, redeemed, 1, now)
        items.append({"reward": reward, "redeemable": reason is None,
                      "reason": None if reason is None else reason[0]})
    return items


def _why_not(reward: Reward, member: Member, available: Decimal, redeemed: Mapping[int, Mapping[str, int]],
             quantity: int, now: datetime) -> tuple[str, str] | None:
    """(machine code, sentence) of what stops this member redeeming `quantity`, or None."""
    if not reward.active or (reward.valid_from and reward.valid_from > now) or \
            (reward.valid_until and reward.valid_until <= now):
        return "not_eligible", f"{reward.name} is not on offer now."
    if reward.min_tier and _rank(member.tier_code) < _rank(reward.min_tier):
        return "not_eligible", f"{reward.name} is for {reward.min_tier} members and above."
    if reward.stock is not None and reward.stock < quantity:
        return "out_of_stock", f"{reward.name} has {reward.stock} left."
    if reward.per_member_limit is not None:
        used = redeemed.get(reward.id, {}).get(reward.limit_period, 0)
        if used + quantity > reward.per_member_limit:
            period = "this month" if reward.limit_period == "month" else "in all"
            return "limit_reached", (f"{reward.name} is limited to {reward.per_member_limit} per member "
                                     f"{period}; this member has redeemed {used}.")
    cost = reward.points_cost * quantity
    if available < cost:
        return "insufficient_points", (f"The member has {max(available, Decimal('0.00'))} points available; "
                                       f"{cost} are needed.")
    return None


def _rank(code: str | None) -> int:
    return next((tier.rank for tier in tiers.ladder() if tier.code == code), 0)


def _units_redeemed(member_id: int, reward_ids: list[int], now: datetime) -> dict[int, dict[str, int]]:
    """{reward id: {"ever": units, "month": units this local month}}: vouchers not void."""
    if not reward_ids:
        return {}
    month_start = clock.start_of_local_day(clock.local_date(now, settings().timezone).replace(day=1), settings().timezone)
    rows = db.session.execute(
        sa.select(Voucher.reward_id, sa.func.count(),
                  sa.func.sum(sa.case((Voucher.created_at >= month_start, 1), else_=0)))
        .where(Voucher.member_id == member_id, Voucher.reward_id.in_(reward_ids), Voucher.status != "void")
        .group_by(Voucher.reward_id)).all()
    return {reward_id: {"ever": ever, "month": int(month or 0)} for reward_id, ever, month in rows}


# --- redemption -----------------------------------------------------------------------------------

def redeem(member_id: int, reward_id: int, quantity: int = 1, now: datetime | None = None,
           actor: str | None = None) -> Outcome:
    """Spend the member's points on `quantity` units of a reward: one voucher per unit. With an
    `actor` (a request's caller), the redemption is audit-logged."""
    now = now or clock.now()
    if not 1 <= quantity <= MAX_QUANTITY:
        raise ValidationFailed(f"Redeem between 1 and {MAX_QUANTITY} at a time.",
                               errors={"quantity": [f"Must be between 1 and {MAX_QUANTITY}."]})
    with transaction():
        account = ledger.lock_account(member_id, now)
        reward = db.session.get(Reward, reward_id, populate_existing=True)
        if reward is None:
            raise NotFound(f"No reward with id {reward_id}.")
        reason = _why_not(reward, account.member, account.available,
                          _units_redeemed(member_id, [reward.id], now), quantity, now)
        if reason is not None:
            code, message = reason
            error = {"not_eligible": NotEligible, "out_of_stock": OutOfStock,
                     "limit_reached": LimitReached, "insufficient_points": InsufficientPoints}[code]
            raise error(message)
        if reward.stock is not None:
            # The stock check above is a courtesy; this UPDATE is the guarantee under races.
            taken = rows_changed(sa.update(Reward).where(Reward.id == reward.id, Reward.stock >= quantity)
                                 .values(stock=Reward.stock - quantity))
            if taken != 1:
                raise OutOfStock(f"{reward.name} has just run out.")
        cost = reward.points_cost * quantity
        redemption = Redemption(member_id=member_id, reward_id=reward.id, quantity=quantity,
                                unit_cost=reward.points_cost, points_spent=cost, status="completed",
                                created_at=now)
        db.session.add(redemption)
        db.session.flush()
        entry = ledger.debit(account, "redeem", cost, f"Redeemed {quantity} × {reward.name}",
                             ("redemption", redemption.id), now)
        db.session.flush()
        redemption.entry_id = entry.id
        expires_at = clock.end_of_local_day(
            clock.local_date(now, settings().timezone) + timedelta(days=reward.voucher_valid_days), settings().timezone)
        for _ in range(quantity):
            db.session.add(Voucher(code=_new_code(), redemption=redemption, reward_id=reward.id,
                                   member_id=member_id, status="issued", expires_at=expires_at,
                                   created_at=now))
        db.session.flush()
        if actor is not None:
            audit.record(actor, "redemption.create", "redemption", redemption.id, None,
                         {"member_id": member_id, "reward_id": reward.id, "quantity": quantity,
                          "points_spent": str(cost)}, now)
    db.session.refresh(reward)
    return Outcome(redemption, account.member)


def _new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def cancel_redemption(redemption_id: int, actor: str, now: datetime | None = None,
                      owner: int | None = None) -> Outcome:
    """Unused vouchers become void; their points go back to the lots they came from (with those
    lots' expiry) and their units back to stock. Used vouchers stay used, their points spent.
    With an `owner` (a member token's member), another member's redemption does not exist."""
    now = now or clock.now()
    with transaction():
        redemption = db.session.get(Redemption, redemption_id)
        if redemption is None or owner not in (None, redemption.member_id):
            raise NotFound(f"No redemption with id {redemption_id}.")
        account = ledger.lock_account(redemption.member_id, now)
        db.session.refresh(redemption)
        if redemption.status == "cancelled":
            return Outcome(redemption, account.member, replayed=True)
        # Locked and read afresh: a till may have used one since the redemption was loaded.
        vouchers = db.session.scalars(sa.select(Voucher).where(
            Voucher.redemption_id == redemption.id).order_by(Voucher.id)
            .with_for_update(of=Voucher).execution_options(populate_existing=True)).all()
        unused = [v for v in vouchers if v.status == "issued"]
        if not unused:
            raise Conflict("Every voucher of this redemption has been used; there is nothing to cancel.")
        for voucher in unused:
            voucher.status = "void"
        points = redemption.unit_cost * len(unused)
        entry = ledger.restore(account, _entry(redemption.entry_id),
                               f"Cancelled {len(unused)} × {redemption.reward.name}",
                               ("redemption", redemption.id), now, points=points)
        db.session.flush()
        redemption.reversal_entry_id = entry.id
        redemption.points_returned = points
        redemption.status = "cancelled"
        redemption.cancelled_at = now
        if redemption.reward.stock is not None:
            db.session.execute(sa.update(Reward).where(Reward.id == redemption.reward_id)
                               .values(stock=Reward.stock + len(unused))
                               .execution_options(synchronize_session=False))
        audit.record(actor, "redemption.cancel", "redemption", redemption.id,
                     {"status": "completed"}, {"status": "cancelled", "vouchers_void": len(unused),
                                               "points_returned": str(points)}, now)
    return Outcome(redemption, account.member)


def _entry(entry_id: int | None) -> Entry:
    """A redemption's debit entry: every redemption is recorded with one (`redeem`, ledger.debit)."""
    entry = db.session.get(Entry, entry_id) if entry_id is not None else None
    if entry is None:  # the ledger disagrees with the redemption: never paper over that
        raise RuntimeError(f"ledger inconsistency: redemption entry {entry_id} is missing")
    return entry


def member_redemptions(member_id: int, limit: int = 50,
                       cursor: str | None = None) -> tuple[Sequence[Redemption], str | None]:
    """The member's redemptions with their vouchers, newest first, keyset-paginated."""
    member_or_404(member_id)
    query = sa.select(Redemption).where(Redemption.member_id == member_id).order_by(Redemption.id.desc())
    if cursor:
        query = query.where(Redemption.id < decode_cursor(cursor))
    rows = db.session.scalars(query.limit(limit + 1)).all()
    return rows[:limit], (encode_cursor(rows[limit - 1].id) if len(rows) > limit else None)


# --- vouchers -------------------------------------------------------------------------------------

def normalise_code(code: str) -> str:
    """What a cashier types or a scanner reads: any case, spaces or dashes."""
    return code.replace("-", "").replace(" ", "").upper()


def voucher_status(voucher: Voucher, now: datetime) -> str:
    if voucher.status == "issued" and voucher.expires_at <= now:
        return "expired"
    return voucher.status


def get_voucher(code: str, owner: int | None = None) -> Voucher:
    """The voucher; with an `owner` (a member token's member), another member's does not exist."""
    voucher = db.session.scalar(sa.select(Voucher).where(Voucher.code == normalise_code(code)))
    if voucher is None or owner not in (None, voucher.member_id):
        raise NotFound("No voucher with this code; check it was typed or scanned in full.")
    return voucher


def use_voucher(code: str, store_id: str, now: datetime | None = None, api_key_id: int | None = None) -> Voucher:
    """A till accepts the voucher. Once, ever: the UPDATE only matches an issued, unexpired voucher,
    so of two tills scanning it at the same instant exactly one succeeds."""
    now = now or clock.now()
    code = normalise_code(code)
    with transaction():
        used = rows_changed(
            sa.update(Voucher).where(Voucher.code == code, Voucher.status == "issued", Voucher.expires_at > now)
            .values(status="used", used_at=now, used_store_id=store_id, used_api_key_id=api_key_id))
        voucher = db.session.scalar(sa.select(Voucher).where(Voucher.code == code)
                                    .execution_options(populate_existing=True))
        if voucher is None:
            raise NotFound("No voucher with this code; check it was typed or scanned in full.")
        if used != 1:
            if voucher.status == "used":
                raise VoucherUsed(f"This voucher was already used at store {voucher.used_store_id} "
                                  f"on {voucher.used_at:%Y-%m-%d %H:%M} UTC.")
            if voucher.status == "void":
                raise VoucherVoid("This voucher was cancelled; its points went back to the member.")
            raise VoucherExpired(f"This voucher expired at {voucher.expires_at:%Y-%m-%d %H:%M} UTC.")
        webhooks.emit("voucher.used", {
            "code": voucher.code, "voucher_id": voucher.id, "redemption_id": voucher.redemption_id,
            "reward_id": voucher.reward_id, "member_id": voucher.member_id, "store_id": store_id,
            "used_at": now}, now)
    return voucher



