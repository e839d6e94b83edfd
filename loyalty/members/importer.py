"""Members brought over from a previous system: `loyalty import members FILE.csv [--dry-run]`.

Each row is one member, known by `(channel, external_id)`: a row whose identity is already here
(imported before, or registered since) is left alone, so a second run of a file, or a run after one
killed half-way, changes nothing that was done and does what was left. Rows go in batches, each one
transaction, set-based: the batch's keys, phones and emails are staged in a temporary table (COPY on
PostgreSQL, a multi-row INSERT on SQLite) and checked against the members with one join each; then
members, identities, accounts, entries, lots and tier history are written with one COPY (PostgreSQL)
or one multi-row INSERT (SQLite) per table, ids allocated beforehand. A bad row (invalid phone,
negative points, a missing key, a phone or email already another member's, bad dates, an unknown
tier) goes to the rejects CSV with its reason and does not stop the rest.

An opening balance is one lot with its expiry (given, or the earning rules' policy) and an entry of
type `import`; a tier given is held for the normal protection period, with a tier history line."""
import csv
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from loyalty import clock
from loyalty.config import settings
from loyalty.database import ScaledDecimal, transaction
from loyalty.extensions import db
from loyalty.members import phones
from loyalty.members.models import Member, MemberIdentity
from loyalty.members.service import CODE_ALPHABET, member_number
from loyalty.points import rules as earning
from loyalty.points.ledger import MAX_ACCOUNT_POINTS
from loyalty.points.models import Account, Entry, Lot
from loyalty.points.settings import current_rules
from loyalty.tiers.models import TierChange
from loyalty.tiers.service import ladder, protected_until
from loyalty.webhooks import service as outbox

COLUMNS = ("channel", "external_id", "name", "phone", "email", "birthday", "points", "points_expire_at", "tier")
REQUIRED_COLUMNS = ("channel", "external_id")
BATCH = 5000
ENTRY_TYPE = "import"
POINTS = re.compile(r"^-?[0-9]+(\.[0-9]{1,2})?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class ImportFileError(Exception):
    """The file as a whole cannot be imported (not a CSV with the key columns)."""


@dataclass
class Row:
    line: int
    channel: str
    external_id: str
    name: str
    phone: str | None
    email: str | None
    birthday: date | None
    points: Decimal
    expires_at: datetime | None
    tier: str | None
    raw: dict[str, str]


@dataclass
class Summary:
    rows: int = 0
    imported: int = 0
    already_there: int = 0
    rejected: int = 0
    points: Decimal = Decimal("0.00")
    rejects_path: str | None = None
    dry_run: bool = False
    events: int = 0  # member.created events queued for webhook subscribers
    reasons: dict[str, int] = field(default_factory=dict)


class Rejects:
    """The rejects CSV: the row's line, the reason, then the row as it was; in the file's order
    (a batch's rejects are written when the batch is done)."""

    def __init__(self, out: TextIO, columns: Iterable[str]):
        self.columns = list(columns)
        self.out = out
        self.writer = csv.writer(out)
        self.writer.writerow(["line", "reason", *self.columns])
        self.waiting: list[tuple[int, list[Any]]] = []

    def add(self, summary: Summary, line: int, reason: str, raw: dict[str, str]) -> None:
        summary.rejected += 1
        kind = reason.split(":")[0]
        summary.reasons[kind] = summary.reasons.get(kind, 0) + 1
        self.waiting.append((line, [line, reason, *(raw.get(column) or "" for column in self.columns)]))

    def flush(self) -> None:
        self.writer.writerows(row for _, row in sorted(self.waiting, key=lambda item: item[0]))
        self.waiting = []
        self.out.flush()


def count_rows(path: str) -> int:
    """How many data rows the file has (for the progress bar): a quick pass over its lines."""
    with open(path, encoding="utf-8-sig", newline="") as source:
        return max(sum(1 for _ in csv.reader(source)) - 1, 0)


def import_members(path: str, rejects_out: TextIO, dry_run: bool = False, now: datetime | None = None,
                   progress: Callable[[int], Any] | None = None, batch_size: int = BATCH,
                   webhooks: bool = True) -> Summary:
    """Import the CSV file at `path`; rejected rows are written to `rejects_out`. With `dry_run`,
    every check is made (against the database too) and nothing is written.

    Each imported member is a `member.created` event for the webhook subscribers who want it, as a
    registration is (with `"imported": true`, so a welcome flow can tell them apart), queued in the
    batch's transaction: a system kept in step by webhooks (a CRM, a data warehouse) learns of every
    member however they came. `webhooks=False` (`--no-webhooks`) queues none, for a migration whose
    subscribers already hold these members (they came from there) or should not hear of them."""
    now = now or clock.now()
    summary = Summary(dry_run=dry_run)
    with open(path, encoding="utf-8-sig", newline="") as source:
        reader = csv.DictReader(source)
        header = [name.strip().lower() for name in reader.fieldnames or ()]
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if missing:
            raise ImportFileError(f"The file has no {' or '.join(missing)} column; its first line must name the "
                                  f"columns: {', '.join(COLUMNS)}.")
        reader.fieldnames = header
        rejects = Rejects(rejects_out, header)
        checker = RowChecker(now)
        statistics = {"next": 2 * batch_size}
        read: list[tuple[int, dict[str, Any]]] = []
        for line, raw in enumerate(reader, start=2):
            summary.rows += 1
            read.append((line, raw))
            if len(read) == batch_size:
                _check_and_import(read, checker, rejects, summary, now, dry_run, webhooks)
                _refresh_statistics(summary, statistics)
                read = []
                if progress:
                    progress(batch_size)
        _check_and_import(read, checker, rejects, summary, now, dry_run, webhooks)
        if progress and summary.rows % batch_size:
            progress(summary.rows % batch_size)
    return summary


def _check_and_import(read: list[tuple[int, dict[str, Any]]], checker: "RowChecker", rejects: Rejects,
                      summary: Summary, now: datetime, dry_run: bool, webhooks: bool) -> None:
    """One batch of the file: rows whose identity is here already are counted and left alone before
    anything else is checked (a run resumed after a kill, or run twice, skips the done part quickly);
    the others are checked, then imported."""
    if not read:
        return
    with transaction():
        present = _present_keys({_key(raw) for _, raw in read})
    batch: list[Row] = []
    for line, raw in read:
        if _key(raw) in present:
            summary.already_there += 1
            continue

        def reject(reason: str, line: int = line, raw: dict[str, Any] = raw) -> None:
            rejects.add(summary, line, reason, raw)
        row = checker.check(line, raw, reject)
        if row is not None:
            batch.append(row)
    _import_batch(batch, rejects, summary, now, dry_run, webhooks)
    rejects.flush()


def _key(raw: dict[str, Any]) -> tuple[str, str]:
    return (raw.get("channel") or "").strip().lower(), (raw.get("external_id") or "").strip()


def _present_keys(keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    _probe_by_index()
    _stage([(channel, external_id, None, None) for channel, external_id in keys if channel and external_id])
    present = {(channel, external_id) for channel, external_id in db.session.execute(sa.text(
        f"SELECT s.channel, s.external_id FROM {STAGE} s JOIN member_identities i "
        "ON i.channel = s.channel AND i.external_id = s.external_id"))}
    db.session.execute(sa.text(f"DROP TABLE {STAGE}"))
    return present


class RowChecker:
    """What can be said of a row alone, and of the rows before it in the file (a key, phone or email
    given twice): a checked Row, or None after saying why through `reject`."""

    def __init__(self, now: datetime):
        self.now = now
        self.tz = settings().timezone
        self.region = settings().phone_region
        self.today = clock.local_date(now, self.tz)
        self.rules = current_rules()
        self.tiers = {tier.code for tier in ladder()}
        self.keys: dict[tuple[str, str], int] = {}
        self.phones: dict[str, int] = {}
        self.emails: dict[str, int] = {}

    def check(self, line: int, raw: dict[str, Any], reject: Callable[[str], None]) -> Row | None:
        if None in raw:  # more fields than the header names
            reject("bad row: more fields than the header has columns")
            return None
        value = {key: (raw.get(key) or "").strip() for key in COLUMNS}
        channel, external_id = value["channel"].lower(), value["external_id"]
        if not channel or not external_id:
            reject("missing key: channel and external_id are both required")
            return None
        if len(channel) > 30 or len(external_id) > 100:
            reject("bad key: channel is at most 30 characters, external_id at most 100")
            return None
        if (channel, external_id) in self.keys:
            reject(f"duplicate key: line {self.keys[(channel, external_id)]} has the same channel and external_id")
            return None
        if len(value["name"]) > 100:
            reject("bad name: at most 100 characters")
            return None
        phone = None
        if value["phone"]:
            try:
                phone = phones.to_e164(value["phone"], self.region)
            except phones.InvalidPhone:
                reject(f"invalid phone: {value['phone']!r} is not a valid phone number")
                return None
            if phone in self.phones:
                reject(f"duplicate phone: line {self.phones[phone]} has the same phone number")
                return None
        email = value["email"].lower() or None
        if email is not None:
            if len(email) > 254 or not EMAIL.match(email):
                reject(f"invalid email: {value['email']!r} is not an email address")
                return None
            if email in self.emails:
                reject(f"duplicate email: line {self.emails[email]} has the same email address")
                return None
        birthday = None
        if value["birthday"]:
            birthday = _day(value["birthday"])
            if birthday is None or birthday >= self.today:
                reject(f"bad birthday: {value['birthday']!r} is not a past date written YYYY-MM-DD")
                return None
        points = Decimal("0.00")
        if value["points"]:
            if not POINTS.match(value["points"]):
                reject(f"bad points: {value['points']!r} is not a number of points with at most 2 decimals")
                return None
            points = Decimal(value["points"]).quantize(Decimal("0.01"))
            if points < 0:
                reject(f"negative points: {value['points']} (an opening balance is 0 or more)")
                return None
            if points > MAX_ACCOUNT_POINTS:
                reject(f"bad points: {value['points']} is more than an account holds")
                return None
        expires_at = None
        if value["points_expire_at"]:
            expiry_day = _day(value["points_expire_at"])
            if expiry_day is None:
                reject(f"bad expiry date: {value['points_expire_at']!r} is not a date written YYYY-MM-DD")
                return None
            if expiry_day < self.today:
                reject(f"bad expiry date: {value['points_expire_at']} has passed")
                return None
            expires_at = clock.end_of_local_day(expiry_day, self.tz)  # the points last through that day
        elif points > 0:
            expires_at = earning.expires_at(self.now, self.now, self.rules, self.tz)
        tier = value["tier"].lower() or None
        if tier is not None and tier not in self.tiers:
            reject(f"unknown tier: {value['tier']!r}; the tiers are {', '.join(sorted(self.tiers))}")
            return None
        self.keys[(channel, external_id)] = line
        if phone:
            self.phones[phone] = line
        if email:
            self.emails[email] = line
        return Row(line, channel, external_id, value["name"], phone, email, birthday, points, expires_at, tier,
                   {key: value for key, value in raw.items() if key is not None})


def _day(text: str) -> date | None:
    if not DAY.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


# --- one batch ----------------------------------------------------------------------------------

def _import_batch(batch: list[Row], rejects: Rejects, summary: Summary, now: datetime, dry_run: bool,
                  webhooks: bool) -> None:
    """Check the batch against the database and write what passes, in one transaction. Should a twin
    (a registration, another import) take one of its identities meanwhile, the unique constraints
    refuse the batch; it is checked again and the row now taken is rejected."""
    if not batch:
        return
    for attempt in range(3):
        try:
            with transaction():
                accepted, refused, present = _check_against_members(batch)
                events = 0 if dry_run else _write(accepted, now, webhooks)
            break
        except IntegrityError:
            if attempt == 2:
                raise
    for row, reason in refused:
        rejects.add(summary, row.line, reason, row.raw)
    summary.already_there += present
    summary.events += events
    summary.imported += len(accepted)
    summary.points += sum((row.points for row in accepted), Decimal("0.00"))


STAGE = "import_stage"
STAGE_PHONES = "import_stage_phones"


def _check_against_members(batch: list[Row]) -> tuple[list[Row], list[tuple[Row, str]], int]:
    """(rows to import, rows refused with the reason, how many are here already): one join of the
    staged batch with the members, whatever the batch's size. One statement, so one snapshot: a twin
    import committing between two separate reads would show its members' phones taken and not yet
    their identities, and its rows would be refused as another member's instead of counted as here.

    A phone is matched in every spelling a member may hold it in (E.164, or the old spelling the E.164
    migration left a member whose number another already had: 13800138000, 8613800138000...), as
    registration matches it: each row's candidate spellings are staged too, and a match through a
    spelling that is not the E.164 form counts only if it reads back as the row's number."""
    region = settings().phone_region
    _probe_by_index()
    _stage([(row.channel, row.external_id, row.phone, row.email) for row in batch],
           [(row.channel, row.external_id, spelling) for row in batch if row.phone
            for spelling in phones.candidate_spellings(row.phone, region)])
    found = db.session.execute(sa.text(
        f"SELECT s.channel, s.external_id, i.member_id, p.id, p.phone, e.id FROM {STAGE} s "
        "LEFT JOIN member_identities i ON i.channel = s.channel AND i.external_id = s.external_id "
        f"LEFT JOIN (SELECT sp.channel, sp.external_id, m.id, m.phone FROM {STAGE_PHONES} sp "
        "           JOIN members m ON m.phone = sp.phone) p ON p.channel = s.channel AND p.external_id = s.external_id "
        "LEFT JOIN members e ON e.email = s.email "
        "WHERE i.member_id IS NOT NULL OR p.id IS NOT NULL OR e.id IS NOT NULL")).all()
    db.session.execute(sa.text(f"DROP TABLE {STAGE}"))
    db.session.execute(sa.text(f"DROP TABLE {STAGE_PHONES}"))
    phone_of = {(row.channel, row.external_id): row.phone for row in batch}
    present: set[tuple[str, str]] = set()
    phone_owner: dict[tuple[str, str], int] = {}
    email_owner: dict[tuple[str, str], int] = {}
    for channel, external_id, identity, owner, stored, email_holder in found:
        key = (channel, external_id)
        if identity is not None:
            present.add(key)
        number = phone_of[key]
        if owner is not None and number is not None and (
                stored == number or stored in phones.legacy_spellings(number, region)):
            phone_owner[key] = min(owner, phone_owner.get(key, owner))
        if email_holder is not None:
            email_owner[key] = email_holder
    accepted, refused = [], []
    for row in batch:
        key = (row.channel, row.external_id)
        if key in present:
            continue
        if key in phone_owner:
            refused.append((row, f"phone taken: this phone number already belongs to member {phone_owner[key]}"))
        elif key in email_owner:
            refused.append((row, f"email taken: this email address already belongs to member {email_owner[key]}"))
        else:
            accepted.append(row)
    return accepted, refused, len(present)


def _probe_by_index() -> None:
    """A batch's few thousand rows are looked up in the members' unique indexes, one probe each;
    PostgreSQL's default costs (random_page_cost 4, for disks) make it hash the whole members table
    instead, every batch: at 1 M members 0.3-1 s a batch against 10-60 ms (EXPLAIN ANALYZE in
    bench/README.md). The indexes were written by the batches before, so they are in memory: priced as
    such for this transaction only."""
    if _postgresql():
        db.session.execute(sa.text("SET LOCAL random_page_cost = 1.1"))


def _refresh_statistics(summary: Summary, state: dict[str, int]) -> None:
    """ANALYZE members and identities each time the import has doubled what it added since the last
    time: autovacuum lags a fast import, and a planner that believes the tables a tenth of their size
    chooses scans (about log2(N / batch) times in all, a fraction of a second each)."""
    if not _postgresql() or summary.imported < state.get("next", 0):
        return
    with transaction():
        for table in ("members", "member_identities"):
            db.session.execute(sa.text(f"ANALYZE {table}"))
    state["next"] = max(2 * summary.imported, BATCH)


def _stage(rows: list[tuple[str, str, str | None, str | None]],
           spellings: list[tuple[str, str, str]] | None = None) -> None:
    """The batch's keys, phones and emails in a temporary table, to join with the members; with
    `spellings`, every spelling of each row's phone in a second one."""
    db.session.execute(sa.text(
        f"CREATE TEMPORARY TABLE {STAGE} (channel VARCHAR(30), external_id VARCHAR(100), phone VARCHAR(20), "
        "email VARCHAR(254))"))
    _fill(STAGE, ("channel", "external_id", "phone", "email"), rows)
    if spellings is not None:
        db.session.execute(sa.text(
            f"CREATE TEMPORARY TABLE {STAGE_PHONES} (channel VARCHAR(30), external_id VARCHAR(100), phone VARCHAR(40))"))
        _fill(STAGE_PHONES, ("channel", "external_id", "phone"), spellings)


def _fill(table: str, columns: tuple[str, ...], rows: list[Any]) -> None:
    if _postgresql():
        _copy(table, columns, rows)
        db.session.execute(sa.text(f"ANALYZE {table}"))
    elif rows:
        db.session.execute(sa.text(f"INSERT INTO {table} VALUES ({', '.join(':' + c for c in columns)})"),
                           [dict(zip(columns, r)) for r in rows])


def _write(rows: list[Row], now: datetime, emit: bool) -> int:
    """Write the checked rows; the number of member.created events queued."""
    if not rows:
        return 0
    member_ids = _allocate(Member.__table__, len(rows))
    with_points = [row for row in rows if row.points > 0]
    entry_ids = _allocate(Entry.__table__, len(with_points))
    held_until = protected_until(clock.local_date(now, settings().timezone))
    codes = _codes(len(rows))
    members, identities, accounts, changes = [], [], [], []
    for row, member_id, code in zip(rows, member_ids, codes):
        earned = row.points
        tier = row.tier or "ordinary"
        members.append({
            "id": member_id, "member_no": member_number(member_id), "name": row.name, "phone": row.phone,
            "email": row.email, "birthday": row.birthday, "channel": row.channel,
            "card_token": secrets.token_urlsafe(18), "referral_code": code, "tier_code": tier,
            "tier_since": now, "tier_held_until": held_until if row.tier else None, "status": "active",
            "joined_at": now, "updated_at": now})
        identities.append({"member_id": member_id, "channel": row.channel, "external_id": row.external_id})
        accounts.append({"member_id": member_id, "available": earned, "pending": Decimal("0.00"),
                         "lifetime_earned": earned, "debt": Decimal("0.00"), "updated_at": now})
        if row.tier:
            changes.append({"member_id": member_id, "from_code": None, "to_code": tier, "reason": "import",
                            "note": "The tier the member had in the previous system", "actor": "loyalty import",
                            "created_at": now})
    member_of = {id(row): member_id for row, member_id in zip(rows, member_ids)}
    entries_rows, lots_rows = [], []
    for row, entry_id in zip(with_points, entry_ids):
        member_id = member_of[id(row)]
        entries_rows.append({
            "id": entry_id, "member_id": member_id, "type": ENTRY_TYPE, "points": row.points,
            "balance_after": row.points, "description": "Opening balance from the previous system",
            "reference_type": "import", "reference_id": f"{row.channel}:{row.external_id}"[:64],
            "expires_at": row.expires_at, "created_at": now})
        lots_rows.append({
            "member_id": member_id, "entry_id": entry_id, "points": row.points, "remaining": row.points,
            "status": "available", "available_at": now, "expires_at": row.expires_at, "created_at": now})
    _insert(Member.__table__, members)
    _insert(MemberIdentity.__table__, identities)
    _insert(Account.__table__, accounts)
    _insert(Entry.__table__, entries_rows)
    _insert(Lot.__table__, lots_rows)
    _insert(TierChange.__table__, changes)
    if not emit:
        return 0
    # The registration's event: the same fields, and that the member was imported.
    return outbox.emit_many("member.created", [
        {"member_id": member["id"], "member_no": member["member_no"], "channel": member["channel"],
         "referred_by_id": None, "joined_at": now, "imported": True} for member in members], now)


def _codes(count: int) -> list[str]:
    """Referral codes for new members: random, none already taken (checked in one query). One
    random draw per code (secrets.choice per character is the slowest step of a large import)."""
    codes: set[str] = set()
    base = len(CODE_ALPHABET)
    while len(codes) < count:
        wanted = set()
        for _ in range(count - len(codes)):
            number = secrets.randbelow(base ** 8)
            wanted.add("".join(CODE_ALPHABET[number // base ** place % base] for place in range(8)))
        if _postgresql():
            taken = set(db.session.scalars(sa.text("SELECT referral_code FROM members WHERE referral_code = ANY(:codes)"),
                                           {"codes": list(wanted)}))
        else:
            taken = set(db.session.scalars(sa.select(Member.referral_code).where(Member.referral_code.in_(wanted))))
        codes |= wanted - taken
    return list(codes)[:count]


def _postgresql() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def _allocate(table: Any, count: int) -> list[int]:
    """`count` new ids for `table`, known before the rows are written (so that rows of other tables
    can name them): from the table's sequence on PostgreSQL; on SQLite, after the largest id (the
    write transaction holds the database, so nobody else takes them)."""
    if not count:
        return []
    if _postgresql():
        return list(db.session.scalars(sa.text(
            f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) FROM generate_series(1, :n)"), {"n": count}))
    first = int(db.session.scalar(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))) or 0) + 1
    return list(range(first, first + count))


def _insert(table: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if _postgresql():
        columns = list(rows[0])
        scaled = [(column, table.c[column].type.factor) for column in columns
                  if isinstance(table.c[column].type, ScaledDecimal)]
        # COPY takes what psycopg adapts (aware datetimes, dates, text) as it is; only points and
        # money are stored otherwise (integer hundredths).
        for row in rows:
            for column, factor in scaled:
                row[column] = int(row[column] * factor)
        _copy(table.name, columns, ([row[column] for column in columns] for row in rows))
    else:
        db.session.execute(sa.insert(table), rows)


def _copy(table: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    """COPY rows into `table` on the session's own connection (so in its transaction). A unique
    constraint refusing a row (a twin took the identity meanwhile) is SQLAlchemy's IntegrityError, as
    it would be from an INSERT, so that the batch is checked again."""
    connection: Any = db.session.connection().connection.driver_connection
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    dbapi: Any = db.session.get_bind().dialect.dbapi
    try:
        with connection.cursor() as cursor:
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
    except dbapi.IntegrityError as error:
        raise IntegrityError(statement, None, error) from error


def rejects_path_for(path: str) -> str:
    base = path[:-4] if path.lower().endswith(".csv") else path
    return base + ".rejects.csv"


__all__ = ["COLUMNS", "ImportFileError", "Summary", "count_rows", "import_members", "rejects_path_for"]
