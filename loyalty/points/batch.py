"""An offline till's upload: up to 500 purchases at once (POST /purchases/batch).

Set-based, not 500 single purchases in a loop: the members are locked once, lowest id first
(ledger.lock_accounts), the purchases, entries and lots go in with multi-row INSERTs, and the
balances are worked out in Python on the locked accounts. Each item is exactly once on
(store_id, receipt_no), across batches and with single purchases (the unique constraint decides,
ON CONFLICT DO NOTHING); items are independent (a bad one is rejected with its error, the rest go
on) and answered in the order sent. One transaction for the batch: a worker killed half-way
leaves every item credited or not, never half, and the till sends the batch again.

The points of one item come from `item_earning`, the single purchase's own pure rules (points/
rules.py), and its promotions from `promotions.plan_batch`, the single purchase's pure rule
(promotions/rules.py) at the item's occurred_at with the member's limits and the budgets counted as
the batch goes: the same purchase earns the same points, line by line, either way.
"""
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loyalty import clock
from loyalty.config import settings
from loyalty.database import transaction
from loyalty.errors import LoyaltyError, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.members.service import member_id_for, member_ids_for_cards
from loyalty.points import ledger
from loyalty.points import rules as rules_mod
from loyalty.points import service
from loyalty.points.models import Entry, Lot, Purchase
from loyalty.points.rules import EarningRules
from loyalty.points.settings import current_rules
from loyalty.promotions import service as promotions
from loyalty.referrals import service as referrals
from loyalty.tiers import service as tiers
from loyalty.webhooks import service as webhooks

MAX_BATCH = 500
CLOCK_SKEW = timedelta(minutes=5)  # as a single purchase: how far ahead a till's clock may run
ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Earning:
    """What one purchase earns: the eligible amount, the points, when they become available and
    when they expire."""

    eligible: Decimal
    base: Decimal  # before the tier's multiplier (the breakdown's base line)
    points: Decimal
    available_at: datetime
    expires_at: datetime | None


def item_earning(amount, items, occurred_at, multiplier, rules: EarningRules, now, tz) -> Earning:
    """The earning of one purchase, exactly as POST /purchases computes it (the same rule functions,
    the same order). Promotions come on top (promotions.plan_batch), once the item is recorded."""
    eligible, base = rules_mod.purchase_points(amount, items, rules)
    _, points = rules_mod.purchase_points(amount, items, rules, multiplier=multiplier)
    available_at = max(rules_mod.available_at(occurred_at, rules), now) if rules.pending_days else now
    return Earning(eligible, base, points, available_at, rules_mod.expires_at(available_at, occurred_at, rules, tz))


def credit_batch(store_id, purchases, api_key_id=None, now=None):
    """Credit an offline till's purchases. `purchases` are dicts (receipt_no, member_id or card,
    amount, occurred_at, items?); one the API could not read carries `error` ({"error",
    "message"}) instead. Returns one result per purchase, in order."""
    now = now or clock.now()
    if not 1 <= len(purchases) <= MAX_BATCH:
        raise ValidationFailed(f"Send 1 to {MAX_BATCH} purchases in a batch; split larger uploads.",
                               errors={"purchases": [f"Length must be between 1 and {MAX_BATCH}."]})
    config = settings()
    results = [None] * len(purchases)
    todo = []
    # Every card of the batch in one query (a missing one is that item's error, as before).
    cards = member_ids_for_cards(item["card"] for item in purchases
                                 if "error" not in item and item.get("member_id") is None and item.get("card"))
    for index, item in enumerate(purchases):
        if "error" in item:
            results[index] = _rejected(item.get("receipt_no"), item["error"])
            continue
        try:
            _check(item, now, config.offline_max_days)
            member_id = member_id_for(item.get("member_id"), item.get("card"), cards)
        except LoyaltyError as error:
            results[index] = _rejected(item["receipt_no"], _error(error))
            continue
        todo.append((index, {**item, "member_id": member_id, "occurred_at": clock.as_utc(item["occurred_at"])}))
    # The same receipt twice in one batch: the first one counts, a copy is its replay.
    first_of = {}
    copies = []
    for index, item in todo:
        if item["receipt_no"] in first_of:
            copies.append((index, item))
        else:
            first_of[item["receipt_no"]] = (index, item)
    with transaction():
        accounts = ledger.lock_accounts([item["member_id"] for _, item in first_of.values()], now)
        rules = current_rules()
        fresh = []
        projected = {}  # each member's most points as the batch goes: the ceiling ledger.credit keeps
        for index, item in first_of.values():
            account = accounts.get(item["member_id"])
            if account is None:
                results[index] = _rejected(item["receipt_no"], _error(NotFound(
                    f"No member with id {item['member_id']}.")))
                continue
            earning = item_earning(item["amount"], item.get("items"), item["occurred_at"],
                                   tiers.earn_multiplier(account.member), rules, now, config.timezone)
            most = projected.get(account.member_id, max(account.balance, account.lifetime_earned))
            if most + earning.points > ledger.MAX_ACCOUNT_POINTS:
                results[index] = _rejected(item["receipt_no"], _error(ValidationFailed(
                    f"This credit of {earning.points} points would take the member's points past "
                    f"{ledger.MAX_ACCOUNT_POINTS:,.0f}, the most an account holds; check the amount.")))
                continue
            projected[account.member_id] = most + earning.points
            fresh.append((index, item, earning))
        inserted = _insert_purchases(store_id, fresh, config.currency, api_key_id, now)
        recorded = _recorded(store_id, [item["receipt_no"] for _, item, _ in fresh
                                        if item["receipt_no"] not in inserted])
        credited = []
        for index, item, earning in fresh:
            purchase = inserted.get(item["receipt_no"])
            if purchase is not None:
                credited.append((index, item, earning, purchase))
            else:
                results[index] = _replay(recorded[item["receipt_no"]], item, config.currency)
        plans = promotions.plan_batch(store_id, [
            (accounts[item["member_id"]].member, purchase.id, item["amount"], item.get("items"), item["occurred_at"])
            for _, item, _, purchase in credited], rules)
        awarded = _within_ceiling(credited, plans, accounts)
        promotions.grant_batch(_credit(awarded, accounts, store_id, now), now)
        for _, item, earning, purchase, awards in awarded:
            purchase.breakdown = service.breakdown_json(service.breakdown(
                accounts[item["member_id"]].member, earning.base, earning.points, awards, ZERO))
        _after_purchases(credited, accounts, now)
        for index, item, _, purchase in credited:
            results[index] = {"receipt_no": item["receipt_no"], "status": "credited", "purchase_id": purchase.id,
                              "points_earned": purchase.total_points, "breakdown": purchase.lines}
    for index, item in copies:
        first = results[first_of[item["receipt_no"]][0]]
        results[index] = (_replay_of_result(first, item, first_of[item["receipt_no"]][1])
                          if first["status"] != "rejected" else first)
    return results


def _check(item, now, max_days):
    """What a single purchase checks, and the offline limit: at most `max_days` back."""
    occurred_at = clock.as_utc(item["occurred_at"])
    if occurred_at > now + CLOCK_SKEW:
        raise ValidationFailed("The purchase time is in the future; check the till's clock.",
                               errors={"occurred_at": ["Must not be in the future."]})
    if occurred_at < now - timedelta(days=max_days):
        raise ValidationFailed(f"The purchase is more than {max_days} days old; purchases older than that "
                               "cannot be uploaded, record them by hand.",
                               errors={"occurred_at": [f"Must be within the last {max_days} days."]})
    amount = item["amount"]
    if amount <= 0:
        raise ValidationFailed("A purchase must be for an amount greater than 0.",
                               errors={"amount": ["Must be greater than 0."]})
    items = item.get("items")
    if items and sum((Decimal(i["amount"]) for i in items), ZERO) > amount:
        raise ValidationFailed("The items add up to more than the purchase amount; check the receipt.",
                               errors={"items": ["Item amounts must not exceed the purchase amount."]})


def _insert_purchases(store_id, fresh, currency, api_key_id, now):
    """One multi-row INSERT ... ON CONFLICT DO NOTHING; {receipt_no: Purchase} of those inserted."""
    if not fresh:
        return {}
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    rows = [dict(member_id=item["member_id"], store_id=store_id, receipt_no=item["receipt_no"],
                 amount=item["amount"], eligible_amount=earning.eligible, currency=currency,
                 points_earned=earning.points, available_at=earning.available_at,
                 items=_items_json(item.get("items")), occurred_at=item["occurred_at"], created_at=now,
                 api_key_id=api_key_id) for _, item, earning in fresh]
    statement = (insert(Purchase).on_conflict_do_nothing(index_elements=["store_id", "receipt_no"])
                 .returning(Purchase))
    return {purchase.receipt_no: purchase for purchase in db.session.scalars(statement, rows)}


def _within_ceiling(credited, plans, accounts):
    """[(index, item, earning, purchase, awards)]. A promotion's points that would take the member
    past MAX_ACCOUNT_POINTS are left out (alone, `ledger.credit` would have refused the purchase;
    here it is recorded already, with the base points the ceiling check before it let through)."""
    projected = {}
    awarded = []
    for (index, item, earning, purchase), awards in zip(credited, plans):
        account = accounts[item["member_id"]]
        most = projected.get(account.member_id, max(account.balance, account.lifetime_earned)) + earning.points
        kept = []
        for award in awards:
            if most + award.points <= ledger.MAX_ACCOUNT_POINTS:
                kept.append(award)
                most += award.points
        projected[account.member_id] = most
        awarded.append((index, item, earning, purchase, tuple(kept)))
    return awarded


def _credit(awarded, accounts, store_id, now):
    """The ledger's side of `ledger.credit` for many purchases and their promotions' `bonus` points:
    balances on the locked accounts in item order (a purchase's own points, then each promotion's,
    as a single purchase credits them), then one multi-row INSERT of entries and one of lots.
    Returns the promotion grants for `promotions.grant_batch`."""
    credits = []  # (item, earning, purchase, award or None for the purchase's own points)
    for _, item, earning, purchase, awards in awarded:
        if earning.points > 0:
            credits.append((item, earning, purchase, None))
        credits += [(item, earning, purchase, award) for award in awards]
    entries, lots, events = [], [], []
    for item, earning, purchase, award in credits:
        points = earning.points if award is None else award.points
        account = accounts[item["member_id"]]
        pending = earning.available_at > now
        account.available, account.pending, account.lifetime_earned = ledger.balances_after_credit(
            account, points, pending)
        paid = ZERO if pending else min(points, account.debt)
        account.debt -= paid
        account.updated_at = now
        if award is None:
            type_, description, reference = ("earn_purchase", f"Purchase {item['receipt_no']} at store {store_id}",
                                             ("purchase", purchase.id))
        else:  # the words of promotions.grant
            type_, description, reference = ("bonus", f"Promotion {award.name}: purchase {item['receipt_no']}",
                                             ("promotion", award.promotion_id))
        entries.append(dict(member_id=account.member_id, type=type_, points=points,
                            balance_after=account.balance, description=description[:200],
                            reference_type=reference[0], reference_id=str(reference[1]),
                            expires_at=earning.expires_at, created_at=now))
        lots.append(dict(member_id=account.member_id, points=points, remaining=points - paid,
                         status=ledger.new_lot_status(pending), available_at=earning.available_at,
                         expires_at=earning.expires_at, created_at=now))
        events.append(ledger.credited_event(account, type_, points, pending, earning.available_at,
                                            earning.expires_at, description, reference))
    if not entries:
        return []
    entry_ids = db.session.scalars(sa.insert(Entry).returning(Entry.id, sort_by_parameter_order=True), entries).all()
    for lot, entry_id in zip(lots, entry_ids):
        lot["entry_id"] = entry_id
    lot_ids = db.session.scalars(sa.insert(Lot).returning(Lot.id, sort_by_parameter_order=True), lots).all()
    grants = []
    for (item, _, purchase, award), entry_id, lot_id in zip(credits, entry_ids, lot_ids):
        if award is None:
            purchase.lot_id = lot_id
        else:
            grants.append((purchase.id, item["member_id"], item["occurred_at"], award, entry_id, lot_id))
    webhooks.emit_many("points.credited", events, now)
    return grants


def _after_purchases(credited, accounts, now):
    """What a single purchase does after crediting: a pending referral settles on the member's
    first purchase, and the tier (as of now) goes up where a purchase reached one, for all the
    batch's members in one statement (tiers.upgrade_after_purchases)."""
    members = {}
    for _, item, _, purchase in credited:
        account = accounts[item["member_id"]]
        if item["member_id"] not in members and account.member.referred_by_id is not None:
            referral = referrals.on_purchase(account, purchase, now)
            if referral is not None and referral.purchase_id == purchase.id and referral.status == "qualified" \
                    and referral.referee_points > 0:  # the welcome reward's line, as a single purchase has it
                purchase.breakdown = [*purchase.breakdown, *service.breakdown_json(
                    service.breakdown(None, ZERO, ZERO, (), referral.referee_points)[1:])]
        members[item["member_id"]] = account.member
    tiers.upgrade_after_purchases(members, [purchase for _, _, _, purchase in credited], now)


def _recorded(store_id, receipt_nos):
    if not receipt_nos:
        return {}
    return {purchase.receipt_no: purchase for purchase in db.session.scalars(sa.select(Purchase).where(
        Purchase.store_id == store_id, Purchase.receipt_no.in_(receipt_nos)))}


def _replay(existing, item, currency):
    if (existing.member_id, existing.amount, existing.currency) != (item["member_id"], item["amount"], currency):
        return _rejected(item["receipt_no"], {
            "error": "conflict",
            "message": f"Receipt {item['receipt_no']} of this store was already recorded with a different "
                       "member or amount; use a new receipt number."})
    return {"receipt_no": item["receipt_no"], "status": "replayed", "purchase_id": existing.id,
            "points_earned": existing.total_points, "breakdown": existing.lines}


def _replay_of_result(first, item, first_item):
    if (item["member_id"], item["amount"]) != (first_item["member_id"], first_item["amount"]):
        return _rejected(item["receipt_no"], {
            "error": "conflict",
            "message": f"Receipt {item['receipt_no']} appears twice in this batch with a different member "
                       "or amount; use a new receipt number."})
    return {"receipt_no": item["receipt_no"], "status": "replayed", "purchase_id": first["purchase_id"],
            "points_earned": first["points_earned"], "breakdown": first["breakdown"]}


def _rejected(receipt_no, error):
    return {"receipt_no": receipt_no, "status": "rejected", "error": error}


def _error(error):
    return {"error": error.code, "message": error.message}


def _items_json(items):
    if not items:
        return None
    return [{**item, "amount": str(item["amount"])} for item in items]
