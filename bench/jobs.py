#!/usr/bin/env python
"""Jobs benchmark: the nightly jobs over N members with a year of ledger history.

Run by hand (never a timed test); see bench/README.md, "Jobs benchmark". For each database and each N:

  1. generation (not timed against the target): a fresh database migrated like `flask db upgrade`, then
     N members with a year of purchases (some refunded), activities, points payments and expiries, all
     set-based SQL (PostgreSQL: generate_series; SQLite: recursive CTEs), written as the service would
     have left them after the nightly jobs ran `--backlog-days` (1) days earlier: ledger entries with
     their running balances, lots (pending, available, expired), accounts equal to their lots, tier
     states with upgrades and downgrades due, birthdays spread over the year, pending referrals; then
     the report figures' running sums started from that data (migration 0020's initial fill: the load
     runs with the triggers off); then the lifecycle, value segment and reminder jobs run for the
     previous night (their first run ever on this data, reported as such), so that the bench day finds
     what a normal night finds;
  2. `loyalty.points.verify.broken_accounts` must find nothing, nor `figures.disagreements`;
  3. every job of loyalty/jobs/registry.py in cron order, the way `loyalty jobs run` does it
     (runner.run: the job's lock, a job_runs row, its registry function) inside an app context, for the
     day the data was generated for (the clock frozen at that instant), each timed;
  4. checks: the ledger and the report figures still verify, every member is in the tier the rules
     give (computed here in SQL, independently of the service), and a second run of every job for
     the same day changes nothing.

PostgreSQL: its own database bench_jobs_<N> (dropped and recreated; `test`/`test_*` are refused).
SQLite: /tmp/bench_jobs_<N>.sqlite (recreated). Target: every job <= 60 s at 1 000 000 members.
With --reuse a pristine copy of each generated database is kept (bench_jobs_<N>_seed,
bench_jobs_<N>.seed.sqlite) and later runs start from a copy of it instead of generating again.
"""
import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

TARGET_MEMBERS, TARGET_SECONDS = 1_000_000, 60.0
# Jobs whose state the generator does not write itself: it runs them for the previous night.
PREVIOUS_NIGHT = ("members.lifecycle", "members.value_segments", "points.expiry_reminders")
DAY = 86_400
GENERATOR_VERSION = "5"  # bump when the generated data changes: --reuse then regenerates
BENCH_TABLE = "bench_initial_tiers"  # each member's generated tier state, for the tier check
META_TABLE = "bench_meta"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", action="append",
                   help="member counts: repeatable or a comma list (default 100000,1000000)")
    p.add_argument("--db", choices=("postgres", "sqlite", "both"), default="both")
    p.add_argument("--jobs", help="comma list of job ids to run (default: all, in cron order)")
    p.add_argument("--backlog-days", type=int, default=1,
                   help="the nightly jobs last ran this many days before the bench instant (default 1)")
    p.add_argument("--reuse", action="store_true",
                   help="keep a pristine copy of each generated database and start from it next time")
    p.add_argument("--no-second-run", action="store_true", help="skip the idempotency run of every job")
    p.add_argument("--no-verify", action="store_true", help="skip the ledger and tier checks")
    p.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--pg-port", type=int, default=5432)
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--pg-prefix", default="bench_jobs", help="PostgreSQL database name prefix (+ _<N>)")
    p.add_argument("--sqlite-dir", default="/tmp")
    args = p.parse_args(argv)
    counts = []
    for chunk in args.members or ["100000,1000000"]:
        counts += [int(item.strip().replace("_", "")) for item in chunk.split(",") if item.strip()]
    if not counts or any(n < 1 for n in counts):
        p.error("--members: positive integers")
    args.members = sorted(dict.fromkeys(counts))
    if args.pg_prefix == "test" or args.pg_prefix.startswith("test_"):
        p.error("refusing to use the test databases; pick another --pg-prefix")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.pg_prefix):
        p.error("--pg-prefix: lower-case letters, digits and underscores only")
    if args.backlog_days < 1:
        p.error("--backlog-days: at least 1")
    args.dbs = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    args.job_ids = [j.strip() for j in args.jobs.split(",")] if args.jobs else None
    return args


# --- the machine ------------------------------------------------------------------------------------

def machine_info(args):
    cpu, mem = "?", "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo") as f:
            mem = f"{int(next(line for line in f if line.startswith('MemTotal')).split()[1]) / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "loyalty", "migrations"],
                           capture_output=True, text=True).stdout.strip()
    info = {"code": head + (" + uncommitted changes in loyalty/ or migrations/" if dirty else ""),
            "cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "sqlalchemy": sa.__version__, "postgresql": None}
    if "postgres" in args.dbs:
        with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
            info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0].split()[0]
            info["postgresql_settings"] = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]
                for name in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit")}
    return info


def machine_line(m):
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory']}; Python {m['python']}, "
            + (f"PostgreSQL {m['postgresql']}, " if m["postgresql"] else "")
            + f"SQLite {m['sqlite']}, SQLAlchemy {m['sqlalchemy']}")


def num(value):
    """1 000 000: thousands separated by spaces."""
    return f"{value:,}".replace(",", " ")


def load():
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


class CpuMeter:
    """Cores busy on the whole machine, and this process's share, between start and stop."""

    @staticmethod
    def _busy():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields) - fields[3] - fields[4]  # all but idle and iowait, in clock ticks

    def __enter__(self):
        self.t, self.busy, self.me = time.perf_counter(), self._busy(), time.process_time()
        return self

    def __exit__(self, *exc):
        wall = max(time.perf_counter() - self.t, 1e-9)
        self.seconds = wall
        self.machine = (self._busy() - self.busy) / os.sysconf("SC_CLK_TCK") / wall
        self.python = (time.process_time() - self.me) / wall


# --- databases ----------------------------------------------------------------------------------------

def admin_dsn(args, dbname="postgres"):
    return f"host={args.pg_host} port={args.pg_port} user={args.pg_user} dbname={dbname}"


def pg_name(args, n, suffix=""):
    return f"{args.pg_prefix}_{n}{suffix}"


def sqlite_path(args, n, suffix=""):
    return os.path.join(args.sqlite_dir, f"bench_jobs_{n}{suffix}.sqlite")


def url_of(args, kind, n):
    if kind == "postgres":
        return f"postgresql+psycopg://{args.pg_user}@{args.pg_host}:{args.pg_port}/{pg_name(args, n)}"
    return f"sqlite:///{sqlite_path(args, n)}"


def make_app(url):
    from loyalty import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url, "LOYALTY_LOG_LEVEL": "WARNING"})


def dispose(app):
    from loyalty.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def remove_sqlite(path):
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def pg_drop(conn, name):
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def recreate(args, kind, n):
    """Drop and recreate the database, then migrate it as `flask db upgrade` does (seeds the tiers)."""
    import logging

    import flask_migrate

    if kind == "postgres":
        with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
            pg_drop(conn, pg_name(args, n))
            conn.execute(f'CREATE DATABASE "{pg_name(args, n)}"')
    else:
        remove_sqlite(sqlite_path(args, n))
    app = make_app(url_of(args, kind, n))
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with app.app_context():
        flask_migrate.upgrade()
    dispose(app)


def connect(args, kind, n):
    """A DB-API connection to the bench database (autocommit)."""
    if kind == "postgres":
        return psycopg.connect(admin_dsn(args, pg_name(args, n)), autocommit=True)
    return sqlite3.connect(sqlite_path(args, n), isolation_level=None)


def read_meta(args, kind, n, suffix=""):
    """The seed's metadata, or None if there is no usable seed."""
    try:
        if kind == "postgres":
            with psycopg.connect(admin_dsn(args, pg_name(args, n, suffix)), autocommit=True) as conn:
                if conn.execute("SELECT to_regclass(%s)", (META_TABLE,)).fetchone()[0] is None:
                    return None
                return dict(conn.execute(f"SELECT key, value FROM {META_TABLE}").fetchall())
        path = sqlite_path(args, n, suffix)
        if not os.path.exists(path):
            return None
        with sqlite3.connect(path) as conn:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (META_TABLE,)).fetchone():
                return None
            return dict(conn.execute(f"SELECT key, value FROM {META_TABLE}").fetchall())
    except psycopg.OperationalError:
        return None


def schema_head():
    from alembic.script import ScriptDirectory

    return ScriptDirectory(os.path.join(ROOT, "migrations")).get_current_head()


def seed_usable(meta, n, args):
    """A seed made by this generator, for these settings, at the newest schema."""
    return bool(meta) and meta.get("version") == GENERATOR_VERSION and meta.get("members") == str(n) \
        and meta.get("backlog_days") == str(args.backlog_days) and meta.get("schema") == schema_head()


def save_seed(args, kind, n):
    if kind == "postgres":
        with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
            pg_drop(conn, pg_name(args, n, "_seed"))
            conn.execute(f'CREATE DATABASE "{pg_name(args, n, "_seed")}" TEMPLATE "{pg_name(args, n)}" '
                         "STRATEGY FILE_COPY")
    else:
        with sqlite3.connect(sqlite_path(args, n)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(sqlite_path(args, n), sqlite_path(args, n, ".seed"))


def restore_seed(args, kind, n):
    if kind == "postgres":
        with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
            pg_drop(conn, pg_name(args, n))
            conn.execute(f'CREATE DATABASE "{pg_name(args, n)}" TEMPLATE "{pg_name(args, n, "_seed")}" '
                         "STRATEGY FILE_COPY")  # statistics and the visibility map come along
    else:
        remove_sqlite(sqlite_path(args, n))
        shutil.copyfile(sqlite_path(args, n, ".seed"), sqlite_path(args, n))


# --- the world the data is generated for ---------------------------------------------------------------

class World:
    """The bench instant (the clock is frozen there while the jobs run), the day the jobs run for,
    the previous nightly run, the tier window, and the ladder (read from the database)."""

    def __init__(self, url, now_epoch, backlog_days):
        from zoneinfo import ZoneInfo

        from loyalty import clock
        from loyalty.extensions import db
        from loyalty.tiers import service

        app = make_app(url)
        with app.app_context():
            self.tz = app.config["LOYALTY_TIMEZONE"]
            self.max_drop = app.config["LOYALTY_TIER_MAX_DROP"]
            # Half a second after the last generated instant (they are all whole seconds): no
            # record sits exactly on a boundary the jobs draw relative to now (30, 90, 365 days
            # ago), so a run a microsecond later sees every record on the same side.
            self.now = datetime.fromtimestamp(now_epoch + 0.5, timezone.utc)
            self.as_of = clock.local_date(self.now, self.tz)
            self.start = service.window_start(self.as_of)
            self.judged_at = clock.end_of_local_day(self.as_of, self.tz)
            self.tiers = [tuple(row) for row in db.session.execute(sa.text(
                "SELECT code, rank, qualify_spend, qualify_activities, qualify_mode FROM tiers ORDER BY rank"))]
        dispose(app)
        self.now_epoch = now_epoch
        self.last_run = now_epoch - backlog_days * DAY  # the nightly jobs last ran then
        self.top = len(self.tiers) - 1
        # The zone's offset (Asia/Shanghai has no DST, so one offset serves the whole year).
        self.offset = int(self.now.astimezone(ZoneInfo(self.tz)).utcoffset().total_seconds())

    def qualified_sql(self, spend, acts):
        """The ladder position (0 = lowest) a window's spend (hundredths) and activities earn."""
        whens = []
        for position, (_, _, s, a, mode) in reversed(list(enumerate(self.tiers))):
            if position == 0:
                continue
            if mode == "any" and (s > 0 or a > 0):
                ways = ([f"{spend} >= {s}"] if s > 0 else []) + ([f"{acts} >= {a}"] if a > 0 else [])
                cond = "(" + " OR ".join(ways) + ")"
            else:
                cond = f"({spend} >= {s} AND {acts} >= {a})"
            whens.append(f"WHEN {cond} THEN {position}")
        return f"CASE {' '.join(whens)} ELSE 0 END"

    def position_sql(self, code):
        return "CASE " + " ".join(f"WHEN {code} = '{t[0]}' THEN {i}" for i, t in enumerate(self.tiers)) + " ELSE 0 END"

    def code_sql(self, position):
        return "CASE " + " ".join(f"WHEN {position} = {i} THEN '{t[0]}'" for i, t in enumerate(self.tiers)) + " END"


# --- SQL that differs between the two databases ---------------------------------------------------------

class Postgres:
    kind = "postgres"
    uniform = "random()"
    false = "false"

    @staticmethod
    def trunc(x):
        return f"floor({x})::bigint"

    @staticmethod
    def ts(epoch):
        return f"to_timestamp({epoch})"

    @staticmethod
    def pad(x, width):
        return f"lpad(({x})::text, {width}, '0')"

    @staticmethod
    def least(a, b):
        return f"least({a}, {b})"

    @staticmethod
    def date_plus(day, days):
        return f"(DATE '{day}' + ({days})::int)"

    @staticmethod
    def local_label(epoch, offset, month_only):
        fmt = "YYYY-MM" if month_only else "YYYY-MM-DD"
        return f"to_char(to_timestamp({epoch} + {offset}) AT TIME ZONE 'UTC', '{fmt}')"

    @staticmethod
    def series_join(table, count_col, alias):
        """Each row of `table` repeated `count_col` times, numbered `alias` from 1."""
        return f"{table} p, generate_series(1, p.{count_col}) {alias}"

    @staticmethod
    def numbers(n):
        return f"SELECT g FROM generate_series(1, {n}::bigint) g"


class SQLite:
    kind = "sqlite"
    uniform = "((random() & 4294967295) / 4294967296.0)"  # uniform in [0, 1)
    false = "0"

    @staticmethod
    def trunc(x):
        return f"CAST({x} AS INTEGER)"  # the values are never negative

    @staticmethod
    def ts(epoch):
        return f"(datetime({epoch}, 'unixepoch') || '.000000')"  # how UTCDateTime stores an instant

    @staticmethod
    def pad(x, width):
        return f"printf('%0{width}d', {x})"

    @staticmethod
    def least(a, b):
        return f"min({a}, {b})"

    @staticmethod
    def date_plus(day, days):
        return f"date('{day}', '+' || ({days}) || ' days')"

    @staticmethod
    def local_label(epoch, offset, month_only):
        return f"strftime('{'%Y-%m' if month_only else '%Y-%m-%d'}', {epoch} + {offset}, 'unixepoch')"

    @staticmethod
    def series_join(table, count_col, alias):
        return f"{table} p JOIN bench_k {alias} ON {alias}.k <= p.{count_col}"

    @staticmethod
    def numbers(n):
        return f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {n}) SELECT g FROM s"


# --- generation -----------------------------------------------------------------------------------------

# Per member: purchases floor(21 u^2) (0-20, mean ~6.5) of a typical ticket 50 + 3500 u^6 yuan, each
# 0.5-1.5 x that ticket, at a uniform instant in the last 395 days; 3 % of purchases partly refunded
# within 6 days (points reversed pro rata from the purchase's still pending lot); activities
# floor(9 u^2) (mean ~2.5), 10 % stopped by a cap. Earning rules: 1 point per yuan, pending 7 days
# (the return window), expiring at the end of the 365th local day after they become available.
# 35 % of members paid with points at a till once: part of their first purchase's lot, some time
# between it becoming available and the previous nightly run. Lots that expired before that run
# are expired (with their `expire` entry). That is about 10 ledger entries per member.
# Tier states: the window's spend earns roughly 79 % ordinary, 11 % silver, 8 % gold, 2 % diamond;
# each member's state, by `kind`:
KINDS = """CASE WHEN w < 0.04 THEN 'lapsed' WHEN w < 0.05 THEN 'lapsed2' WHEN w < 0.08 THEN 'protected'
                WHEN w < 0.085 THEN 'guaranteed' WHEN w < 0.12 THEN 'missed' ELSE 'steady' END"""
# steady     (88 %) in the tier the window earns, reached within the last 11 months (protected);
# lapsed      (4 %) one tier above it, reached 12-13 months ago: protection over -> downgrade;
# lapsed2     (1 %) two tiers above, protection over -> downgrade by one (LOYALTY_TIER_MAX_DROP);
# protected   (3 %) one tier above, reached within the last 10 months -> kept;
# guaranteed  (0.5 %) one tier above, protection over, but an admin guaranteed that tier -> kept;
# missed      (3.5 %) one tier below what the window earns (a threshold lowered since) -> upgrade.
# Every 10th member was referred by member id/2: 25 % of those referrals are still pending, with
# deadlines from 10 days ago to 20 days ahead (a third due to expire), the rest expired long ago.
# Birthdays: 1960-01-01 + (id * 37 mod 16000) days, so ~1/365 of members have theirs on any day.

ACTIVITY_TYPES = (("sign_in", 50, "Daily sign-in"), ("share", 50, "Share to a friend"),
                  ("review", 200, "Product review"))


def state_sql(world, ts):
    """SELECT of each member's generated tier state (the bench table's rows)."""
    q = world.qualified_sql("coalesce(s.spend, 0)", "coalesce(a.acts, 0)")
    top, now = world.top, world.now_epoch
    return f"""
        SELECT member_id, spend, acts, qualified, kind, current, {world.code_sql('current')} AS tier_code,
               {ts('since')} AS tier_since,
               CASE WHEN current = 0 THEN NULL ELSE {ts(f'since + 365 * {DAY}')} END AS tier_held_until,
               CASE WHEN kind = 'guaranteed' AND current > 0 THEN {world.code_sql('current')}
               END AS tier_guaranteed_code,
               CASE WHEN kind = 'guaranteed' AND current > 0 THEN {ts(f'{now} + {DAY} + g_days * {DAY}')}
               END AS tier_guaranteed_until
        FROM (
            SELECT member_id, spend, acts, qualified, kind, current, g_days,
                   CASE WHEN current = 0 THEN joined
                        WHEN kind IN ('lapsed', 'lapsed2', 'guaranteed') THEN {now} - 366 * {DAY} - since_s
                        ELSE {now} - 3600 - since_l END AS since
            FROM (
                SELECT member_id, spend, acts, qualified, kind, joined, since_s, since_l, g_days,
                       CASE WHEN kind IN ('lapsed', 'protected', 'guaranteed') AND qualified < {top}
                                 THEN qualified + 1
                            WHEN kind = 'lapsed2' THEN CASE WHEN qualified + 2 > {top} THEN {top}
                                                            ELSE qualified + 2 END
                            WHEN kind = 'missed' AND qualified > 0 THEN qualified - 1
                            ELSE qualified END AS current
                FROM (
                    SELECT p.member_id, coalesce(s.spend, 0) AS spend, coalesce(a.acts, 0) AS acts,
                           {q} AS qualified, {KINDS} AS kind, p.joined,
                           CAST(p.t1 * 29 * {DAY} AS INTEGER) AS since_s,
                           CAST(p.t1 * 300 * {DAY} AS INTEGER) AS since_l,
                           CAST(p.t2 * 60 AS INTEGER) AS g_days
                    FROM bench_profile p
                    LEFT JOIN bench_spend s ON s.member_id = p.member_id
                    LEFT JOIN bench_acts a ON a.member_id = p.member_id
                ) x
            ) y
        ) z"""


def generation_steps(d, n, world):
    """[(step name, [SQL statements])]: the whole generation, for dialect `d`."""
    U, tr, ts, pad, least = d.uniform, d.trunc, d.ts, d.pad, d.least
    G, L, OFF = world.now_epoch, world.last_run, world.offset
    start, judged = int(world.start.timestamp()), int(world.judged_at.timestamp())
    temp = "" if d.kind == "postgres" else "temp."

    def expiry(available):  # the end of the 365th local day after `available`
        return f"(({available} + {OFF}) / {DAY} + 366) * {DAY} - {OFF}"

    rand = ", ".join(f"{U} AS r{i}" for i in range(1, 11))
    steps = [("profile", [
        f"CREATE TEMP TABLE bench_u AS SELECT g, {rand} FROM ({d.numbers(n)}) s",
        f"""CREATE TEMP TABLE bench_profile AS
            SELECT g AS member_id, {tr('21 * r1 * r1')} AS n_purchases, 50 + 3500 * r2*r2*r2*r2*r2*r2 AS ticket,
                   {tr('9 * r3 * r3')} AS n_activities, r4 AS w, r5 AS t1, r6 AS t2,
                   {G} - 395 * {DAY} - {tr(f'r7 * 1500 * {DAY}')} AS joined, r8 AS pay_u, r9 AS pay_f, r10 AS pay_t
            FROM bench_u ORDER BY g""",
        "DROP TABLE bench_u",
    ] + ([] if d.kind == "postgres" else [
        "CREATE TEMP TABLE bench_k AS WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s "
        "WHERE k < 20) SELECT k FROM s"]))]

    # Purchases: draws first (materialised, so each random() is drawn once per row), then values.
    steps.append(("purchases and activities (staging)", [
        f"""CREATE TEMP TABLE bench_pr AS
            SELECT p.member_id, k.k, p.ticket, {U} AS ru, {U} AS rt, {U} AS rr, {U} AS rf, {U} AS rd
            FROM {d.series_join('bench_profile', 'n_purchases', 'k')}""",
        f"""CREATE TEMP TABLE bench_pv AS
            SELECT member_id, k, amount, at, CASE WHEN rr < 0.03 THEN {tr('amount * (0.2 + 0.8 * rf)')}
                                               ELSE 0 END AS refunded,
                   CASE WHEN rr < 0.03 THEN at + {tr(f"rd * {least(f'6 * {DAY}', f'{G} - at')}")} END AS refund_at
            FROM (SELECT member_id, k, {tr('ticket * (0.5 + ru) * 100')} AS amount,
                         {G} - {tr(f'rt * 395 * {DAY}')} AS at, rr, rf, rd FROM bench_pr) x""",
        "DROP TABLE bench_pr",
        f"""CREATE TEMP TABLE bench_ar AS
            SELECT p.member_id, k.k, {U} AS rt, {U} AS rc
            FROM {d.series_join('bench_profile', 'n_activities', 'k')}""",
        f"""CREATE TEMP TABLE bench_a AS
            SELECT row_number() OVER (ORDER BY at, member_id, k) AS aid, member_id, k, type, at, capped,
                   CASE WHEN capped THEN 0 WHEN type = 'review' THEN 200 ELSE 50 END AS points
            FROM (SELECT member_id, k, CASE k % 3 WHEN 0 THEN 'sign_in' WHEN 1 THEN 'share' ELSE 'review' END
                         AS type, {G} - {tr(f'rt * 395 * {DAY}')} AS at, rc < 0.1 AS capped FROM bench_ar) x""",
        "DROP TABLE bench_ar",
    ]))

    # Lots: one per credit, numbered in time order (as the service creates them).
    store = f"'S' || {pad('(c.member_id * 7 + c.k) % 120', 3)}"
    receipt = f"c.at || '-' || {pad('c.member_id', 8)} || '-' || {pad('c.k', 2)}"
    steps.append(("lots (staging)", [
        # A points payment from part of the first purchase's lot, before the previous nightly run.
        f"""CREATE TEMP TABLE bench_l AS
            SELECT lot_id, member_id, k, src, aid, points, at, available_at, expires_at, reversed, refund_at,
                   paid, pay_at, store, receipt,
                   CASE WHEN available_at > {L} THEN 'pending'
                        WHEN expires_at <= {L} AND points - reversed - paid > 0 THEN 'expired'
                        ELSE 'available' END AS status,
                   CASE WHEN available_at <= {L} AND expires_at <= {L} THEN 0
                        ELSE points - reversed - paid END AS remaining,
                   CASE WHEN available_at <= {L} AND expires_at <= {L} THEN points - reversed - paid
                        ELSE 0 END AS expired,
                   {least(f'expires_at + 600', str(L))} AS expire_at
            FROM (SELECT lot_id, member_id, k, src, aid, points, at, available_at, expires_at, reversed, refund_at,
                         CASE WHEN paying THEN
                             {tr('(points - reversed) * (0.3 + 0.7 * pay_f) / 100')} * 100 ELSE 0 END AS paid,
                         CASE WHEN paying THEN available_at + {tr(f"pay_t * ({least('expires_at', str(L))} - available_at)")}
                         END AS pay_at, store, receipt
                  FROM (SELECT c.*, {expiry('c.available_at')} AS expires_at,
                               c.src = 0 AND c.k = 1 AND p.pay_u < 0.35 AND c.available_at < {L} - {DAY} AS paying,
                               p.pay_f, p.pay_t,
                               CASE WHEN c.src = 0 THEN {store} END AS store,
                               CASE WHEN c.src = 0 THEN {receipt} END AS receipt
                        FROM (SELECT row_number() OVER (ORDER BY at, member_id, src, k) AS lot_id, c.*
                              FROM (SELECT member_id, k, 0 AS src, NULL AS aid, amount AS points, at,
                                           at + 7 * {DAY} AS available_at, refunded AS reversed, refund_at
                                    FROM bench_pv
                                    UNION ALL
                                    SELECT member_id, k, 1, aid, points, at, at, 0, NULL FROM bench_a
                                    WHERE points > 0) c) c
                        JOIN bench_profile p ON p.member_id = c.member_id) x) y""",
        "DROP TABLE bench_pv",
    ]))

    # Entries: a credit per lot, a reversal per refund, a payment, an expiry; running balances.
    descriptions = " ".join(f"WHEN e.src = 1 AND e.k % 3 = {i} THEN '{text}'"
                            for i, (_, _, text) in enumerate(ACTIVITY_TYPES))
    steps.append(("ledger entries (staging)", [
        f"""CREATE TEMP TABLE bench_e AS
            SELECT row_number() OVER (ORDER BY at, member_id, ord, lot_id) AS eid, e.*,
                   sum(points) OVER (PARTITION BY member_id ORDER BY at, ord, lot_id ROWS UNBOUNDED PRECEDING)
                   AS balance_after,
                   CASE e.ord WHEN 0 THEN CASE WHEN e.src = 0 THEN 'earn_purchase' ELSE 'earn_activity' END
                              WHEN 1 THEN 'reverse' WHEN 2 THEN 'payment' ELSE 'expire' END AS type,
                   CASE WHEN e.ord = 0 AND e.src = 0 THEN 'Purchase ' || e.receipt || ' at store ' || e.store
                        {descriptions.replace('WHEN e.src', 'WHEN e.ord = 0 AND e.src')}
                        WHEN e.ord = 1 THEN 'Refund RF' || e.lot_id || ' of purchase ' || e.receipt
                        WHEN e.ord = 2 THEN 'Paid ' || (-e.points / 10000) || '.' || {pad('(-e.points / 100) % 100', 2)}
                                            || ' CNY at store ' || e.store || ' (payment P' || e.lot_id || ')'
                        ELSE 'Points expired' END AS description,
                   CASE e.ord WHEN 0 THEN CASE WHEN e.src = 0 THEN 'purchase' ELSE 'activity' END
                              WHEN 1 THEN 'refund' WHEN 2 THEN 'payment' ELSE 'lot' END AS reference_type
            FROM (SELECT member_id, at, 0 AS ord, lot_id, aid, points, src, k, receipt, store, expires_at
                  FROM bench_l
                  UNION ALL SELECT member_id, refund_at, 1, lot_id, NULL, -reversed, src, k, receipt, store, NULL
                            FROM bench_l WHERE reversed > 0
                  UNION ALL SELECT member_id, pay_at, 2, lot_id, NULL, -paid, src, k, receipt, store, NULL
                            FROM bench_l WHERE paid > 0
                  UNION ALL SELECT member_id, expire_at, 3, lot_id, NULL, -expired, src, k, receipt, store, NULL
                            FROM bench_l WHERE expired > 0) e""",
    ] + ([] if d.kind == "postgres" else ["CREATE INDEX temp.bench_e_lot ON bench_e (lot_id, ord)"])))

    # The tables themselves. Ids are given (the staging numbers), so references need no lookups.
    # Purchase ids and refund ids are their lot's id; payment ids too; activity ids are aid.
    items = (f"""'[{{"sku": "SKU' || ((l.member_id * 31 + l.k) % 5000) || '", "category": "general", '
               || '"quantity": 1, "amount": "' || (l.points / 100) || '.' || {pad('l.points % 100', 2)} || '"}}]'""")
    steps.append(("ledger_entries", [f"""
        INSERT INTO ledger_entries (id, member_id, type, points, balance_after, description, reference_type,
                                    reference_id, expires_at, created_at)
        SELECT eid, member_id, type, points, balance_after, description, reference_type,
               CAST(CASE WHEN ord = 0 AND src = 1 THEN aid ELSE lot_id END AS VARCHAR(64)),
               {ts('expires_at')}, {ts('at')}
        FROM bench_e ORDER BY eid"""]))
    steps.append(("lots", [f"""
        INSERT INTO lots (id, member_id, entry_id, points, remaining, status, available_at, expires_at, created_at)
        SELECT l.lot_id, l.member_id, e.eid, l.points, l.remaining, l.status, {ts('l.available_at')},
               {ts('l.expires_at')}, {ts('l.at')}
        FROM bench_l l JOIN bench_e e ON e.lot_id = l.lot_id AND e.ord = 0 ORDER BY l.lot_id"""]))
    json_cast = "::json" if d.kind == "postgres" else ""
    steps.append(("purchases, refunds, payments, activities", [
        f"""INSERT INTO purchases (id, member_id, store_id, receipt_no, amount, eligible_amount, currency,
                                   refunded_amount, points_earned, points_reversed, available_at, items, lot_id,
                                   occurred_at, created_at)
            SELECT l.lot_id, l.member_id, l.store, l.receipt, l.points, l.points, 'CNY', l.reversed, l.points,
                   l.reversed, {ts('l.available_at')}, ({items}){json_cast}, l.lot_id, {ts('l.at')}, {ts('l.at')}
            FROM bench_l l WHERE l.src = 0 ORDER BY l.lot_id""",
        f"""INSERT INTO refunds (id, purchase_id, refund_no, amount, points_reversed, entry_id, created_at)
            SELECT l.lot_id, l.lot_id, 'RF' || l.lot_id, l.reversed, l.reversed, e.eid, {ts('l.refund_at')}
            FROM bench_l l JOIN bench_e e ON e.lot_id = l.lot_id AND e.ord = 1 ORDER BY e.eid""",
        f"""INSERT INTO points_payments (id, member_id, store_id, payment_no, points, money_amount, currency,
                                         status, entry_id, created_at)
            SELECT l.lot_id, l.member_id, l.store, 'P' || l.lot_id, l.paid, l.paid / 100, 'CNY', 'completed',
                   e.eid, {ts('l.pay_at')}
            FROM bench_l l JOIN bench_e e ON e.lot_id = l.lot_id AND e.ord = 2 ORDER BY e.eid""",
        """INSERT INTO lot_allocations (id, entry_id, lot_id, points)
            SELECT e.lot_id, e.eid, e.lot_id, -e.points FROM bench_e e WHERE e.ord = 2 ORDER BY e.eid""",
        f"""INSERT INTO activities (id, member_id, type, event_id, period, points_awarded, capped, occurred_at,
                                    created_at)
            SELECT aid, member_id, type, 'ev' || k, {d.local_label('at', OFF, False)} , points, capped,
                   {ts('at')}, {ts('at')}
            FROM bench_a WHERE type <> 'review'
            UNION ALL
            SELECT aid, member_id, type, 'ev' || k, {d.local_label('at', OFF, True)}, points, capped,
                   {ts('at')}, {ts('at')}
            FROM bench_a WHERE type = 'review' ORDER BY 1""",
    ]))
    # Tier states from the window's spend and activities (as the recompute will count them).
    steps.append(("tier states", [
        f"""CREATE TEMP TABLE bench_spend AS SELECT member_id, sum(points - reversed) AS spend FROM bench_l
            WHERE src = 0 AND at >= {start} AND at < {judged} GROUP BY member_id""",
        f"""CREATE TEMP TABLE bench_acts AS SELECT member_id, count(*) AS acts FROM bench_a
            WHERE at >= {start} AND at < {judged} AND NOT capped GROUP BY member_id""",
        f"CREATE UNIQUE INDEX {temp}bench_spend_member ON bench_spend (member_id)",
        f"CREATE UNIQUE INDEX {temp}bench_acts_member ON bench_acts (member_id)",
        f"CREATE TABLE {BENCH_TABLE} AS {state_sql(world, ts)} ORDER BY member_id",
        f"CREATE UNIQUE INDEX {BENCH_TABLE}_member ON {BENCH_TABLE} (member_id)",
    ]))
    steps.append(("members, accounts, referrals", [
        f"""INSERT INTO members (id, member_no, name, phone, email, birthday, channel, card_token, referral_code,
                                 referred_by_id, tier_code, tier_since, tier_held_until, tier_guaranteed_code,
                                 tier_guaranteed_until, lifecycle_stage, status, joined_at, updated_at)
            SELECT p.member_id, 'M' || {pad('p.member_id', 10)}, 'Bench Member ' || p.member_id,
                   '139' || {pad('p.member_id', 8)},
                   CASE WHEN p.member_id % 3 = 0 THEN 'member' || p.member_id || '@example.com' END,
                   {d.date_plus('1960-01-01', 'p.member_id * 37 % 16000')},
                   CASE p.member_id % 3 WHEN 0 THEN 'app' WHEN 1 THEN 'store' ELSE 'mini_program' END,
                   'c' || p.member_id || '_' || {pad('p.member_id * 7919 % 1000003', 7)},
                   'R' || {pad('p.member_id', 9)},
                   CASE WHEN p.member_id % 10 = 0 THEN p.member_id / 2 END,
                   b.tier_code, b.tier_since, b.tier_held_until, b.tier_guaranteed_code, b.tier_guaranteed_until,
                   NULL, 'active', {ts('p.joined')}, {ts('p.joined')}
            FROM bench_profile p JOIN {BENCH_TABLE} b ON b.member_id = p.member_id ORDER BY p.member_id""",
        f"""INSERT INTO accounts (member_id, available, pending, lifetime_earned, debt, updated_at)
            SELECT p.member_id, coalesce(s.available, 0), coalesce(s.pending, 0), coalesce(s.earned, 0), 0,
                   {ts(f'coalesce(s.last_at, p.joined)')}
            FROM bench_profile p LEFT JOIN (
                SELECT member_id, sum(CASE WHEN status = 'available' THEN remaining ELSE 0 END) AS available,
                       sum(CASE WHEN status = 'pending' THEN remaining ELSE 0 END) AS pending,
                       sum(points - reversed) AS earned, max(at) AS last_at
                FROM bench_l GROUP BY member_id) s ON s.member_id = p.member_id
            ORDER BY p.member_id""",
        f"""INSERT INTO referral_campaigns (id, name, starts_at, ends_at, referrer_points, referee_points,
                                            min_first_purchase, qualify_within_days, return_window_days,
                                            max_rewards_per_referrer, ambassador_threshold, ambassador_bonus_points,
                                            link_template, created_at, updated_at)
            VALUES (1, 'Bench: bring a friend', {ts(G - 2000 * DAY)}, NULL, 1000, 500, 5000, 30, 30, NULL, 10,
                    0, 'https://shop.example/join?ref={{code}}', {ts(G - 2000 * DAY)}, {ts(G - 2000 * DAY)})""",
        f"""INSERT INTO referrals (id, campaign_id, referrer_id, referee_id, status, referrer_points, referee_points,
                                   min_first_purchase, deadline, return_window_days, max_rewards_per_referrer,
                                   purchase_id, referrer_rewarded, points_granted, created_at, settled_at)
            SELECT member_id / 10, 1, member_id / 2, member_id, CASE WHEN pending THEN 'pending' ELSE 'expired' END,
                   1000, 500, 5000, {ts('deadline')}, 30, NULL, NULL, {d.false}, 0, {ts(f'deadline - 30 * {DAY}')},
                   CASE WHEN pending THEN NULL ELSE {ts(f'deadline + {DAY}')} END
            FROM (SELECT member_id, t2 < 0.25 AS pending,
                         CASE WHEN t2 < 0.25 THEN {G} - 10 * {DAY} + {tr(f't2 * 4 * 30 * {DAY}')}
                              ELSE {G} - 30 * {DAY} - {tr(f't2 * 300 * {DAY}')} END AS deadline
                  FROM bench_profile WHERE member_id % 10 = 0) r ORDER BY member_id""",
        # The earning rules the data was made with (pending 7 days); `loyalty serve` stores the defaults.
        f"""INSERT INTO earning_rules (id, settings, version, updated_at)
            VALUES (1, '{json.dumps(earning_rules_document())}', 1, {ts(G - 2000 * DAY)})""",
    ]))
    return steps


def earning_rules_document():
    from loyalty.points.rules import EarningRules

    return {**EarningRules().to_document(), "pending_days": 7}


def generate(args, kind, n, world):
    """Run the generation steps in one session. Returns {step: seconds}."""
    d = Postgres if kind == "postgres" else SQLite
    timings = {}
    conn = connect(args, kind, n)
    x = conn.execute
    if kind == "postgres":
        x("SET session_replication_role = replica")  # no FK triggers while loading in dependency disorder
        x("SET synchronous_commit = off")
        x("SET temp_buffers = '2GB'")
        x("SET work_mem = '1GB'")
        x("SET maintenance_work_mem = '1GB'")
    else:
        x("PRAGMA journal_mode = OFF")
        x("PRAGMA synchronous = OFF")
        x("PRAGMA cache_size = -4000000")  # 4 GB
        x("PRAGMA temp_store = MEMORY")
        x("BEGIN")
    # The plain indexes of the loaded tables go while loading and are built again afterwards (the
    # same DDL, read from the catalog): much faster than inserting millions of rows into them.
    indexes = deferred_indexes(conn, kind)
    for drop, _ in indexes:
        x(drop)
    for name, statements in generation_steps(d, n, world):
        t0 = time.perf_counter()
        for statement in statements:
            x(statement)
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"    {name}: {timings[name]} s", flush=True)
    t0 = time.perf_counter()
    for _, ddl in indexes:
        x(ddl)
    timings["indexes"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    for statement in report_figures_fill(kind):
        x(statement)
    timings["report figures"] = round(time.perf_counter() - t0, 1)
    x(f"CREATE TABLE {META_TABLE} (key VARCHAR(40) PRIMARY KEY, value TEXT)")
    meta = {"version": GENERATOR_VERSION, "members": n, "now_epoch": world.now_epoch,
            "backlog_days": args.backlog_days, "schema": schema_head()}
    for key, value in meta.items():
        x(f"INSERT INTO {META_TABLE} VALUES ('{key}', '{value}')")
    t0 = time.perf_counter()
    if kind == "postgres":
        for table in ("members", "ledger_entries", "lots", "purchases", "refunds", "activities",
                      "points_payments", "lot_allocations", "referrals", "referral_campaigns"):
            x(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        x("VACUUM ANALYZE")
        x("CHECKPOINT")
        timings["vacuum analyze"] = round(time.perf_counter() - t0, 1)
    else:
        x("COMMIT")
        x("PRAGMA journal_mode = WAL")  # what the service's engine uses
    conn.close()
    return timings


def report_figures_fill(kind):
    """The report figures' running sums of the loaded data, as migration 0020 starts them: its
    triggers did not see the load (PostgreSQL loads with session_replication_role = replica), so the
    sums would miss every generated member, account, lot and entry, and `loyalty ledger verify`
    would disagree. What the triggers did add (SQLite's fire per row) is replaced."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "migration_0020", os.path.join(ROOT, "migrations", "versions", "0020_report_figures.py"))
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    dialect = "postgresql" if kind == "postgres" else "sqlite"
    return [f"DELETE FROM {table}" for table, *_ in migration.SPECS] + \
        [migration.initial_fill(table_spec, dialect) for table_spec in migration.SPECS]


LOADED_TABLES = ("members", "accounts", "ledger_entries", "lots", "purchases", "refunds", "activities",
                 "points_payments", "lot_allocations", "referrals")


def deferred_indexes(conn, kind):
    """[(drop, create)]: the loaded tables' indexes that can go while loading, and their DDL from
    the catalog. PostgreSQL: plain indexes and unique constraints (not the primary keys, which
    foreign keys point at); SQLite: plain indexes (its unique constraints are part of the table)."""
    tables = ", ".join(f"'{t}'" for t in LOADED_TABLES)
    if kind == "postgres":
        plain = conn.execute(
            f"SELECT 'DROP INDEX ' || quote_ident(i.indexname), i.indexdef FROM pg_indexes i "
            f"WHERE i.schemaname = current_schema() AND i.tablename IN ({tables}) "
            f"AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)").fetchall()
        unique = conn.execute(
            f"SELECT format('ALTER TABLE %I DROP CONSTRAINT %I', t.relname, c.conname), "
            f"format('ALTER TABLE %I ADD CONSTRAINT %I ', t.relname, c.conname) || pg_get_constraintdef(c.oid) "
            f"FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
            f"WHERE c.contype = 'u' AND t.relname IN ({tables})").fetchall()
        return plain + unique
    return conn.execute(f"SELECT 'DROP INDEX \"' || name || '\"', sql FROM sqlite_master WHERE type = 'index' "
                        f"AND sql IS NOT NULL AND tbl_name IN ({tables})").fetchall()


def table_counts(args, kind, n):
    tables = ("members", "ledger_entries", "lots", "purchases", "refunds", "activities", "points_payments",
              "referrals")
    with connect(args, kind, n) as conn:
        row = conn.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)).fetchone()
        if kind == "postgres":
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    if kind == "sqlite":
        size = os.path.getsize(sqlite_path(args, n))
    return {**dict(zip(tables, row)), "size_mb": round(size / 2**20)}


def due_counts(args, kind, n, world):
    """What the generated data has due for the jobs (before they run)."""
    d = Postgres if kind == "postgres" else SQLite
    ts = d.ts
    G, today = world.now_epoch, world.as_of.strftime("%m-%d")
    month_day = "to_char(birthday, 'MM-DD')" if kind == "postgres" else "strftime('%m-%d', birthday)"
    until = int(world.judged_at.timestamp()) + 30 * DAY
    sql = f"""SELECT
        (SELECT count(*) FROM lots WHERE status = 'pending' AND available_at <= {ts(G)}),
        (SELECT count(*) FROM lots WHERE status = 'available' AND remaining > 0 AND expires_at <= {ts(G)}),
        (SELECT count(*) FROM lots WHERE status = 'available' AND remaining > 0
            AND expires_at > {ts(int(world.judged_at.timestamp()))} AND expires_at <= {ts(until)}),
        (SELECT count(*) FROM members WHERE {month_day} = '{today}'),
        (SELECT count(*) FROM referrals WHERE status = 'pending' AND deadline < {ts(G)})"""
    with connect(args, kind, n) as conn:
        row = conn.execute(sql).fetchone()
    return dict(zip(("pending_lots_due", "lots_past_expiry", "lots_expiring_30d", "birthdays_today",
                     "referrals_past_deadline"), row))


# --- checks ---------------------------------------------------------------------------------------------

def broken(url):
    """What `loyalty ledger verify` would report: broken accounts, then report figures that disagree
    with the rows they sum."""
    from loyalty.extensions import db
    from loyalty.points.verify import broken_accounts
    from loyalty.segments import figures

    app = make_app(url)
    with app.app_context():
        found = [f"{b.member_id}: {b.problem}" for b in broken_accounts(limit=20)]
        found += [f"report figures: {problem}" for problem in figures.disagreements()]
        db.session.remove()
    dispose(app)
    return found


def expected_sql(world, kind):
    """Per member: the ladder position the window earns now, and where one recompute must put them,
    as rules.target_rank says: up at once; down only once the tier's protection is over, by at most
    max_drop, and never below an admin's guaranteed tier while the guarantee lasts."""
    d = Postgres if kind == "postgres" else SQLite
    start, jt = d.ts(int(world.start.timestamp())), d.ts(int(world.judged_at.timestamp()))
    if kind == "sqlite":  # compare as the stored text
        start, jt = (f"'{t.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f')}'"
                     for t in (world.start, world.judged_at))
    spend = (f"SELECT member_id, sum(amount - refunded_amount) AS spend FROM purchases "
             f"WHERE occurred_at >= {start} AND occurred_at < {jt} GROUP BY member_id")
    acts = (f"SELECT member_id, count(*) AS acts FROM activities WHERE occurred_at >= {start} "
            f"AND occurred_at < {jt} AND capped = {d.false} GROUP BY member_id")
    q = world.qualified_sql("coalesce(s.spend, 0)", "coalesce(a.acts, 0)")
    drop = world.max_drop
    return f"""
        SELECT member_id, current, qualified,
               CASE WHEN qualified >= current THEN qualified
                    WHEN protected = 1 THEN current
                    WHEN qualified >= current - {drop} AND qualified >= floor THEN qualified
                    WHEN current - {drop} >= floor THEN current - {drop}
                    ELSE floor END AS target
        FROM (SELECT member_id, current, qualified, protected,
                     CASE WHEN guaranteed < current THEN guaranteed ELSE current END AS floor
              FROM (SELECT b.member_id, b.current, {q} AS qualified,
                           CASE WHEN b.tier_held_until >= {jt} THEN 1 ELSE 0 END AS protected,
                           CASE WHEN b.tier_guaranteed_until >= {jt} THEN {world.position_sql('b.tier_guaranteed_code')}
                                ELSE 0 END AS guaranteed
                    FROM {BENCH_TABLE} b LEFT JOIN ({spend}) s ON s.member_id = b.member_id
                    LEFT JOIN ({acts}) a ON a.member_id = b.member_id) x) e"""


def tier_check(args, kind, n, world):
    """Moves the rules call for from the generated state, and members not where the rules put them."""
    code = world.code_sql("e.target")
    sql = f"""SELECT sum(CASE WHEN e.target > e.current THEN 1 ELSE 0 END),
                     sum(CASE WHEN e.target < e.current THEN 1 ELSE 0 END),
                     sum(CASE WHEN m.tier_code <> {code} THEN 1 ELSE 0 END)
              FROM ({expected_sql(world, kind)}) e JOIN members m ON m.id = e.member_id"""
    with connect(args, kind, n) as conn:
        if kind == "postgres":
            conn.execute("SET work_mem = '256MB'")
        up, down, wrong = conn.execute(sql).fetchone()
    return {"upgrades": up, "downgrades": down, "elsewhere": wrong}


# --- the jobs -------------------------------------------------------------------------------------------

def nightly_order(job_ids=None):
    """The registry's jobs in the order of their cron times (a job running every minute goes last)."""
    from loyalty.jobs.registry import JOBS

    def when(job):
        minute, hour = job.cron.split()[:2]
        return (int(hour), int(minute)) if minute.isdigit() and hour.isdigit() else (99, 99)

    jobs = sorted(JOBS, key=when)
    if job_ids:
        unknown = set(job_ids) - {j.id for j in jobs}
        if unknown:
            raise SystemExit(f"unknown job ids: {', '.join(sorted(unknown))}")
        jobs = [j for j in jobs if j.id in job_ids]
    return jobs


def run_jobs(url, instant, jobs, label):
    """Each job once, as `loyalty jobs run` does it (runner.run: lock, job_runs row, the registry's
    function) for the local day of `instant`, with the clock frozen at `instant`; timed."""
    from loyalty import clock
    from loyalty.extensions import db
    from loyalty.jobs import runner

    app = make_app(url)
    results = []
    with app.app_context(), clock.frozen_at(instant):
        as_of = clock.local_date(instant, app.config["LOYALTY_TIMEZONE"])
        for job in jobs:
            before = load()
            with CpuMeter() as meter:
                record = runner.run(job, as_of)
            if record.outcome != "succeeded":
                raise SystemExit(f"{job.id}: {record.outcome} {record.error}")
            result = {"job": job.id, "seconds": round(meter.seconds, 2), "rows": record.rows,
                      "summary": record.summary, "load_before": before,
                      "machine_cores_busy": round(meter.machine, 2), "python_cores": round(meter.python, 2)}
            db.session.remove()
            results.append(result)
            print(f"  {label} {job.id:26} {result['seconds']:8.2f} s  rows {num(result['rows'] or 0):>9}  "
                  f"{json.dumps(result['summary'], default=str)}  [load {before}, machine {meter.machine:.1f} "
                  f"cores busy, Python {meter.python:.1f}]", flush=True)
    dispose(app)
    return results


# --- main -----------------------------------------------------------------------------------------------

def bench_one(args, kind, n, report):
    print(f"\n=== {kind}, {num(n)} members ===", flush=True)
    url = url_of(args, kind, n)
    entry = {"database": kind, "members": n}
    t0 = time.perf_counter()
    seed = read_meta(args, kind, n, "_seed" if kind == "postgres" else ".seed") if args.reuse else None
    if seed_usable(seed, n, args):
        restore_seed(args, kind, n)
        world = World(url, int(seed["now_epoch"]), args.backlog_days)
        entry["generation"] = {"reused": True, "seconds": round(time.perf_counter() - t0, 1)}
        entry["previous_night"] = json.loads(seed["previous_night"])
        print(f"  copied from the seed in {entry['generation']['seconds']} s")
    else:
        recreate(args, kind, n)
        from loyalty import clock
        world = World(url, int(clock.now().timestamp()), args.backlog_days)
        steps = generate(args, kind, n, world)
        total = round(time.perf_counter() - t0, 1)
        entry["generation"] = {"reused": False, "seconds": total, "steps": steps}
        print(f"  generated in {total} s: " + ", ".join(f"{k} {v} s" for k, v in steps.items()), flush=True)
        # The member jobs and the reminders as they ran the previous night: their first run ever on
        # this data, where every member's stage and segment is new (kept as a from-scratch figure).
        night = datetime.fromtimestamp(world.last_run + 0.5, timezone.utc)
        entry["previous_night"] = run_jobs(url, night, [j for j in nightly_order() if j.id in PREVIOUS_NIGHT],
                                           "previous night (first run ever)")
        with connect(args, kind, n) as conn:
            conn.execute(f"INSERT INTO {META_TABLE} VALUES ('previous_night', '{json.dumps(entry['previous_night'])}')")
            if kind == "postgres":
                conn.execute("VACUUM ANALYZE")  # as autovacuum would have by the next night
                conn.execute("CHECKPOINT")
        if args.reuse:
            t1 = time.perf_counter()
            save_seed(args, kind, n)
            print(f"  seed saved in {time.perf_counter() - t1:.1f} s")
    os.sync()  # the generation's or the copy's writes reach the disk now, not during the first job
    entry["bench_instant"] = world.now.isoformat()
    entry["as_of"] = str(world.as_of)
    counts = table_counts(args, kind, n)
    entry["data"] = counts
    print("  data: " + ", ".join(f"{k} {num(v)}" for k, v in counts.items() if k != "size_mb")
          + f"; {num(counts['size_mb'])} MB; {counts['ledger_entries'] / n:.1f} entries per member")
    due = due_counts(args, kind, n, world)
    entry["due"] = due
    print(f"  as of {world.as_of} (clock frozen at {world.now:%Y-%m-%d %H:%M:%S} UTC; previous nightly run "
          f"{args.backlog_days} day(s) before): " + ", ".join(f"{k.replace('_', ' ')} {num(v)}" for k, v in due.items()))
    if not args.no_verify:
        expected = tier_check(args, kind, n, world)
        entry["tiers_expected"] = expected
        problems = broken(url)
        entry["broken_before"] = problems
        print(f"  ledger verify: {'OK' if not problems else 'BROKEN ' + '; '.join(problems[:5])}; the rules call "
              f"for {num(expected['upgrades'])} upgrades and {num(expected['downgrades'])} downgrades", flush=True)

    jobs = nightly_order(args.job_ids)
    entry["jobs"] = run_jobs(url, world.now, jobs, "run 1")
    if not args.no_verify:
        problems = broken(url)
        entry["broken_after"] = problems
        after = tier_check(args, kind, n, world)
        rec = next((j["summary"] for j in entry["jobs"] if j["job"] == "tiers.recompute"), None)
        ok = after["elsewhere"] == 0 and (rec is None or (rec["upgraded"], rec["downgraded"]) == (
            expected["upgrades"], expected["downgrades"]))
        entry["tiers_ok"] = ok if rec is not None else None
        print(f"  after the jobs: ledger verify {'OK' if not problems else 'BROKEN ' + '; '.join(problems[:5])}"
              + ("" if rec is None else f"; tiers {'OK' if ok else 'MISMATCH'} ({after['elsewhere']} members "
                 f"not where the rules put them)"), flush=True)
    if not args.no_second_run:
        # A microsecond later: a second run must not share the first one's `now`, which the
        # recompute uses to tell its own moves (the data's instants are whole seconds, so
        # nothing new falls due in between).
        second = run_jobs(url, world.now + timedelta(microseconds=1), jobs, "run 2")
        entry["second_run"] = second
        entry["idempotent"] = all(not j["rows"] for j in second)
        print(f"  second run, same day: {'changed nothing' if entry['idempotent'] else 'CHANGED SOMETHING'}")
    report["runs"].append(entry)


def table(runs, key):
    """A markdown table: a row per job, per database and size its seconds (members/s), the
    largest / smallest size time ratio per database, and rows touched."""
    columns = [(r["database"], r["members"]) for r in runs if r.get(key)]
    results = {(r["database"], r["members"], j["job"]): j for r in runs for j in r.get(key) or []}
    job_ids = list(dict.fromkeys(job for _, _, job in results))
    name = {"postgres": "PostgreSQL", "sqlite": "SQLite"}
    ratios = [k for k in ("postgres", "sqlite") if len([c for c in columns if c[0] == k]) >= 2]
    lines = ["| job | " + " | ".join(f"{name[k]} {num(n)}: s (members/s)" for k, n in columns)
             + "".join(f" | {name[k]} ratio" for k in ratios) + " | rows touched |",
             "| --- |" + " ---: |" * (len(columns) + len(ratios)) + " --- |"]
    rows = []
    for job_id in job_ids:
        cells, row = [], {"job": job_id}
        for k, n in columns:
            j = results.get((k, n, job_id))
            if j is None:
                cells.append("")
                continue
            rate = n / j["seconds"] if j["seconds"] else 0
            over = n >= TARGET_MEMBERS and j["seconds"] > TARGET_SECONDS * n / TARGET_MEMBERS
            cells.append(f"{'**' if over else ''}{j['seconds']:.2f}{'**' if over else ''} ({num(round(rate))})")
            row[f"{k}_{n}"] = {"seconds": j["seconds"], "members_per_s": round(rate), "rows": j["rows"]}
        for k in ratios:
            mine = sorted(c for c in columns if c[0] == k)
            a, b = results.get((k, mine[0][1], job_id)), results.get((k, mine[-1][1], job_id))
            ratio = b["seconds"] / a["seconds"] if a and b and a["seconds"] else None
            cells.append("" if ratio is None else f"{ratio:.1f}")
            row[f"{k}_ratio"] = None if ratio is None else round(ratio, 1)
        cells.append(" / ".join(num(results[(k, n, job_id)]["rows"] or 0) for k, n in columns
                                if (k, n, job_id) in results))
        lines.append(f"| {job_id} | " + " | ".join(cells) + " |")
        rows.append(row)
    return "\n".join(lines), rows


def summary(report):
    print("\n=== summary: each job's run for the bench day, in nightly order ===")
    print(f"target: every job <= {TARGET_SECONDS:.0f} s at {num(TARGET_MEMBERS)} members "
          f"(>= {num(round(TARGET_MEMBERS / TARGET_SECONDS))} members/s); bold: missed")
    text, rows = table(report["runs"], "jobs")
    print(text)
    for r in report["runs"]:
        loads = [float(j["load_before"].split("/")[0]) for j in r["jobs"]]
        busiest = max(r["jobs"], key=lambda j: j["machine_cores_busy"] - j["python_cores"])
        print(f"{r['database']} {num(r['members'])}: 1-minute load average before the jobs {min(loads):.2f}-"
              f"{max(loads):.2f}; most cores busy outside this Python process: {busiest['job']} "
              f"{busiest['machine_cores_busy'] - busiest['python_cores']:.1f} (PostgreSQL's backend included)")
    report["summary"], report["table_markdown"] = rows, text
    text, rows = table(report["runs"], "previous_night")
    if rows:
        print("\nfirst run ever (the previous night, on fresh data: every member's stage, segment and "
              "reminders are new):")
        print(text)
        report["summary_first_run_ever"], report["table_first_run_ever_markdown"] = rows, text


def main(argv=None):
    args = parse_args(argv)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(args),
              "settings": {"members": args.members, "databases": args.dbs, "backlog_days": args.backlog_days,
                           "reuse": args.reuse}, "runs": []}
    m = report["machine"]
    print(f"Jobs benchmark: {', '.join(num(n) for n in args.members)} members on {' and '.join(args.dbs)}")
    print(f"machine: {machine_line(m)}; load average {load()}")
    print(f"code: {m['code']}")
    if m.get("postgresql_settings"):
        print("PostgreSQL settings: " + ", ".join(f"{k}={v}" for k, v in m["postgresql_settings"].items()))
    for kind in args.dbs:
        for n in args.members:
            bench_one(args, kind, n, report)
    report["machine"]["load_average_at_end"] = load()
    summary(report)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"figures written to {args.json_out}")


if __name__ == "__main__":
    main()
