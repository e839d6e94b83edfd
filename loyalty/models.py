"""Every model, imported in one place so the metadata is complete (Alembic, tests, verify)."""
from loyalty.audit import AuditEntry  # noqa: F401
from loyalty.auth import ApiKey  # noqa: F401
from loyalty.idempotency import IdempotencyRecord  # noqa: F401
from loyalty.members.models import Member, MemberIdentity, TokenSecret  # noqa: F401
from loyalty.points.models import (Account, Activity, EarningRulesRow, Entry, Lot,  # noqa: F401
                                   LotAllocation, PointsPayment, Purchase, Refund)
from loyalty.tiers.models import Tier, TierChange  # noqa: F401
from loyalty.rewards.models import Redemption, Reward, Voucher  # noqa: F401
from loyalty.referrals.models import Referral, ReferralCampaign  # noqa: F401
from loyalty.jobs.models import JobLock, JobRun, Notification  # noqa: F401
from loyalty.segments.models import MemberTag  # noqa: F401
from loyalty.webhooks.models import Attempt, Delivery, Event, Subscription, SubscriptionEvent  # noqa: F401
from loyalty.settings_cache import SettingsVersion  # noqa: F401
from loyalty.staff.models import StaffMember  # noqa: F401
from loyalty.promotions.models import Promotion, PromotionGrant  # noqa: F401
from loyalty.bulk_awards.models import BulkAward, BulkAwardMember  # noqa: F401
from loyalty.segments.figures import BalanceChange, EntryHourChange, LotChange, MemberCountChange  # noqa: F401
