"""The ledger's tables: accounts (cached balances), entries (append-only), lots, and the
records that give each entry its natural key (purchases, refunds, activities, payments)."""
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from loyalty.database import BigId, Money, Points, UTCDateTime
from loyalty.extensions import Model

ZERO = sa.text("0")


class Account(Model):
    """A member's balances. Changed only in the transaction that writes the entries behind it."""

    __tablename__ = "accounts"
    __table_args__ = (sa.CheckConstraint("debt >= 0", name="debt_not_negative"),
                      sa.CheckConstraint("pending >= 0", name="pending_not_negative"))

    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"), primary_key=True,
                                           autoincrement=False)
    available = mapped_column(Points(), nullable=False, server_default=ZERO)
    pending = mapped_column(Points(), nullable=False, server_default=ZERO)
    lifetime_earned = mapped_column(Points(), nullable=False, server_default=ZERO)
    debt = mapped_column(Points(), nullable=False, server_default=ZERO)
    # Points reserved by open holds: out of `available`, out of their lots' `remaining` (kept by
    # the holds' allocations), still the member's until captured.
    held = mapped_column(Points(), nullable=False, server_default=ZERO)
    updated_at = mapped_column(UTCDateTime, nullable=False)

    member = relationship("Member", back_populates="account")

    @property
    def balance(self):
        return balance_of(self)


class Entry(Model):
    """One change of a member's points. Never updated, never deleted."""

    __tablename__ = "ledger_entries"
    __table_args__ = (sa.Index("ix_ledger_entries_member_history", "member_id", "id"),
                      sa.Index("ix_ledger_entries_member_type", "member_id", "type", "id"),
                      sa.Index("ix_ledger_entries_created", "created_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    type: Mapped[str] = mapped_column(sa.String(20))
    points = mapped_column(Points(), nullable=False)
    balance_after = mapped_column(Points(), nullable=False)
    description: Mapped[str] = mapped_column(sa.String(200))
    reference_type: Mapped[str | None] = mapped_column(sa.String(30))
    reference_id: Mapped[str | None] = mapped_column(sa.String(64))
    expires_at = mapped_column(UTCDateTime)
    created_at = mapped_column(UTCDateTime, nullable=False)

    @property
    def reference(self):
        if self.reference_type is None:
            return None
        return {"type": self.reference_type, "id": self.reference_id}


class Lot(Model):
    """The points of one credit: pending until `available_at`, spendable until `expires_at`."""

    __tablename__ = "lots"
    __table_args__ = (
        sa.CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_in_range"),
        sa.Index("ix_lots_member_status", "member_id", "status", "expires_at"),
        sa.Index("ix_lots_status_available_at", "status", "available_at"),
        sa.Index("ix_lots_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    entry_id: Mapped[int] = mapped_column(sa.ForeignKey("ledger_entries.id"))
    points = mapped_column(Points(), nullable=False)
    remaining = mapped_column(Points(), nullable=False)
    # pending -> available -> expired; a lot spent to zero stays available with nothing remaining
    status: Mapped[str] = mapped_column(sa.String(10))
    available_at = mapped_column(UTCDateTime, nullable=False)
    expires_at = mapped_column(UTCDateTime)
    created_at = mapped_column(UTCDateTime, nullable=False)

    entry = relationship("Entry")


class _TakenFromLot:
    """How many points something took out of which lot (a debit, an open hold): they go back to
    that lot, with its expiry, when it is reversed or lets go."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    lot_id: Mapped[int] = mapped_column(sa.ForeignKey("lots.id"), index=True)
    points = mapped_column(Points(), nullable=False)


class LotAllocation(_TakenFromLot, Model):
    """How many points a debit took from which lot, so a reversal can put them back."""

    __tablename__ = "lot_allocations"

    entry_id: Mapped[int] = mapped_column(sa.ForeignKey("ledger_entries.id"), index=True)

    entry = relationship("Entry")


def balance_of(account):
    """What an account's entries add up to: available (net of debt), pending and held (Account.balance,
    and plain_purchase's LockedAccount, which has the same balances)."""
    return account.available + account.pending + account.held


def points_total(lines):
    """What a purchase earned in all: the sum of its lines' points (Purchase.lines, and plain_purchase's
    RecordedPurchase, which has the same lines)."""
    return sum((line["points"] for line in lines), Decimal("0.00"))


class Purchase(Model):
    __tablename__ = "purchases"
    __table_args__ = (sa.UniqueConstraint("store_id", "receipt_no"),
                      # Covers the nightly jobs' per-member window aggregates (migration 0010).
                      sa.Index("ix_purchases_member_window", "member_id", "occurred_at", "amount",
                               "refunded_amount"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    store_id: Mapped[str] = mapped_column(sa.String(40))
    receipt_no: Mapped[str] = mapped_column(sa.String(64))
    amount = mapped_column(Money(), nullable=False)
    eligible_amount = mapped_column(Money(), nullable=False)
    currency: Mapped[str] = mapped_column(sa.String(3))
    refunded_amount = mapped_column(Money(), nullable=False, server_default=ZERO)
    points_earned = mapped_column(Points(), nullable=False)
    points_reversed = mapped_column(Points(), nullable=False, server_default=ZERO)
    available_at = mapped_column(UTCDateTime, nullable=False)
    items = mapped_column(sa.JSON)
    channel: Mapped[str | None] = mapped_column(sa.String(30))  # store, online, mini_program...; None: store
    # The answer's lines (base, tier, each promotion, referral) as credited, so a replay gives them
    # again: [{"source", "promotion_id"?, "name", "points"}], points as strings. None before promotions.
    breakdown = mapped_column(sa.JSON)
    lot_id: Mapped[int | None] = mapped_column(sa.ForeignKey("lots.id"))
    api_key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("api_keys.id"))  # the till's key
    occurred_at = mapped_column(UTCDateTime, nullable=False)
    created_at = mapped_column(UTCDateTime, nullable=False)

    lot = relationship("Lot")

    @property
    def lines(self):
        """The purchase's points line by line, as credited (one from before promotions has its base line)."""
        if self.breakdown is None:
            return [{"source": "base", "name": "Base points", "points": self.points_earned}]
        return [{**line, "points": Decimal(line["points"])} for line in self.breakdown]

    @property
    def total_points(self):
        """What the purchase earned in all: its lines' sum (the answer's `points_earned`)."""
        return points_total(self.lines)


class Refund(Model):
    __tablename__ = "refunds"
    __table_args__ = (sa.UniqueConstraint("purchase_id", "refund_no"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    purchase_id: Mapped[int] = mapped_column(sa.ForeignKey("purchases.id"))
    refund_no: Mapped[str] = mapped_column(sa.String(64))
    amount = mapped_column(Money(), nullable=False)
    points_reversed = mapped_column(Points(), nullable=False)  # the purchase's base points taken
    promotion_points = mapped_column(Points(), nullable=False, server_default=ZERO)  # its promotions' points taken
    entry_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ledger_entries.id"))
    api_key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("api_keys.id"))
    created_at = mapped_column(UTCDateTime, nullable=False)

    @property
    def total_points(self):
        """The points the refund took back: the purchase's base points and its promotions'."""
        return self.points_reversed + (self.promotion_points or Decimal("0.00"))


class Activity(Model):
    """A behaviour event (sign-in, share, review...). `period` is the cap window it counts in."""

    __tablename__ = "activities"
    __table_args__ = (sa.UniqueConstraint("member_id", "type", "event_id"),
                      sa.Index("ix_activities_member_type_period", "member_id", "type", "period"),
                      sa.Index("ix_activities_member_window", "member_id", "occurred_at", "capped"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    type: Mapped[str] = mapped_column(sa.String(30))
    event_id: Mapped[str] = mapped_column(sa.String(100))
    period: Mapped[str] = mapped_column(sa.String(10))
    points_awarded = mapped_column(Points(), nullable=False)
    capped: Mapped[bool] = mapped_column(sa.Boolean)
    occurred_at = mapped_column(UTCDateTime, nullable=False)
    created_at = mapped_column(UTCDateTime, nullable=False)


class _TillPayment:
    """A points payment as a till asks for it: one per (store_id, payment_no), whatever answer it got."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"), index=True)
    store_id: Mapped[str] = mapped_column(sa.String(40))
    payment_no: Mapped[str] = mapped_column(sa.String(64))
    points = mapped_column(Points(), nullable=False)


class PointsPayment(_TillPayment, Model):
    """Points taken as money at the till."""

    __tablename__ = "points_payments"
    __table_args__ = (sa.UniqueConstraint("store_id", "payment_no"),)

    money_amount = mapped_column(Money(), nullable=False)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(10))  # completed | reversed
    entry_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ledger_entries.id"))
    reversal_entry_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ledger_entries.id"))
    api_key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("api_keys.id"))
    reversal_api_key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("api_keys.id"))
    created_at = mapped_column(UTCDateTime, nullable=False)
    reversed_at = mapped_column(UTCDateTime)

    entry = relationship("Entry", foreign_keys=[entry_id])
    reversal_entry = relationship("Entry", foreign_keys=[reversal_entry_id])


class PointsHold(Model):
    """Points reserved at a till (authorise), then captured as a payment or released."""

    __tablename__ = "points_holds"
    __table_args__ = (sa.UniqueConstraint("store_id", "hold_no"),
                      sa.Index("ix_points_holds_status_expires_at", "status", "expires_at"),
                      sa.Index("ix_points_holds_member_status", "member_id", "status"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"))
    store_id: Mapped[str] = mapped_column(sa.String(40))
    hold_no: Mapped[str] = mapped_column(sa.String(64))
    points = mapped_column(Points(), nullable=False)
    captured_points = mapped_column(Points(), nullable=False, server_default=ZERO)
    status: Mapped[str] = mapped_column(sa.String(10))  # held | captured | released | expired
    expires_at = mapped_column(UTCDateTime, nullable=False)
    payment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("points_payments.id"))
    api_key_id: Mapped[int | None] = mapped_column(sa.ForeignKey("api_keys.id"))
    created_at = mapped_column(UTCDateTime, nullable=False)
    closed_at = mapped_column(UTCDateTime)


class HoldAllocation(_TakenFromLot, Model):
    """How many points an open hold took out of which lot; they go back there when it lets go."""

    __tablename__ = "hold_allocations"

    hold_id: Mapped[int] = mapped_column(sa.ForeignKey("points_holds.id"), index=True)


class _Refusal:
    """A till's request refused on the state of the account (insufficient points), kept for its
    natural key: the same request sent again gets the same refusal, even if points have arrived
    since (the till took cash instead; a retry must not charge the member)."""

    available = mapped_column(Points(), nullable=False)  # what the member had: the refusal's figures
    error: Mapped[str] = mapped_column(sa.String(30))
    message: Mapped[str] = mapped_column(sa.String(300))
    created_at = mapped_column(UTCDateTime, nullable=False)


class PaymentRefusal(_TillPayment, _Refusal, Model):
    """A points payment refused: one per (store_id, payment_no), like the payment it was not."""

    __tablename__ = "points_payment_refusals"
    __table_args__ = (sa.UniqueConstraint("store_id", "payment_no"),)


class HoldRefusal(_Refusal, Model):
    """A points hold refused: one per (store_id, hold_no), like the hold it was not."""

    __tablename__ = "points_hold_refusals"
    __table_args__ = (sa.UniqueConstraint("store_id", "hold_no"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id"), index=True)
    store_id: Mapped[str] = mapped_column(sa.String(40))
    hold_no: Mapped[str] = mapped_column(sa.String(64))
    points = mapped_column(Points(), nullable=False)


class EarningRulesRow(Model):
    """The programme's earning rules: one row, a validated document (see points/rules.py)."""

    __tablename__ = "earning_rules"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    settings = mapped_column(sa.JSON, nullable=False)
    version: Mapped[int] = mapped_column(sa.Integer)
    updated_at = mapped_column(UTCDateTime, nullable=False)
