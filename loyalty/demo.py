"""`loyalty demo`: a believable year of a loyalty programme, so that reports, segments and the
console have something to show on a new installation.

The world is planned first, as plain data, by `plan(rng, members, anchor)`: people (Chinese and
English names, mainland mobile numbers, some emails and birthdays, a joining channel) and the
events of their year (joining, purchases with items, refunds, sign-ins, shares and reviews, a
referral campaign, redemptions and vouchers used at a till, points paid at a till, marketing
tags). It depends on the random generator and the anchor (the instant the world ends) only, so
a seed gives the same world on any machine, shifted to the day it is made.

Then `fill` plays the events in time order through the domain services, each with its own time
as `now`, as if the programme had been running for a year: every rule applies (tiers move up as
purchases qualify, points expire, referrals qualify or miss, refunds claw back), and the ledger
passes `loyalty ledger verify`. Finally the nightly jobs run as of today.

Idempotence: every write has a natural key prefixed DEMO- (receipts, refunds, activity events,
points payments) or is found by its name (rewards, the campaign) or its member's phone. Events
are written in batches, one transaction each, and every batch ends with an event whose key shows
whether it was written; batches commit in order, so the first batch not written is found by a
binary search and a run killed half-way goes on from there, never doubling anything. The
campaign's audit entry names the seed and size the world was made with, and its start dates the
world, so a second run recognises the world, finishes it if need be, or says it is complete."""
import math
import random
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from loyalty import clock
from loyalty.audit import AuditEntry
from loyalty.database import Money, transaction
from loyalty.errors import Conflict
from loyalty.extensions import db
from loyalty.jobs import registry, runner
from loyalty.jobs.models import JobRun
from loyalty.members import service as members
from loyalty.members.models import Member
from loyalty.points import service as points
from loyalty.points.models import Activity, PointsPayment, Purchase, Refund
from loyalty.promotions import service as promotions
from loyalty.promotions.models import Promotion
from loyalty.referrals import service as referrals
from loyalty.referrals.models import Referral, ReferralCampaign
from loyalty.rewards import service as rewards
from loyalty.rewards.models import Redemption, Reward, Voucher
from loyalty.segments import service as segments
from loyalty.segments.models import MemberTag
from loyalty.webhooks.models import Subscription
from loyalty.config import settings

DEFAULT_MEMBERS = 2000
DEFAULT_SEED = 1
SPAN_DAYS = 395  # members join over the last 13 months: the first months' points have expired
BATCH = 200  # events per transaction (at least; a batch ends with an event that leaves a trace)
STORES = ("S1", "S2", "S3", "S4", "S5", "S6")
STORE_WEIGHTS = (30, 22, 16, 14, 10, 8)
CHANNELS = (("app", 45), ("mini-program", 35), ("store", 20))
PHONE_PREFIXES = ("135", "136", "137", "138", "139", "150", "151", "152", "158", "159", "186", "187", "188")
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")  # reserved: mail to them goes nowhere
CAMPAIGN_NAME = "邀请有礼 · Invite a friend"
ACTOR = "loyalty demo (seed {seed}, {members} members)"
ACTOR_PATTERN = re.compile(r"^loyalty demo \(seed (-?\d+), (\d+) members\)$")
# The nightly jobs, in the order the scheduler's times run them.
JOBS = ("points.release_pending", "points.expire", "referrals.expire", "tiers.recompute",
        "members.birthday_bonus", "members.lifecycle", "members.value_segments")

SURNAMES = (("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"), ("杨", "yang"),
            ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"), ("徐", "xu"), ("孙", "sun"),
            ("马", "ma"), ("朱", "zhu"), ("胡", "hu"), ("郭", "guo"), ("何", "he"), ("林", "lin"),
            ("罗", "luo"), ("高", "gao"), ("郑", "zheng"), ("梁", "liang"), ("谢", "xie"), ("宋", "song"),
            ("唐", "tang"), ("韩", "han"), ("冯", "feng"), ("邓", "deng"), ("曹", "cao"), ("沈", "shen"))
GIVEN = (("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"), ("丽", "li"),
         ("强", "qiang"), ("磊", "lei"), ("洋", "yang"), ("艳", "yan"), ("勇", "yong"), ("军", "jun"),
         ("杰", "jie"), ("娟", "juan"), ("涛", "tao"), ("明", "ming"), ("超", "chao"), ("秀英", "xiuying"),
         ("霞", "xia"), ("平", "ping"), ("建华", "jianhua"), ("晓燕", "xiaoyan"), ("子涵", "zihan"),
         ("梓萱", "zixuan"), ("浩然", "haoran"), ("雨萱", "yuxuan"), ("思远", "siyuan"), ("欣怡", "xinyi"),
         ("一诺", "yinuo"), ("宇轩", "yuxuan"), ("佳怡", "jiayi"), ("俊杰", "junjie"), ("婷婷", "tingting"),
         ("志强", "zhiqiang"), ("海燕", "haiyan"), ("晨", "chen"), ("嘉怡", "jiayi"), ("文博", "wenbo"))
FIRST_NAMES = ("Emily", "James", "Olivia", "Daniel", "Sophie", "Michael", "Grace", "David", "Chloe", "Kevin",
               "Amy", "Jason", "Lucy", "Eric", "Vivian", "Tony", "Cindy", "Leo", "Iris", "Ryan", "Anna",
               "Peter", "Helen", "Jack")
LAST_NAMES = ("Wang", "Li", "Zhang", "Chen", "Lin", "Huang", "Wong", "Chan", "Lee", "Ng", "Smith", "Brown",
              "Taylor", "Miller", "Johnson", "Martin", "Müller", "Dubois")
CATEGORIES = (("apparel", "AP", 35), ("shoes", "SH", 15), ("accessories", "AC", 15), ("beauty", "BE", 20),
              ("home", "HO", 10), ("food", "FD", 5))
TAGS = (("newsletter", 30), ("wechat-group", 30), ("birthday-club", 15), ("complained", 8), ("staff", 4),
        ("influencer", 5))
VIP_TAG = "vip-preview-night"
# Spend over the last 12 months of the members made to reach a tier (the default ladder's
# thresholds are 3 000, 10 000 and 30 000): (share of members, at least, spend range, purchases).
BIG_SPENDERS = (("diamond", Decimal("0.005"), 1, (31_000, 52_000), (14, 24)),
                ("gold", Decimal("0.03"), 1, (10_800, 24_000), (9, 16)),
                ("silver", Decimal("0.12"), 2, (3_300, 8_500), (5, 10)))
REWARDS = (
    dict(name="咖啡券 Coffee voucher", description="One coffee of any size at the café corner.",
         kind="coupon", cash_value=None, points_cost=Decimal("300"), stock=None, per_member_limit=2,
         limit_period="month", min_tier=None, voucher_valid_days=30),
    dict(name="帆布袋 Canvas tote bag", description="The store's canvas tote, collected at any store.",
         kind="goods", cash_value=None, points_cost=Decimal("1500"), stock=400, per_member_limit=1,
         limit_period="ever", min_tier=None, voucher_valid_days=60),
    dict(name="20元代金券 ¥20 voucher", description="¥20 off a purchase of ¥100 or more.",
         kind="cash_voucher", cash_value=Decimal("20.00"), points_cost=Decimal("2000"), stock=None,
         per_member_limit=None, limit_period="ever", min_tier=None, voucher_valid_days=30),
    dict(name="100元代金券 ¥100 voucher", description="¥100 off a purchase of ¥500 or more.",
         kind="cash_voucher", cash_value=Decimal("100.00"), points_cost=Decimal("9000"), stock=None,
         per_member_limit=None, limit_period="ever", min_tier="silver", voucher_valid_days=30),
    dict(name="造型顾问 Personal styling session", description="An hour with a stylist, by appointment.",
         kind="service", cash_value=None, points_cost=Decimal("5000"), stock=50, per_member_limit=1,
         limit_period="ever", min_tier="gold", voucher_valid_days=90),
)
CAMPAIGN = dict(referrer_points=Decimal("200"), referee_points=Decimal("100"),
                min_first_purchase=Decimal("100.00"), qualify_within_days=30, return_window_days=30,
                max_rewards_per_referrer=10, ambassador_threshold=5, ambassador_bonus_points=Decimal("500"))


# --- the plan: plain data --------------------------------------------------------------------------

@dataclass(frozen=True)
class Person:
    index: int
    name: str
    phone: str
    email: str | None
    birthday: date | None
    channel: str
    joined_at: datetime
    referrer: int | None  # the index of the person whose code they joined with


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str  # setup | join | purchase | refund | activity | redeem | use_voucher | pay | tag
    person: int | None = None
    data: dict = field(default_factory=dict, compare=False)

    @property
    def traceable(self):
        """Whether the database shows that this event was written (by its natural key)."""
        return self.kind in ("setup", "join", "purchase", "refund", "activity", "tag")


@dataclass(frozen=True)
class World:
    anchor: datetime
    people: list
    events: list  # in time order

    def batches(self, size=None):
        """Consecutive events, each batch at least `size` long (but the last) and ending with a
        traceable event (the plan ends with one)."""
        size, batches, current = size or BATCH, [], []
        for event in self.events:
            current.append(event)
            if len(current) >= size and event.traceable:
                batches.append(current)
                current = []
        if current:
            batches.append(current)
        return batches


def plan(rng: random.Random, members: int, anchor: datetime, tz: str = "Asia/Shanghai") -> World:
    """The world of `members` people whose year ends at `anchor` (an aware instant)."""
    start = anchor - timedelta(days=SPAN_DAYS)
    zone = ZoneInfo(tz)
    people = _people(rng, members, start, anchor)
    lapsed = _lapsed(rng, people, start)
    big = _big_spenders(rng, members, exclude=lapsed)
    events = [Event(start - timedelta(days=1), "setup")]
    for person in people:
        events.extend(_life(rng, person, big.get(person.index) or lapsed.get(person.index), anchor, zone))
    events.sort(key=lambda event: event.at)  # stable: a person's events keep their order on a tie
    while not events[-1].traceable:
        # A redemption or a voucher used in the world's last minutes leaves no key to find it by:
        # a resumed run could not tell whether it was written, so the world ends before it.
        events.pop()
    return World(anchor=anchor, people=people, events=events)


def _people(rng, members, start, anchor):
    span = (anchor - start).total_seconds()
    # Joins grow a little over the year (u ** 0.85 leans towards recent days); ids follow joins.
    joined = sorted(start + timedelta(seconds=int(span * rng.random() ** 0.85)) + timedelta(minutes=1)
                    for _ in range(members))
    joined = [min(at, anchor - timedelta(hours=1)) for at in joined]
    joined[0] = min(joined[0], start + timedelta(hours=2))  # the first member joined on the first day
    influence = [rng.paretovariate(1.2) for _ in range(members)]
    phones, emails, people = set(), set(), []
    for index in range(members):
        english = rng.random() < 0.2
        if english:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            name, handle = f"{first} {last}", f"{first.lower()}.{_ascii(last.lower())}"
        else:
            (surname, surname_py), (given, given_py) = rng.choice(SURNAMES), rng.choice(GIVEN)
            name = surname + given
            handle = rng.choice((f"{given_py}.{surname_py}", f"{surname_py}{given_py}",
                                 f"{surname_py}_{given_py}"))
        phone = None
        while phone is None or phone in phones:
            phone = f"+86{rng.choice(PHONE_PREFIXES)}{rng.randrange(10**8):08d}"
        phones.add(phone)
        email = None
        if rng.random() < 0.45:
            while email is None or email in emails:
                email = f"{handle}{rng.randrange(1, 100):02d}@{rng.choice(EMAIL_DOMAINS)}"
            emails.add(email)
        birthday = None
        if rng.random() < 0.8:
            birthday = date(anchor.year - rng.randint(19, 66), 1, 1) + timedelta(days=rng.randrange(365))
        channel = rng.choices([c for c, _ in CHANNELS], [w for _, w in CHANNELS])[0]
        referrer = None
        if index >= max(3, members // 30) and rng.random() < 0.18:
            referrer = rng.choices(range(index), influence[:index])[0]
            if joined[referrer] >= joined[index]:
                referrer = None  # joined the same second: no code to give yet
        people.append(Person(index, name, phone, email, birthday, channel, joined[index], referrer))
    return people


def _ascii(text):
    return text.replace("ü", "ue")


def _lapsed(rng, people, start):
    """{person index: (tier, spend, purchases)}: a few of the first to join spent enough for silver in
    their first weeks, more than a year ago, and little since: tonight's recompute, their tier's
    protection over, takes them down."""
    first = [person.index for person in people if person.joined_at < start + timedelta(days=12)]
    chosen = rng.sample(first, min(len(first), max(1, len(people) // 100)))
    return {index: ("lapsed", (3_300, 6_000), (2, 4)) for index in chosen}


def _big_spenders(rng, members, exclude=()):
    """{person index: (tier, spend range, purchases range)}: members who will reach silver, gold or
    diamond, chosen among the first 40% to join (so that a year of spending fits their time)."""
    early = [index for index in range(max(1, int(members * 0.4))) if index not in exclude]
    rng.shuffle(early)
    chosen = {}
    for tier, share, at_least, spend, count in BIG_SPENDERS:
        wanted = max(at_least, int(members * share))
        for index in early[len(chosen):len(chosen) + wanted]:
            chosen[index] = (tier, spend, count)
    return chosen


def _life(rng, person, big, anchor, zone):
    """The events of one person's year, from joining to the anchor."""
    joined = person.joined_at
    events = [Event(joined, "join", person.index)]
    tenure = (anchor - joined).total_seconds()
    home = rng.choices(STORES, STORE_WEIGHTS)[0]
    churned = big is None and rng.random() < 0.4
    last = joined + timedelta(seconds=tenure * rng.uniform(0.05, 0.9)) if churned else anchor
    buys = big is not None or rng.random() > (0.35 if person.referrer is not None else 0.12)

    times, amounts = [], []
    if big is not None and big[0] == "lapsed":
        _, (low, high), (fewest, most) = big
        count = rng.randint(fewest, most)
        weights = [rng.lognormvariate(0, 0.3) for _ in range(count)]
        amounts = [_price(rng, rng.randint(low, high) * w / sum(weights)) for w in weights]
        # The spending ends while the upgrade's 12 months of protection can still run out by now.
        times = sorted(_between(rng, joined + timedelta(minutes=5), anchor - timedelta(days=368))
                       for _ in range(count))
        later = rng.randint(0, 3)  # and a few small purchases since
        times += sorted(_between(rng, anchor - timedelta(days=300), anchor - timedelta(days=20))
                        for _ in range(later))
        amounts += [_price(rng, rng.uniform(60, 400)) for _ in range(later)]
    elif big is not None:
        _, (low, high), (fewest, most) = big
        target = rng.randint(low, high)  # whole yuan, to spread as shelf prices (_price makes them Decimal)
        count = rng.randint(fewest, most)
        window_start = max(joined + timedelta(hours=2), anchor - timedelta(days=355))
        times = sorted(_between(rng, window_start, anchor - timedelta(hours=2)) for _ in range(count))
        weights = [rng.lognormvariate(0, 0.4) for _ in range(count)]
        amounts = [_price(rng, target * w / sum(weights)) for w in weights]
        if joined < window_start - timedelta(days=7):  # a few purchases before the window
            extra = rng.randint(0, 3)
            before = sorted(_between(rng, joined, window_start) for _ in range(extra))
            times = before + times
            amounts = [_price(rng, rng.lognormvariate(math.log(300), 0.5)) for _ in before] + amounts
    elif buys:
        rate = min(max(rng.lognormvariate(math.log(0.35), 0.8), 0.05), 4.0)  # purchases per 30 days
        ticket = min(max(rng.lognormvariate(math.log(180), 0.5), 30), 1500)
        active_days = (last - joined).total_seconds() / 86400
        count = min(max(1, round(rate * active_days / 30 * rng.uniform(0.7, 1.3))), 40)
        if person.referrer is not None and rng.random() < 0.85:
            first = joined + timedelta(hours=rng.uniform(1, 24 * 6))  # a referred friend comes soon
        elif person.referrer is not None:
            first = joined + timedelta(days=rng.uniform(35, 70))  # too late: the referral expires
        elif person.channel == "store":
            first = joined + timedelta(minutes=rng.uniform(2, 10))  # joined at the till
        else:
            first = joined + timedelta(hours=rng.uniform(1, 24 * 20))
        if first < anchor - timedelta(hours=1):
            end = max(last, first + timedelta(hours=1))
            times = [first] + sorted(_between(rng, first, min(end, anchor - timedelta(minutes=30)))
                                     for _ in range(count - 1))
            amounts = [_price(rng, ticket * rng.lognormvariate(0, 0.45)) for _ in times]
            if person.referrer is not None and rng.random() < 0.1:
                amounts[0] = _price(rng, rng.uniform(39, 95))  # below the campaign's minimum: missed
    events += _purchases(rng, person, times, amounts, home, big is not None, anchor, zone)
    spend = sum(amounts, Decimal(0))
    events += _activities(rng, person, joined, min(last + timedelta(days=rng.uniform(0, 20)), anchor), anchor)
    if times and spend >= 600 and rng.random() < 0.5:
        events += _redemptions(rng, person, times, spend, home, anchor)
    if rng.random() < (0.6 if big is not None else 0.15):
        tags = {VIP_TAG} if big is not None and rng.random() < 0.7 else set()
        tags |= set(rng.choices([tag for tag, _ in TAGS], [weight for _, weight in TAGS], k=rng.choice((1, 1, 2))))
        events.append(Event(_between(rng, joined, anchor - timedelta(minutes=10)), "tag", person.index,
                            {"tags": sorted(tags)}))
    return events


def _between(rng, low, high):
    if high <= low:
        return low
    return low + timedelta(seconds=int(rng.random() * (high - low).total_seconds()))


def _in_opening_hours(rng, at, low, high, zone):
    """The same local day between 10:00 and 22:00, if that stays within (low, high)."""
    local = at.astimezone(zone)
    moved = datetime.combine(local.date(), time(10), zone) + timedelta(seconds=rng.randrange(12 * 3600))
    moved = clock.as_utc(moved)
    return moved if low < moved < high else at


def _price(rng, value):
    """A shelf price: whole yuan, sometimes .50 or .90."""
    yuan = max(9, int(round(value)))
    return Decimal(f"{yuan}.{rng.choice(('00', '00', '00', '50', '90', '80'))}")


def _purchases(rng, person, times, amounts, home, big, anchor, zone):
    events = []
    for number, (at, amount) in enumerate(zip(times, amounts), start=1):
        if number > 1:
            at = _in_opening_hours(rng, at, times[number - 2], anchor - timedelta(minutes=20), zone)
        store = home if rng.random() < 0.8 else rng.choice(STORES)
        receipt = f"DEMO-{person.index + 1:05d}-{number:03d}"
        items = _items(rng, amount) if rng.random() < 0.6 else None
        events.append(Event(at, "purchase", person.index,
                            {"store": store, "receipt": receipt, "amount": amount, "items": items}))
        if not big and rng.random() < 0.05:
            refunded = at + timedelta(hours=rng.uniform(2, 24 * 14))
            if refunded < anchor - timedelta(minutes=5):
                if rng.random() < 0.45:
                    back = amount
                elif items and len(items) > 1:
                    back = items[-1]["amount"]
                else:
                    back = min(Decimal(max(1, int(amount * Decimal(str(round(rng.uniform(0.2, 0.6), 2)))))),
                               amount - Decimal("0.01"))
                if back > 0:
                    events.append(Event(refunded, "refund", person.index,
                                        {"store": store, "receipt": receipt, "refund_no": "DEMO-R1",
                                         "amount": back}))
        if number > 3 and amount >= 150 and rng.random() < 0.08:
            events.append(Event(at + timedelta(seconds=40), "pay", person.index,
                                {"store": store, "payment_no": f"DEMO-P-{person.index + 1:05d}-{number:03d}",
                                 "points": Decimal(rng.choice((500, 1000, 1500, 2000, 3000, 5000)))}))
    return events


def _items(rng, amount):
    """One to four items adding up to the amount."""
    count = rng.choice((1, 1, 2, 2, 3, 4))
    cents = int(amount * 100)
    cuts = sorted(rng.sample(range(1, cents), count - 1)) if count > 1 and cents > count else []
    parts = [b - a for a, b in zip([0] + cuts, cuts + [cents])]
    items = []
    for part in parts:
        category, code, _ = rng.choices(CATEGORIES, [w for _, _, w in CATEGORIES])[0]
        items.append({"sku": f"{code}-{rng.randint(1000, 9999)}", "category": category,
                      "quantity": rng.choice((1, 1, 1, 2)), "amount": Decimal(part) / 100})
    return items


def _activities(rng, person, joined, until, anchor):
    engaged = person.channel != "store" and rng.random() < 0.7 or rng.random() < 0.1
    if not engaged:
        return []
    rate = min(rng.lognormvariate(math.log(0.5), 0.9), 8.0)  # events per 30 days
    days = (until - joined).total_seconds() / 86400
    count = min(int(rate * days / 30 * rng.uniform(0.7, 1.3)), 45)
    events = []
    for number in range(1, count + 1):
        kind = rng.choices(("sign_in", "share", "review"), (70, 20, 10))[0]
        at = _between(rng, joined + timedelta(minutes=5), min(until, anchor - timedelta(minutes=1)))
        events.append(Event(at, "activity", person.index,
                            {"type": kind, "event_id": f"DEMO-{person.index + 1:05d}-{number:04d}"}))
    return events


def _redemptions(rng, person, times, spend, home, anchor):
    """A member with points tries to redeem now and then (what they can have is decided at the
    time, from their balance and the catalog); most vouchers are used at a till within days."""
    attempts = 1 + (spend > 5000) + (spend > 20000)
    events = []
    for _ in range(attempts):
        at = _between(rng, times[len(times) // 2], anchor - timedelta(hours=1))
        preference = [reward["name"] for reward in REWARDS]
        rng.shuffle(preference)
        events.append(Event(at, "redeem", person.index, {"rewards": preference}))
        if rng.random() < 0.75:
            used = at + timedelta(hours=rng.uniform(1, 24 * 20))
            if used < anchor - timedelta(minutes=1):
                events.append(Event(used, "use_voucher", person.index, {"store": home}))
    return events


# --- playing the plan through the services ---------------------------------------------------------

@dataclass
class Report:
    seed: int
    members: int
    anchor: datetime
    already_complete: bool = False
    resumed_at: int = 0  # events already written by an earlier run
    written: int = 0  # events written by this run
    jobs: list = field(default_factory=list)  # (job id, outcome, summary)


def fill(seed=DEFAULT_SEED, members=DEFAULT_MEMBERS, force=False, progress=None, start=None, now=None):
    """Make (or finish) the demo world of `members` people from `seed`. `start(total)` is called
    with the number of events left to write, `progress(n)` after each batch of n events."""
    now = now or clock.now()
    tz = settings().timezone
    actor = ACTOR.format(seed=seed, members=members)
    anchor = _existing_anchor(seed, members) or now.replace(second=0, microsecond=0)
    world = plan(random.Random(seed), members, anchor, tz)
    _check_database(world, force)
    play = Player(world, actor)
    batches = world.batches()
    first = play.first_unwritten(batches)
    report = Report(seed, members, anchor, resumed_at=sum(len(batch) for batch in batches[:first]))
    if first == len(batches) and _jobs_done(anchor, tz):
        report.already_complete = True
        return report
    if start:
        start(sum(len(batch) for batch in batches[first:]))
    for batch in batches[first:]:
        with transaction():
            for event in batch:
                play.run(event)
        db.session.expunge_all()  # a long run should not keep every member it touched
        report.written += len(batch)
        if progress:
            progress(len(batch))
    today = clock.local_date(clock.now(), tz)
    for job_id in JOBS:
        record = runner.run(registry.get(job_id), today)
        report.jobs.append((job_id, record.outcome, record.summary or {}))
    return report


def _existing_anchor(seed, members):
    """The instant an existing demo world ends, read off its campaign; a world of another seed or
    size is refused (it would not be found event by event)."""
    campaign = db.session.scalar(sa.select(ReferralCampaign).where(ReferralCampaign.name == CAMPAIGN_NAME))
    if campaign is None:
        return None
    actor = db.session.scalar(sa.select(AuditEntry.actor).where(
        AuditEntry.entity_type == "referral_campaign", AuditEntry.entity_id == str(campaign.id),
        AuditEntry.action == "referral_campaign.create"))
    made = ACTOR_PATTERN.match(actor or "")
    if made is None:
        raise Conflict(f"A referral campaign named {CAMPAIGN_NAME!r} exists that the demo did not make; "
                       "the demo world needs its own. Rename that campaign, or run the demo on an empty "
                       "database.")
    if (int(made.group(1)), int(made.group(2))) != (seed, members):
        raise Conflict(f"This database holds the demo world made with --seed {made.group(1)} --members "
                       f"{made.group(2)}; run `loyalty demo --seed {made.group(1)} --members {made.group(2)}` "
                       "to check or finish it, or start from an empty database for another world.")
    return clock.as_utc(campaign.starts_at) + timedelta(days=SPAN_DAYS)


def _check_database(world, force):
    """The demo fills an empty database: members it did not make are refused unless forced; a demo
    phone number that belongs to someone else (their purchases would mix) and webhook subscribers
    (they would hear of made-up people) are refused always."""
    planned = {person.phone: person.name for person in world.people}
    ours = 0
    phones = list(planned)
    for low in range(0, len(phones), 500):
        for phone, name in db.session.execute(sa.select(Member.phone, Member.name)
                                              .where(Member.phone.in_(phones[low:low + 500]))):
            if planned[phone] != name:
                raise Conflict(f"The demo's phone number {phone} belongs to member {name!r}, who is not "
                               "part of the demo world; choose another --seed.")
            ours += 1
    total = db.session.scalar(sa.select(sa.func.count()).select_from(Member))
    listening = db.session.scalar(sa.select(sa.func.count()).select_from(Subscription).where(
        Subscription.active.is_(True), Subscription.deleted_at.is_(None)))
    db.session.rollback()
    if listening:
        # Not even with --force: other systems would be told of made-up members and purchases.
        raise Conflict(f"This database has {listening} active webhook subscriptions; the demo's made-up "
                       "members, purchases and tier changes would be sent to them. Pause or delete them "
                       "first, or run the demo on an empty database.")
    if total > ours and not force:
        raise Conflict(f"This database has {total - ours} members who are not part of the demo world. "
                       "`loyalty demo` fills an empty database with made-up members, purchases and "
                       "points, which would mix with real ones in every report; run it on an empty "
                       "database, or add --force to add the demo world next to them.")


def _jobs_done(anchor, tz):
    """Whether each nightly job has succeeded for a day since the world was made."""
    day = clock.local_date(anchor, tz)
    done = db.session.scalars(sa.select(JobRun.job_id).where(
        JobRun.job_id.in_(JOBS), JobRun.outcome == "succeeded", JobRun.as_of >= day).distinct()).all()
    db.session.rollback()
    return set(done) == set(JOBS)


def promotion_plan(start):
    """The demo's promotions, from the world's first day: double points on Tuesday afternoons, still
    running, and a bonus for big baskets in the world's second month, long finished."""
    return [
        ("Double points Tuesday afternoons", {
            "status": "active", "starts_at": start, "ends_at": None,
            "schedule": {"days_of_week": [2], "from": "14:00", "until": "18:00"},
            "effect": {"type": "multiplier", "value": Decimal("2")}, "stacking": "stack", "priority": 0}),
        ("Golden week: 50 points over 200", {
            "status": "active", "starts_at": start + timedelta(days=30), "ends_at": start + timedelta(days=37),
            "scope": {"min_amount": Decimal("200.00")}, "effect": {"type": "bonus", "points": Decimal("50")},
            "limits": {"per_member": 1, "per_member_period": "promotion"}, "stacking": "stack", "priority": 0}),
    ]


class Player:
    """Writes the plan's events through the services, each at its own time."""

    def __init__(self, world, actor):
        self.world, self.actor = world, actor
        self.ids = {}  # person index -> member id

    def member_id(self, index):
        if index not in self.ids:
            found = db.session.scalar(sa.select(Member.id).where(Member.phone == self.world.people[index].phone))
            if found is None:
                return None
            self.ids[index] = found
        return self.ids[index]

    # -- which batches are written

    def first_unwritten(self, batches):
        """Batches commit in order and each ends with a traceable event: binary search."""
        found = bisect_left(range(len(batches)), True, key=lambda i: not self.written(batches[i][-1]))
        db.session.rollback()
        return found

    def written(self, event):
        if event.kind == "setup":
            return db.session.scalar(sa.select(sa.exists().where(ReferralCampaign.name == CAMPAIGN_NAME)))
        member_id = self.member_id(event.person)
        if member_id is None or event.kind == "join":
            return member_id is not None
        data = event.data
        if event.kind == "purchase":
            return db.session.scalar(sa.select(sa.exists().where(
                Purchase.store_id == data["store"], Purchase.receipt_no == data["receipt"])))
        if event.kind == "refund":
            return db.session.scalar(sa.select(sa.exists().where(
                Refund.purchase_id == Purchase.id, Purchase.store_id == data["store"],
                Purchase.receipt_no == data["receipt"], Refund.refund_no == data["refund_no"])))
        if event.kind == "activity":
            return db.session.scalar(sa.select(sa.exists().where(
                Activity.member_id == member_id, Activity.type == data["type"],
                Activity.event_id == data["event_id"])))
        if event.kind == "tag":
            return db.session.scalar(sa.select(sa.exists().where(
                MemberTag.member_id == member_id, MemberTag.tag.in_(data["tags"]))))
        raise ValueError(f"{event.kind} events leave no trace")

    # -- writing one event

    def run(self, event):
        getattr(self, "_" + event.kind)(event, event.at)

    def _setup(self, event, now):
        for fields in REWARDS:
            if db.session.scalar(sa.select(sa.exists().where(Reward.name == fields["name"]))):
                continue
            rewards.create_reward({**fields, "valid_from": None, "valid_until": None, "active": True,
                                   "image_url": None}, self.actor, now=now)
        for name, fields in promotion_plan(now):
            if not db.session.scalar(sa.select(sa.exists().where(Promotion.name == name))):
                promotions.create_promotion({"name": name, **fields}, self.actor, now=now)
        referrals.create_campaign({
            "name": CAMPAIGN_NAME, "starts_at": now + timedelta(days=1), "ends_at": None,
            "link_template": settings().referral_link, **CAMPAIGN}, self.actor, now=now)

    def _join(self, event, now):
        person = self.world.people[event.person]
        code = None
        if person.referrer is not None:
            code = db.session.scalar(sa.select(Member.referral_code)
                                     .where(Member.id == self.member_id(person.referrer)))
        member = members.register_member(person.name, phone=person.phone, email=person.email,
                                          birthday=person.birthday, channel=person.channel,
                                          referral_code=code, now=now)
        self.ids[person.index] = member.id

    def _purchase(self, event, now):
        data = event.data
        points.credit_purchase(self.member_id(event.person), data["store"], data["receipt"], data["amount"],
                               occurred_at=now, items=data["items"], now=now)

    def _refund(self, event, now):
        data = event.data
        purchase = db.session.scalar(sa.select(Purchase).where(
            Purchase.store_id == data["store"], Purchase.receipt_no == data["receipt"]))
        points.refund_purchase(purchase.id, data["store"], data["refund_no"], data["amount"], now=now)

    def _activity(self, event, now):
        points.record_activity(self.member_id(event.person), event.data["type"], event.data["event_id"],
                               occurred_at=now, now=now)

    def _tag(self, event, now):
        segments.add_tags(self.member_id(event.person), event.data["tags"], self.actor, now=now)

    def _redeem(self, event, now):
        """The first reward in the member's order of preference they can have now, if any."""
        member_id = self.member_id(event.person)
        offers = {item["reward"].name: item for item in rewards.catalog(member_id, now=now)}
        for name in event.data["rewards"]:
            if name in offers and offers[name]["redeemable"]:
                rewards.redeem(member_id, offers[name]["reward"].id, now=now)
                return

    def _use_voucher(self, event, now):
        member_id = self.member_id(event.person)
        voucher = db.session.scalar(sa.select(Voucher).where(
            Voucher.member_id == member_id, Voucher.status == "issued", Voucher.created_at < now,
            Voucher.expires_at > now).order_by(Voucher.id))
        if voucher is not None:
            rewards.use_voucher(voucher.code, event.data["store"], now=now)

    def _pay(self, event, now):
        """Points pay part of a bill when the member has enough: what they have, in whole cents."""
        member_id = self.member_id(event.person)
        available = points.points_summary(member_id, now=now)["available"]
        step = points.current_rules().payment_points_per_unit / 100
        paying = min(event.data["points"], (available / step).to_integral_value(ROUND_DOWN) * step)
        if paying >= 100:
            points.pay_with_points(member_id, event.data["store"], event.data["payment_no"], paying, now=now)


# --- what there is -----------------------------------------------------------------------------------

def summary(now=None):
    """Counts for the end of a run: the programme's overview and what the year holds."""
    overview = segments.overview(now)

    def count(model, *where):
        return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))

    spend = db.session.scalar(
        sa.select(sa.type_coerce(sa.func.coalesce(sa.func.sum(Purchase.amount), 0), Money())))
    referral_counts = dict(db.session.execute(
        sa.select(Referral.status, sa.func.count()).group_by(Referral.status)).all())
    return {
        "overview": overview,
        "purchases": count(Purchase), "spend": spend,
        "refunds": count(Refund), "activities": count(Activity),
        "redemptions": count(Redemption), "vouchers_used": count(Voucher, Voucher.status == "used"),
        "points_payments": count(PointsPayment), "tagged_members": db.session.scalar(
            sa.select(sa.func.count(sa.distinct(MemberTag.member_id)))),
        "referrals": referral_counts,
    }


def report_lines(report, figures, seconds):
    """What `loyalty demo` prints at the end."""
    overview = figures["overview"]
    made = f"seed {report.seed}, {report.members} members"
    if report.already_complete:
        lines = [f"The demo world ({made}) is already in this database; nothing was changed."]
    else:
        resumed = f" (an earlier run had written {report.resumed_at})" if report.resumed_at else ""
        lines = [f"Demo world ({made}): {report.written} events written{resumed}, then the nightly jobs:"]
        for job_id, outcome, counts in report.jobs:
            shown = ", ".join(f"{key} {value}" for key, value in counts.items()) if outcome == "succeeded" \
                else f"{outcome}: another runner holds its lock; run `loyalty demo` again later"
            lines.append(f"  {job_id}: {shown}")

    def spread(counts):
        return ", ".join(f"{key} {value}" for key, value in counts.items())

    members, money = overview["members"], overview["points"]
    referral = figures["referrals"]
    lines += [
        f"Members: {members['total']}; by tier: {spread(members['by_tier'])}",
        f"  by lifecycle stage: {spread(members['by_lifecycle_stage'])}",
        f"  by value segment: {spread(members['by_value_segment'])}",
        f"  tagged: {figures['tagged_members']}",
        f"Purchases: {figures['purchases']} ({figures['spend']} {money['outstanding_money_value']['currency']}), "
        f"refunds {figures['refunds']}, activities {figures['activities']}",
        f"Referrals: {sum(referral.values())} ({spread(referral)})",
        f"Rewards: {figures['redemptions']} redemptions, {figures['vouchers_used']} vouchers used at a till; "
        f"points payments {figures['points_payments']}",
        f"Points outstanding: {money['outstanding']} (worth {money['outstanding_money_value']['amount']} "
        f"{money['outstanding_money_value']['currency']}), {money['expiring_30_days']} expiring within 30 days",
        f"Done in {seconds:.1f} s.",
    ]
    return lines
