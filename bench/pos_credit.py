#!/usr/bin/env python
"""POS credit benchmark: POST /api/v1/purchases under gunicorn against PostgreSQL.

Run by hand (never a timed test); see bench/README.md. In one run it measures:

  1. the framework's ceiling: bench/noop_app.py (POST /noop) under the same gunicorn settings;
  2. the service: POST /api/v1/purchases, distinct receipts, random members out of 10 000;
  3. the database's ceiling: a bare psycopg client issuing the same SQL statements per purchase
     that the service issues, from the same number of concurrent connections (and, if installed,
     pgbench sending them from a C client);
  4. (unless --skip profile) a pyinstrument profile of N purchases in-process (app.test_client()).

The database's ceiling replays one of two statement sets (--statements):

  cte (default): what the service sends now (a plain purchase in one statement with data-modifying
       CTEs, loyalty/points/plain_purchase.py), 4 round trips: BEGIN, the account's lock SELECT
       (plain_purchase._LOCK: member, account and identities, whether a lot falls due, the settings
       version and the member's tags), the one WITH statement (purchase, entry, lot, account, and the
       tier window's spend and activities), COMMIT. No API key statement per credit: the service
       trusts a key it checked in the last 5 s (loyalty/auth.py, roles), so it reads its key at most
       once per 5 s per process; the replay reads it once per connection before measuring and leaves
       that read out;
  orm: what the service sent before that, through the ORM, 10 round trips: BEGIN, the API key's
       SELECT, the lock, INSERT purchase, INSERT entry, UPDATE account, INSERT lot, UPDATE
       purchase.lot_id, the tier window's SELECT, COMMIT (the statements' text as it was then), to
       reproduce the figures measured before.

It creates and drops its own database (default bench_pos); it refuses to touch `test`/`test_*`.
"""
import argparse
import calendar
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import date, datetime, timedelta, timezone
from multiprocessing import get_context
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Json

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
BIN = os.path.dirname(sys.executable)
STORE = "S1"



# The service's own rate limits (LOYALTY_RATE_LIMITS) would throttle a benchmark's one key; the limiter
# still runs on every request, with limits no benchmark reaches.
UNLIMITED = json.dumps({role: "1000000/second" for role in ("pos", "app", "member", "marketing", "admin")})

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20, help="measured duration of each phase (default 20)")
    p.add_argument("--warmup", type=float, default=3, help="warm-up before each HTTP phase (default 3 s)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients/connections (default 32)")
    p.add_argument("--members", type=int, default=10_000, help="members to create (default 10 000)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2: one per core)")
    p.add_argument("--threads", type=int, default=8, help="threads per gthread worker (default 8)")
    p.add_argument("--worker-class", default="gthread", choices=("gthread", "sync"),
                   help="gunicorn worker class (default gthread: keep-alive connections)")
    p.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--sql-processes", type=int, default=2,
                   help="processes of the bare-SQL client; --clients connections split across them")
    p.add_argument("--db-host", default="127.0.0.1")
    p.add_argument("--db-port", type=int, default=5432)
    p.add_argument("--db-user", default="postgres")
    p.add_argument("--db-name", default="bench_pos")
    p.add_argument("--reuse-db", action="store_true",
                   help="keep the existing bench database instead of recreating it (development)")
    p.add_argument("--skip", default="", help="comma list of phases to skip: noop,service,sql,pgbench,profile")
    p.add_argument("--statements", choices=sorted(SQL_TRIPS), default="cte",
                   help="the statement set the bare-SQL client and pgbench replay: cte (default), what the "
                        "service sends now, 4 round trips; orm, what it sent before, 10 round trips")
    p.add_argument("--profile-requests", type=int, default=500, help="purchases in the profile (default 500)")
    p.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")
    p.add_argument("--show-sql", action="store_true",
                   help="print the round trips of one purchase through the app, then stop (needs the DB)")
    args = p.parse_args(argv)
    if args.db_name == "test" or args.db_name.startswith("test_"):
        p.error("refusing to use the test databases; pick another --db-name")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.db_name):
        p.error("--db-name: lower-case letters, digits and underscores only")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    return args


# --- the machine ----------------------------------------------------------------------------------

def machine_info(args):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
        pg_settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                       for name in ("max_connections", "shared_buffers", "synchronous_commit", "fsync")}
    gunicorn_version = subprocess.run([os.path.join(BIN, "gunicorn"), "--version"], capture_output=True,
                                      text=True).stdout.strip()
    wrk = shutil.which("wrk")
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory": mem,
        "python": platform.python_version(), "postgresql": pg, "postgresql_settings": pg_settings,
        "gunicorn": gunicorn_version, "psycopg": psycopg.__version__,
        "wrk": subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout.split("[")[0].strip()
        if wrk else None,
        "load_average_at_start": os.getloadavg(),
    }


# --- the database ---------------------------------------------------------------------------------

def admin_dsn(args, dbname="postgres"):
    return f"host={args.db_host} port={args.db_port} user={args.db_user} dbname={dbname}"


def bench_dsn(args):
    return admin_dsn(args, args.db_name)


def sqlalchemy_url(args):
    return f"postgresql+psycopg://{args.db_user}@{args.db_host}:{args.db_port}/{args.db_name}"


def service_env(args):
    env = dict(os.environ)
    env["LOYALTY_DATABASE_URL"] = sqlalchemy_url(args)
    env["LOYALTY_RATE_LIMITS"] = UNLIMITED
    env.pop("FLASK_APP", None)
    return env


def loyalty_cli(args, *cli_args):
    done = subprocess.run([os.path.join(BIN, "loyalty"), *cli_args], env=service_env(args), cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"`loyalty {' '.join(cli_args)}` failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def create_database(args):
    """Drop and recreate the bench database, migrate it, seed the rules, make a POS key and members."""
    started = time.perf_counter()
    with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                     (args.db_name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}"')
        conn.execute(f'CREATE DATABASE "{args.db_name}"')
    loyalty_cli(args, "db", "upgrade")
    seed_rules(args)
    key = loyalty_cli(args, "api-keys", "create", "--role", "pos", "--store", STORE,
                      "--name", "bench till").strip().splitlines()[-1]
    insert_members(args)
    with psycopg.connect(bench_dsn(args), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    state = {"api_key": key, "members": args.members}
    os.makedirs(RESULTS, exist_ok=True)
    with open(state_path(args), "w") as f:
        json.dump(state, f)
    print(f"  database {args.db_name}: migrated, rules seeded, POS key for store {STORE}, "
          f"{args.members} members ({time.perf_counter() - started:.1f} s)")
    return state


def state_path(args):
    return os.path.join(RESULTS, f"{args.db_name}.state.json")


def load_state(args):
    with open(state_path(args)) as f:
        return json.load(f)


def seed_rules(args):
    """The default earning rules, stored as `loyalty serve` would (the migration stores none)."""
    code = "from loyalty import create_app\nfrom loyalty.points.service import seed_rules\n" \
           "app = create_app()\nwith app.app_context(): seed_rules()\n"
    done = subprocess.run([sys.executable, "-c", code], env=service_env(args), cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"seeding the earning rules failed:\n{done.stderr}")


REFERRAL_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def luhn_member_no(member_id):
    digits = f"8{member_id:09d}"
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:
            value *= 2
            value -= 9 if value > 9 else 0
        total += value
    return digits + str((10 - total % 10) % 10)


def insert_members(args):
    """COPY members and their accounts in one transaction (ids 1..N, so clients pick at random)."""
    now = datetime.now(timezone.utc)
    codes = set()
    while len(codes) < args.members:
        codes.add("".join(secrets.choice(REFERRAL_ALPHABET) for _ in range(8)))
    codes = list(codes)
    with psycopg.connect(bench_dsn(args)) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY members (id, member_no, name, phone, channel, card_token, referral_code, "
                          "tier_code, status, joined_at, tier_since, updated_at) FROM STDIN") as copy:
                for i in range(1, args.members + 1):
                    joined = now - timedelta(days=i % 700)
                    copy.write_row((i, luhn_member_no(i), f"Bench Member {i}", f"139{i:08d}", "store",
                                    secrets.token_urlsafe(18), codes[i - 1], "ordinary", "active",
                                    joined, joined, now))
            with cur.copy("COPY accounts (member_id, available, pending, lifetime_earned, debt, updated_at) "
                          "FROM STDIN") as copy:
                for i in range(1, args.members + 1):
                    copy.write_row((i, 0, 0, 0, 0, now))
            cur.execute("SELECT setval(pg_get_serial_sequence('members', 'id'), %s)", (args.members,))


# --- CPU accounting (who used the 2 cores during a phase) ------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_table():
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                raw = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        table[int(name)] = (comm, int(fields[1]), int(fields[11]) + int(fields[12]), cmdline)
    return table


def _system_busy():
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, sum(values[:8])


class CpuMeter:
    """CPU seconds per category between start() and stop(): server, client, this database's
    PostgreSQL backends, PostgreSQL's shared processes, and everything else on the machine."""

    def __init__(self, dbname, server_pid=None, client_pids=()):
        self.dbname, self.server_pid, self.client_pids = dbname, server_pid, set(client_pids)

    def _categorise(self, table):
        totals = {}
        tree = {self.server_pid} if self.server_pid else set()
        changed = True
        while changed:
            changed = False
            for pid, (_, ppid, _, _) in table.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    changed = True
        clients = set(self.client_pids) | {p for p, row in table.items() if row[1] in self.client_pids}
        backend = re.compile(r"^postgres: .*?(\S+) (\S+) (\[local\]|[\d.:a-f]+\(\d+\))")
        for pid, (comm, _, ticks, cmdline) in table.items():
            match = backend.match(cmdline)
            if pid in tree:
                cat = "server"
            elif pid in clients or pid == os.getpid():
                cat = "client"
            elif match:
                cat = "postgres (bench db)" if match.group(2) == self.dbname else "other"
            elif comm == "postgres" or cmdline.startswith("postgres: "):
                cat = "postgres (shared)"
            else:
                cat = "other"
            totals[pid] = (cat, ticks)
        return totals

    def _sample(self):
        for pid, (cat, ticks) in self._categorise(_proc_table()).items():
            self.last[pid] = (cat, ticks)

    def _run(self):
        while not self._stopping.wait(0.2):
            self._sample()

    def start(self):
        """Sample every 0.2 s, so processes that end before stop() (wrk, pgbench, backends) count."""
        self.before = self._categorise(_proc_table())
        self.last = dict(self.before)
        self.t0, self.busy0 = time.monotonic(), _system_busy()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self):
        self._stopping.set()
        self._thread.join()
        self._sample()
        elapsed = time.monotonic() - self.t0
        busy1 = _system_busy()
        by_cat = {}
        for pid, (cat, ticks) in self.last.items():
            prev = self.before.get(pid)
            delta = ticks - (prev[1] if prev else 0)
            by_cat[cat] = by_cat.get(cat, 0) + max(delta, 0) / CLK_TCK
        machine_busy = (busy1[0] - self.busy0[0]) / CLK_TCK
        by_cat["other"] = max(machine_busy - sum(v for k, v in by_cat.items() if k != "other"), 0.0)
        return {"elapsed_s": round(elapsed, 2), "machine_busy_cores": round(machine_busy / elapsed, 2),
                "cores": {k: round(v / elapsed, 2) for k, v in sorted(by_cat.items())}}


# --- gunicorn -------------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn_command(args, port, app_spec, extra=()):
    cmd = [os.path.join(BIN, "gunicorn"), "-w", str(args.workers), "-k", args.worker_class,
           "-b", f"127.0.0.1:{port}", "--backlog", "2048", "--log-level", "warning",
           "--keep-alive", "30"]
    if args.worker_class == "gthread":
        cmd += ["--threads", str(args.threads)]
    if getattr(args, "reuse_port", False):
        cmd += ["--reuse-port"]
    return cmd + list(extra) + [app_spec]


def gunicorn_settings(args):
    text = f"gunicorn -w {args.workers} -k {args.worker_class}"
    if args.worker_class == "gthread":
        text += f" --threads {args.threads}"
    return text + " --keep-alive 30 --backlog 2048 --log-level warning" + (
        " --reuse-port" if getattr(args, "reuse_port", False) else "")


class Server:
    def __init__(self, args, app_spec, ready_check, extra=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(gunicorn_command(args, self.port, app_spec, extra), cwd=ROOT,
                                     env=service_env(args), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                sys.exit(f"gunicorn exited with {self.proc.returncode}:\n{self.log.read()[-3000:]}")
            try:
                if ready_check(self.url):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                sys.exit("gunicorn did not become ready in 30 s")
            time.sleep(0.2)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.seek(0)
        errors = [line for line in self.log.read().splitlines() if line.strip()]
        return errors

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _post(url, body, headers=None, timeout=5):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status


def noop_ready(url):
    return _post(url + "/noop", {"ping": 1}) == 201


def service_ready(url):
    with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
        return resp.status == 200


# --- wrk ------------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- Generated by bench/pos_credit.py: POST a purchase for a random member with a unique receipt.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  members, prefix, path, key = tonumber(args[1]), args[2], args[3], args[4]
  non2xx = 0
  first_bad = ""
  math.randomseed(tid * 7919 + os.time())
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if key ~= nil and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
end

function request()
  counter = counter + 1
  local body = string.format('{"member_id": %d, "receipt_no": "%s-%d-%d", "amount": "123.45"}',
                             math.random(1, members), prefix, tid, counter)
  return wrk.format("POST", path, nil, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 300) end
  end
end

function done(summary, latency, requests)
  local bad, sample = 0, ""
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
    if sample == "" then sample = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f, "first_bad": "%s"}\n',
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, string.gsub(sample, '[%c"\\]', ' ')))
end
"""


def wrk_script_path():
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "purchase.lua")
    with open(path, "w") as f:
        f.write(WRK_SCRIPT)
    return path


def run_wrk(args, url, path, seconds, prefix, key="", meter=None):
    wrk = shutil.which("wrk")
    cmd = [wrk, "-t", str(args.wrk_threads), "-c", str(args.clients), "-d", f"{seconds:g}s",
           "--timeout", "10s", "-s", wrk_script_path(), url,
           "--", str(args.members), prefix, path, key]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if meter:
        meter.client_pids.add(proc.pid)
        meter.start()
    out, err = proc.communicate()
    cpu = meter.stop() if meter else None
    line = next((line for line in out.splitlines() if line.startswith("WRKJSON ")), None)
    if line is None:
        sys.exit(f"wrk gave no result:\n{out}\n{err}")
    r = json.loads(line[len("WRKJSON "):])
    seconds_run = r["duration_us"] / 1e6
    errors = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    return {"requests": r["requests"], "seconds": round(seconds_run, 2),
            "per_s": r["requests"] / seconds_run,
            "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "max_ms": r["max_us"] / 1000, "mean_ms": r["mean_us"] / 1000,
            "non2xx": r["non2xx"], "socket_errors": {k: r[k] for k in ("connect", "read", "write", "timeout")},
            "errors": errors, "first_bad_response": r["first_bad"] or None, "cpu": cpu}


def http_phase(args, name, app_spec, ready, path, key="", extra=()):
    run_id = f"{name}{int(time.time())}{random.randrange(1000):03d}"
    with Server(args, app_spec, ready, extra) as server:
        if args.warmup > 0:
            run_wrk(args, server.url, path, args.warmup, run_id + "w", key)
        meter = CpuMeter(args.db_name, server_pid=server.proc.pid)
        result = run_wrk(args, server.url, path, args.seconds, run_id, key, meter)
    return result


# --- the database's ceiling: the service's SQL without the service -----------------------------------

# Two statement sets (--statements), captured from one POST /api/v1/purchases: SQLAlchemy's text,
# so the server plans the same thing. `python bench/pos_credit.py --show-sql` prints what the
# service issues now, and says whether the cte set is still it word for word.

# The cte set: what the service sends now for a plain purchase (loyalty/points/plain_purchase.py),
# named placeholders and all, so psycopg sends the same text with the same parameters. Constants
# (the lots' statuses, the 0) are written in the text, as database.PreparedSelect inlines them.
#
# The API key's SELECT (auth._ACTIVE_KEY, in autocommit) is not one of a credit's round trips any
# more: a write trusts a key this process checked in the last 5 s (loyalty/auth.py, roles), so the
# service reads its key at most once per 5 s per process. The replay reads it once per connection,
# before measuring (for the key's id), and leaves that read out of every credit.
SQL_API_KEY = (
    "SELECT api_keys.id, api_keys.name, api_keys.role, api_keys.store_id, (SELECT settings_version.version "
    "FROM settings_version WHERE settings_version.id = 1) AS settings_version FROM api_keys "
    "WHERE api_keys.key_hash = %(key_hash)s::VARCHAR AND api_keys.revoked_at IS NULL")
# plain_purchase._LOCK: the account and the member locked, with what the answer shows of the member,
# its identities, whether a lot falls due, the settings version and the member's tags.
SQL_LOCK_ACCOUNT_WITH_MEMBER = (
    "SELECT members.id, members.member_no, members.name, members.phone, members.email, members.birthday, "
    "members.channel, members.tier_code, members.lifecycle_stage, members.referral_code, "
    "members.ambassador_since, members.joined_at, members.status, members.merged_into_id, "
    "members.referred_by_id, accounts.available, accounts.pending, accounts.held, accounts.debt, "
    "accounts.lifetime_earned, member_identities.channel AS identity_channel, "
    "member_identities.external_id AS identity_external_id, EXISTS (SELECT * FROM lots "
    "WHERE lots.member_id = accounts.member_id AND (lots.status = 'pending' "
    "AND lots.available_at <= %(now)s::TIMESTAMP WITH TIME ZONE OR lots.status = 'available' "
    "AND lots.remaining > 0 AND lots.expires_at <= %(now)s::TIMESTAMP WITH TIME ZONE)) AS has_due, "
    "(SELECT settings_version.version FROM settings_version WHERE settings_version.id = 1) AS settings_version, "
    "(SELECT CAST(json_agg(member_tags.tag) AS TEXT) AS anon_1 FROM member_tags "
    "WHERE member_tags.member_id = members.id) AS tags FROM members "
    "JOIN accounts ON accounts.member_id = members.id "
    "LEFT OUTER JOIN member_identities ON member_identities.member_id = members.id "
    "WHERE members.id = %(member_id)s::BIGINT ORDER BY member_identities.id "
    "FOR NO KEY UPDATE OF accounts, members")
LOCK_AVAILABLE, LOCK_PENDING, LOCK_HELD, LOCK_LIFETIME_EARNED = 15, 16, 17, 19  # their columns in a row
SQL_CREDIT_PURCHASE = (
    "WITH p AS (INSERT INTO purchases (member_id, store_id, receipt_no, amount, eligible_amount, currency, "
    "points_earned, available_at, items, channel, breakdown, lot_id, api_key_id, occurred_at, created_at) "
    "VALUES (%(member_id)s::BIGINT, %(store_id)s::VARCHAR, %(receipt_no)s::VARCHAR, %(amount)s::BIGINT, "
    "%(eligible_amount)s::BIGINT, %(currency)s::VARCHAR, %(points_earned)s::BIGINT, "
    "%(available_at)s::TIMESTAMP WITH TIME ZONE, %(items)s::JSON, %(channel)s::VARCHAR, %(breakdown)s::JSON, "
    "nextval('lots_id_seq'), %(api_key_id)s::BIGINT, %(occurred_at)s::TIMESTAMP WITH TIME ZONE, "
    "%(now)s::TIMESTAMP WITH TIME ZONE) ON CONFLICT (store_id, receipt_no) DO NOTHING "
    "RETURNING purchases.id, purchases.lot_id), "
    "e AS (INSERT INTO ledger_entries (member_id, type, points, balance_after, description, reference_type, "
    "reference_id, expires_at, created_at) SELECT %(member_id)s::BIGINT AS anon_1, 'earn_purchase', "
    "%(points)s::BIGINT AS anon_8, %(balance_after)s::BIGINT AS anon_9, %(description)s::VARCHAR AS anon_10, "
    "'purchase', CAST(p.id AS VARCHAR(64)) AS id, %(expires_at)s::TIMESTAMP WITH TIME ZONE AS anon_11, "
    "%(now)s::TIMESTAMP WITH TIME ZONE AS anon_12 FROM p RETURNING ledger_entries.id), "
    "l AS (INSERT INTO lots (id, member_id, entry_id, points, remaining, status, available_at, expires_at, "
    "created_at) SELECT p.lot_id AS lot_id, %(member_id)s::BIGINT AS anon_1, e.id AS id, "
    "%(points)s::BIGINT AS anon_2, %(points)s::BIGINT AS anon_3, %(status)s::VARCHAR AS anon_4, "
    "%(available_at)s::TIMESTAMP WITH TIME ZONE AS anon_5, %(expires_at)s::TIMESTAMP WITH TIME ZONE AS anon_6, "
    "%(now)s::TIMESTAMP WITH TIME ZONE AS anon_7 FROM p JOIN e ON true RETURNING lots.id), "
    "a AS (UPDATE accounts SET available=%(available)s::BIGINT, pending=%(pending)s::BIGINT, "
    "lifetime_earned=%(lifetime_earned)s::BIGINT, updated_at=%(now)s::TIMESTAMP WITH TIME ZONE "
    "WHERE accounts.member_id = %(member_id)s::BIGINT AND (EXISTS (SELECT p.id FROM p)) "
    "RETURNING accounts.member_id) "
    "SELECT p.id, p.lot_id, e.id AS entry_id, (SELECT coalesce(sum(purchases.amount - purchases.refunded_amount), "
    "0) AS coalesce_1 FROM purchases WHERE purchases.member_id = %(member_id)s::BIGINT AND purchases.occurred_at "
    ">= %(window_start)s::TIMESTAMP WITH TIME ZONE) AS spend, (SELECT count(*) AS count_1 FROM activities "
    "WHERE activities.member_id = %(member_id)s::BIGINT AND activities.occurred_at >= "
    "%(window_start)s::TIMESTAMP WITH TIME ZONE AND activities.capped IS false) AS activities FROM p JOIN e ON true")

# The orm set: what the service sent before the one-statement credit (as it then was, for the figures
# measured with it). The key's SELECT and the lock are the texts of that time.
SQL_API_KEY_ORM = ("SELECT api_keys.id, api_keys.name, api_keys.role, api_keys.store_id FROM api_keys "
                   "WHERE api_keys.key_hash = %s::VARCHAR AND api_keys.revoked_at IS NULL")
PURCHASE_COLUMNS = ("purchases.id, purchases.member_id, purchases.store_id, purchases.receipt_no, "
                    "purchases.amount, purchases.eligible_amount, purchases.currency, "
                    "purchases.refunded_amount, purchases.points_earned, purchases.points_reversed, "
                    "purchases.available_at, purchases.items, purchases.lot_id, purchases.occurred_at, "
                    "purchases.created_at")
SQL_LOCK_ACCOUNT_WITH_MEMBER_ORM = (
    "SELECT members.id, members.member_no, members.name, members.phone, members.email, members.birthday, "
    "members.channel, members.card_token, members.referral_code, members.referred_by_id, members.tier_code, "
    "members.tier_since, members.tier_held_until, members.tier_guaranteed_code, members.tier_guaranteed_until, "
    "members.lifecycle_stage, members.value_segment, members.ambassador_since, members.status, "
    "members.merged_into_id, members.joined_at, members.updated_at, accounts.member_id, accounts.available, "
    "accounts.pending, accounts.lifetime_earned, accounts.debt, accounts.updated_at AS updated_at_1, "
    "EXISTS (SELECT * FROM lots WHERE lots.member_id = accounts.member_id AND (lots.status = %s::VARCHAR "
    "AND lots.available_at <= %s::TIMESTAMP WITH TIME ZONE OR lots.status = %s::VARCHAR "
    "AND lots.remaining > %s::BIGINT AND lots.expires_at <= %s::TIMESTAMP WITH TIME ZONE)) AS anon_1, "
    "member_identities_1.id AS id_1, member_identities_1.member_id AS member_id_1, "
    "member_identities_1.channel AS channel_1, member_identities_1.external_id FROM accounts "
    "JOIN members ON members.id = accounts.member_id LEFT OUTER JOIN member_identities AS member_identities_1 "
    "ON members.id = member_identities_1.member_id WHERE accounts.member_id = %s::BIGINT "
    "ORDER BY member_identities_1.id FOR NO KEY UPDATE OF accounts, members")
SQL_TIER_WINDOW = (
    "SELECT (SELECT coalesce(sum(purchases.amount - purchases.refunded_amount), %s::INTEGER) AS coalesce_1 "
    "FROM purchases WHERE purchases.member_id = %s::BIGINT AND purchases.occurred_at >= "
    "%s::TIMESTAMP WITH TIME ZONE) AS anon_1, (SELECT count(*) AS count_1 FROM activities "
    "WHERE activities.member_id = %s::BIGINT AND activities.occurred_at >= %s::TIMESTAMP WITH TIME ZONE "
    "AND activities.capped IS false) AS anon_2")
SQL_INSERT_PURCHASE = (
    "INSERT INTO purchases (member_id, store_id, receipt_no, amount, eligible_amount, currency, "
    "points_earned, available_at, items, occurred_at, created_at) VALUES (%s::BIGINT, %s::VARCHAR, "
    "%s::VARCHAR, %s::BIGINT, %s::BIGINT, %s::VARCHAR, %s::BIGINT, %s::TIMESTAMP WITH TIME ZONE, %s::JSON, "
    "%s::TIMESTAMP WITH TIME ZONE, %s::TIMESTAMP WITH TIME ZONE) ON CONFLICT (store_id, receipt_no) DO NOTHING "
    f"RETURNING {PURCHASE_COLUMNS}")
SQL_UPDATE_ACCOUNT = ("UPDATE accounts SET available=%s::BIGINT, lifetime_earned=%s::BIGINT, "
                      "updated_at=%s::TIMESTAMP WITH TIME ZONE WHERE accounts.member_id = %s::BIGINT")
SQL_INSERT_ENTRY = (
    "INSERT INTO ledger_entries (member_id, type, points, balance_after, description, reference_type, "
    "reference_id, expires_at, created_at) VALUES (%s::BIGINT, %s::VARCHAR, %s::BIGINT, %s::BIGINT, "
    "%s::VARCHAR, %s::VARCHAR, %s::VARCHAR, %s::TIMESTAMP WITH TIME ZONE, %s::TIMESTAMP WITH TIME ZONE) "
    "RETURNING ledger_entries.id")
SQL_INSERT_LOT = (
    "INSERT INTO lots (member_id, entry_id, points, remaining, status, available_at, expires_at, created_at) "
    "VALUES (%s::BIGINT, %s::BIGINT, %s::BIGINT, %s::BIGINT, %s::VARCHAR, %s::TIMESTAMP WITH TIME ZONE, "
    "%s::TIMESTAMP WITH TIME ZONE, %s::TIMESTAMP WITH TIME ZONE) RETURNING lots.id")
SQL_SET_PURCHASE_LOT = "UPDATE purchases SET lot_id=%s::BIGINT WHERE purchases.id = %s::BIGINT"

# What the bare-SQL client and pgbench send per purchase, by statement set (psycopg sends BEGIN
# before a transaction's first statement, a round trip of its own).
SQL_TRIPS = {
    "cte": "what the service sends now (statement set cte): BEGIN, account + member + identities FOR NO "
           "KEY UPDATE (with whether a lot is due, the settings version and the member's tags), one WITH "
           "statement (INSERT purchase ON CONFLICT DO NOTHING with the lot's id from its sequence, INSERT "
           "entry, INSERT lot, UPDATE account, the member's tier window), COMMIT: 4 round trips (no API "
           "key statement per credit: the service reads its key once per 5 s per process, left out here)",
    "orm": "what the service sent before the one-statement credit (statement set orm): BEGIN, API key, "
           "account + member + identities FOR UPDATE (with whether a lot is due), INSERT purchase ON CONFLICT "
           "DO NOTHING, INSERT entry, UPDATE account, INSERT lot, UPDATE purchase.lot_id, the member's tier "
           "window, COMMIT: 10 round trips",
}

# The service's values for a purchase of 123.45 (hundredths), as purchase_body's, under the default
# earning rules: points at once, expiring at the end of the 365th local day after, and the tier window
# of LOYALTY_TIER_WINDOW_MONTHS ending today (local days, the deployment's LOYALTY_TIMEZONE).
AMOUNT = 12345
CURRENCY = "CNY"
TIMEZONE = os.environ.get("LOYALTY_TIMEZONE", "Asia/Shanghai")
TIER_WINDOW_MONTHS = int(os.environ.get("LOYALTY_TIER_WINDOW_MONTHS", "12"))
EXPIRY_DAYS = 365
BREAKDOWN = [{"source": "base", "name": "Base points", "points": f"{AMOUNT / 100:.2f}"}]


def _start_of_local_day(day):
    return datetime.combine(day, datetime.min.time(), ZoneInfo(TIMEZONE)).astimezone(timezone.utc)


def expiry_and_window(now):
    """(expires_at, window_start) of a purchase credited at `now`, as the service works them out
    (points/rules.py expires_at, days_after_available; tiers/service.py window_start)."""
    today = now.astimezone(ZoneInfo(TIMEZONE)).date()
    expires_at = _start_of_local_day(today + timedelta(days=EXPIRY_DAYS + 1))
    month_index = today.year * 12 + today.month - 1 - TIER_WINDOW_MONTHS
    year, month = divmod(month_index, 12)
    day = min(today.day, calendar.monthrange(year, month + 1)[1])
    return expires_at, _start_of_local_day(date(year, month + 1, day) + timedelta(days=1))


def read_key_id(conn, key_hash):
    """The API key's id, read once per connection before measuring (statement set cte), by the
    service's own key statement in autocommit, as the service reads it (database.PreparedSelect: a
    pooled connection switched to autocommit for the statement; psycopg sends nothing for the
    switch). The service reads it at most once per 5 s per process (auth.roles trusts a key checked
    that recently, for writes too): not one of a credit's round trips, so not replayed per credit."""
    conn.autocommit = True
    try:
        key = conn.execute(SQL_API_KEY, {"key_hash": key_hash}).fetchone()
    finally:
        conn.autocommit = False
    if key is None:
        raise LookupError("the bench's API key is unknown or revoked: recreate the database (drop --reuse-db)")
    return key[0]


def one_purchase(conn, key_id, member_id, receipt):
    """The statements of one credit as the service sends them now (statement set cte), in its order,
    with its values: BEGIN (psycopg's, before the first statement), the lock, the one WITH statement,
    COMMIT. `key_id` is the API key's (read_key_id): no key statement per credit, as the service."""
    now = datetime.now(timezone.utc)
    expires_at, window_start = expiry_and_window(now)
    x = conn.execute
    account = x(SQL_LOCK_ACCOUNT_WITH_MEMBER, {"now": now, "member_id": member_id}).fetchall()[0]
    available, pending = account[LOCK_AVAILABLE] + AMOUNT, account[LOCK_PENDING]
    row = x(SQL_CREDIT_PURCHASE, {
        "member_id": member_id, "points": AMOUNT, "status": "available", "available_at": now,
        "expires_at": expires_at, "now": now, "store_id": STORE, "receipt_no": receipt, "amount": AMOUNT,
        "eligible_amount": AMOUNT, "currency": CURRENCY, "points_earned": AMOUNT, "items": Json(None),
        "channel": None, "breakdown": Json(BREAKDOWN), "api_key_id": key_id, "occurred_at": now,
        "balance_after": available + pending + account[LOCK_HELD],
        "description": f"Purchase {receipt} at store {STORE}",
        "available": available, "pending": pending, "lifetime_earned": account[LOCK_LIFETIME_EARNED] + AMOUNT,
        "window_start": window_start}).fetchone()
    if row is None:
        raise psycopg.DataError(f"receipt {receipt} was recorded before: nothing written")
    conn.commit()


def one_purchase_orm(conn, key_hash, member_id, receipt):
    """The statements of one credit as the service sent them before the one-statement credit
    (statement set orm), in its order, with its values; the key's SELECT inside the transaction."""
    now = datetime.now(timezone.utc)
    expires = (now + timedelta(days=366)).replace(hour=16, minute=0, second=0, microsecond=0)
    amount = AMOUNT
    x = conn.execute
    x(SQL_API_KEY_ORM, (key_hash,)).fetchone()
    account = x(SQL_LOCK_ACCOUNT_WITH_MEMBER_ORM, ("pending", now, "available", 0, now, member_id)).fetchall()[0]
    available, pending, lifetime = account[23] + amount, account[24], account[25] + amount
    purchase_id = x(SQL_INSERT_PURCHASE, (member_id, STORE, receipt, amount, amount, CURRENCY, amount, now,
                                          "null", now, now)).fetchone()[0]
    entry_id = x(SQL_INSERT_ENTRY, (member_id, "earn_purchase", amount, available + pending,
                                    f"Purchase {receipt} at store {STORE}", "purchase", str(purchase_id),
                                    expires, now)).fetchone()[0]
    x(SQL_UPDATE_ACCOUNT, (available, lifetime, now, member_id))
    lot_id = x(SQL_INSERT_LOT, (member_id, entry_id, amount, amount, "available", now, expires,
                                now)).fetchone()[0]
    x(SQL_SET_PURCHASE_LOT, (lot_id, purchase_id))
    window = now - timedelta(days=365)
    x(SQL_TIER_WINDOW, (0, member_id, window, member_id, window)).fetchone()
    conn.commit()


ONE_PURCHASE = {"cte": one_purchase, "orm": one_purchase_orm}
# What a connection does once, before its credits, by statement set: its second argument to
# ONE_PURCHASE (cte: the key's id, read once; orm: the key's hash, for its SELECT in every credit).
CONNECTION_SETUP = {"cte": read_key_id, "orm": lambda conn, key_hash: key_hash}


def _sql_thread(dsn, statements, key_hash, members, prefix, start_at, measure_at, end_at, out):
    purchase = ONE_PURCHASE[statements]
    rng = random.Random(prefix)
    latencies, errors, first_error, n = [], 0, None, 0
    with psycopg.connect(dsn) as conn:
        try:
            key = CONNECTION_SETUP[statements](conn, key_hash)
        except (psycopg.Error, LookupError) as error:
            out.append(([], 1, repr(error)))
            return
        while time.time() < start_at:
            time.sleep(0.005)
        while True:
            t0 = time.time()
            if t0 >= end_at:
                break
            n += 1
            try:
                purchase(conn, key, rng.randint(1, members), f"{prefix}-{n}")
            except psycopg.Error as error:
                conn.rollback()
                errors += 1
                first_error = first_error or repr(error)
                continue
            t1 = time.time()
            if t0 >= measure_at and t1 <= end_at:
                latencies.append(t1 - t0)
    out.append((latencies, errors, first_error))


def _sql_process(dsn, statements, key_hash, members, prefix, threads, start_at, measure_at, end_at):
    out = []
    workers = [threading.Thread(target=_sql_thread, args=(dsn, statements, key_hash, members, f"{prefix}t{i}",
                                                          start_at, measure_at, end_at, out))
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def sql_phase(args, state):
    """The statement set `args.statements` from `args.clients` psycopg connections: purchases per
    second, latencies, errors (0 expected: every receipt is new) and the CPU used."""
    import hashlib

    key_hash = hashlib.sha256(state["api_key"].encode()).hexdigest()
    processes = max(1, min(args.sql_processes, args.clients))
    split = [args.clients // processes + (1 if i < args.clients % processes else 0) for i in range(processes)]
    warmup = min(args.warmup, 2)
    start_at = time.time() + 1.5  # time for every connection to open first
    measure_at, end_at = start_at + warmup, start_at + warmup + args.seconds
    prefix = f"sql{int(time.time())}"
    meter = CpuMeter(args.db_name, client_pids={os.getpid()})
    with get_context("fork").Pool(processes) as pool:
        pending = [pool.apply_async(_sql_process, (bench_dsn(args), args.statements, key_hash, args.members,
                                                   f"{prefix}p{i}", n, start_at, measure_at, end_at))
                   for i, n in enumerate(split)]
        while time.time() < measure_at:
            time.sleep(0.01)
        meter.start()
        results = [item for p in pending for item in p.get()]
        cpu = meter.stop()
    latencies = sorted(l for lat, _, _ in results for l in lat)
    errors = sum(e for _, e, _ in results)
    first = next((f for _, _, f in results if f), None)
    return {"requests": len(latencies), "seconds": args.seconds,
            "per_s": len(latencies) / args.seconds, **percentiles(latencies), "errors": errors,
            "first_error": first, "cpu": cpu,
            "client": f"{processes} processes x {split} threads, one psycopg connection each",
            "statements": args.statements}


def percentiles(sorted_seconds):
    if not sorted_seconds:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}

    def pct(q):
        return sorted_seconds[min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))] * 1000

    return {"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": sorted_seconds[-1] * 1000, "mean_ms": statistics.fmean(sorted_seconds) * 1000}




# --- the same statements from pgbench (a C client: the database's ceiling without Python) ------------

def pgbench_script(state, members, statements="cte", key_id=None):
    """pgbench's script of one credit in statement set `statements` (cte: what the service sends now;
    orm: what it sent before), the service's statements with its values: pgbench sends each
    :variable as a parameter under -M prepared, and a value it cannot make (a text, a timestamp) is
    written in the statement (now() for the service's `now`; a fixed instant as to_timestamp(epoch),
    since pgbench would take the colons of a timestamp's text, even quoted, for variables).
    cte: `key_id` is the API key's id (read_key_id, once, before the run), sent as a parameter."""
    import hashlib

    key_hash = hashlib.sha256(state["api_key"].encode()).hexdigest()
    if statements == "orm":
        return _pgbench_orm_script(key_hash, members)
    if key_id is None:
        raise ValueError("statement set cte: pgbench_script needs the API key's id (read_key_id)")
    # Receipts: the run's prefix, the client and a random number (distinct within a run and across runs).
    receipt = f"('pgb{int(time.time())}-' || CAST(:rr AS text))"
    expires_at, window_start = expiry_and_window(datetime.now(timezone.utc))
    values = {
        "member_id": ":member", "store_id": f"'{STORE}'", "receipt_no": receipt, "amount": str(AMOUNT),
        "eligible_amount": str(AMOUNT), "currency": f"'{CURRENCY}'", "points_earned": str(AMOUNT),
        "points": str(AMOUNT), "available_at": "now()", "occurred_at": "now()", "now": "now()",
        "items": "'null'", "channel": "NULL", "breakdown": "'" + json.dumps(BREAKDOWN) + "'",
        "api_key_id": ":k_id", "balance_after": ":balance",
        "description": f"('Purchase ' || {receipt} || ' at store {STORE}')", "status": "'available'",
        "expires_at": f"to_timestamp({expires_at.timestamp():.0f})", "available": ":available",
        "pending": ":a_pending", "lifetime_earned": ":lifetime_earned",
        "window_start": f"to_timestamp({window_start.timestamp():.0f})",
    }

    def pgbench_sql(sql):
        return re.sub(r"%\((\w+)\)s", lambda m: values[m.group(1)], sql)

    lines = [
        f"\\set member random(1, {members})",
        "\\set rr :client_id * 1000000000000 + random(1, 999999999999)",
        # No key statement per credit: the service reads its key at most once per 5 s per process.
        f"\\set k_id {int(key_id)}",
        "BEGIN;",
        pgbench_sql(SQL_LOCK_ACCOUNT_WITH_MEMBER) + " \\aset a_",  # a row per identity: any will do
        # The balances after the purchase, from the locked row, as the service works them out.
        f"\\set available :a_available + {AMOUNT}",
        f"\\set lifetime_earned :a_lifetime_earned + {AMOUNT}",
        "\\set balance :available + :a_pending + :a_held",
        pgbench_sql(SQL_CREDIT_PURCHASE) + ";",
        "END;",
    ]
    return "\n".join(lines) + "\n"


def _pgbench_orm_script(key_hash, members):
    receipt = "'pgb-' || CAST(:rr AS text)"
    expires = "date_trunc('day', now() + interval '366 days') + interval '16 hours'"
    lines = [
        f"\\set member random(1, {members})",
        "\\set rr :client_id * 1000000000000 + random(1, 999999999999)",
        "BEGIN;",
        SQL_API_KEY_ORM.replace("%s", f"'{key_hash}'") + ";",
        SQL_LOCK_ACCOUNT_WITH_MEMBER_ORM.replace("%s::VARCHAR", "'pending'", 1)
        .replace("%s::VARCHAR", "'available'", 1)
        .replace("%s::TIMESTAMP WITH TIME ZONE", "now()").replace("%s::BIGINT", "0", 1)
        .replace("%s::BIGINT", ":member") + ";",
        "INSERT INTO purchases (member_id, store_id, receipt_no, amount, eligible_amount, currency, "
        "points_earned, available_at, items, occurred_at, created_at) VALUES "
        f"(:member, '{STORE}', {receipt}, 12345, 12345, 'CNY', 12345, now(), 'null', now(), now()) "
        "ON CONFLICT (store_id, receipt_no) DO NOTHING RETURNING purchases.id AS pid, purchases.member_id, "
        "purchases.store_id, purchases.receipt_no, purchases.amount, purchases.eligible_amount, "
        "purchases.currency, purchases.refunded_amount, purchases.points_earned, purchases.points_reversed, "
        "purchases.available_at, purchases.items, purchases.lot_id, purchases.occurred_at, "
        "purchases.created_at \\gset",
        "INSERT INTO ledger_entries (member_id, type, points, balance_after, description, reference_type, "
        f"reference_id, expires_at, created_at) VALUES (:member, 'earn_purchase', 12345, 12345, "
        f"'Purchase ' || {receipt} || ' at store {STORE}', 'purchase', CAST(:pid AS text), {expires}, now()) "
        "RETURNING ledger_entries.id AS eid \\gset",
        "UPDATE accounts SET available = available + 12345, lifetime_earned = lifetime_earned + 12345, "
        "updated_at = now() WHERE accounts.member_id = :member;",
        "INSERT INTO lots (member_id, entry_id, points, remaining, status, available_at, expires_at, "
        f"created_at) VALUES (:member, :eid, 12345, 12345, 'available', now(), {expires}, now()) "
        "RETURNING lots.id AS lid \\gset",
        "UPDATE purchases SET lot_id = :lid WHERE purchases.id = :pid;",
        SQL_TIER_WINDOW.replace("%s::INTEGER", "0").replace("%s::BIGINT", ":member")
        .replace("%s::TIMESTAMP WITH TIME ZONE", "now() - interval '365 days'") + ";",
        "END;",
    ]
    return "\n".join(lines) + "\n"


def pgbench_phase(args, state):
    import hashlib

    pgbench = shutil.which("pgbench")
    if not pgbench:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "purchase.sql")
        key_id = None
        if args.statements == "cte":
            with psycopg.connect(bench_dsn(args)) as conn:
                key_id = read_key_id(conn, hashlib.sha256(state["api_key"].encode()).hexdigest())
        with open(script, "w") as f:
            f.write(pgbench_script(state, args.members, args.statements, key_id))
        base = ["-h", args.db_host, "-p", str(args.db_port), "-U", args.db_user, "-n", "-M", "prepared",
                "-c", str(args.clients), "-j", str(args.wrk_threads), "-f", script]
        warm = subprocess.run([pgbench, *base, "-T", str(max(1, int(min(args.warmup, 2)))), args.db_name],
                              capture_output=True, text=True)
        if warm.returncode != 0:
            return {"error": (warm.stderr or warm.stdout)[-800:]}
        cmd = [pgbench, *base, "-T", str(int(args.seconds)), "-l", "--log-prefix", os.path.join(tmp, "log"),
               args.db_name]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        meter = CpuMeter(args.db_name, client_pids={proc.pid})
        meter.start()
        out, err = proc.communicate()
        cpu = meter.stop()
        if proc.returncode != 0:
            return {"error": (err or out)[-800:]}
        latencies, failed = [], 0
        for name in os.listdir(tmp):
            if name.startswith("log"):
                with open(os.path.join(tmp, name)) as f:
                    for line in f:
                        parts = line.split()
                        if parts[2] in ("failed", "skipped"):
                            failed += 1
                        else:
                            latencies.append(int(parts[2]) / 1e6)
        latencies.sort()
        failed_match = re.search(r"number of failed transactions: (\d+)", out)
        failed = max(failed, int(failed_match.group(1)) if failed_match else 0)
        return {"requests": len(latencies), "seconds": args.seconds, "per_s": len(latencies) / args.seconds,
                **percentiles(latencies), "errors": failed, "cpu": cpu,
                "client": f"pgbench -M prepared -c {args.clients} -j {args.wrk_threads}",
                "statements": args.statements}


# --- in-process: statements per purchase, and a profile of the request path ---------------------------

def _in_process_app(args):
    os.environ["LOYALTY_DATABASE_URL"] = sqlalchemy_url(args)
    os.environ["LOYALTY_RATE_LIMITS"] = UNLIMITED
    sys.path.insert(0, ROOT)
    from loyalty import create_app

    return create_app()


class StatementLog:
    """Every round trip the app's engine makes: statements, BEGIN, COMMIT, ROLLBACK; and their time."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.items, self.db_seconds, self._t = [], 0.0, None
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        for name in ("begin", "commit", "rollback"):
            event.listen(engine, name, lambda conn, name=name: self.items.append(name.upper()))

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self._t = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        self.db_seconds += time.perf_counter() - self._t
        self.items.append(" ".join(statement.split()))

    def reset(self):
        self.items, self.db_seconds = [], 0.0


def short_statement(sql):
    if sql.startswith("WITH "):  # data-modifying CTEs (the one-statement credit): what each part writes
        parts = re.findall(r"(\w+) AS \((INSERT INTO|UPDATE|DELETE FROM) (\w+)", sql)
        return "WITH " + ", ".join(f"{verb.split()[0]} {table}" for _, verb, table in parts) + "; SELECT"
    m = re.match(r"(SELECT|INSERT INTO|UPDATE|DELETE FROM)\s+(.*)", sql)
    if not m:
        return sql
    verb, rest = m.groups()
    if verb == "SELECT":
        tables = re.findall(r"\bFROM (\w+)", rest)
        where = re.search(r"\bWHERE (.*?)(?: ORDER BY| LIMIT| FOR UPDATE|$)", rest)
        cols = re.findall(r"(\w+\.\w+) (?:=|IN|<=|>)", where.group(1)) if where else []
        return (f"SELECT {'+'.join(tables)} WHERE {', '.join(dict.fromkeys(cols))}"
                + (" FOR UPDATE" if "FOR UPDATE" in rest else ""))
    if verb == "UPDATE":
        table, sets = re.match(r"(\w+) SET (.*?) WHERE", rest).groups()
        columns = ", ".join(re.findall(r"(\w+)=", sets))
        return f"UPDATE {table} SET {columns}"
    return f"{verb} {rest.split()[0]}"


def purchase_body(member_id, receipt):
    return {"member_id": member_id, "receipt_no": receipt, "amount": "123.45"}


def show_sql(args, state):
    """The round trips of one purchase through the real app (to keep the bare-SQL client in step)."""
    from loyalty.extensions import db

    app = _in_process_app(args)
    with app.app_context():
        log = StatementLog(db.engine)
    client = app.test_client()
    headers = {"Authorization": "Bearer " + state["api_key"]}
    # The first purchase warms the process up: it reads the API key, which the process then trusts for
    # 5 s (auth.roles), so the second one, logged, shows a credit's round trips in steady state.
    client.post("/api/v1/purchases", json=purchase_body(1, f"show-{time.time()}"), headers=headers)
    log.reset()
    response = client.post("/api/v1/purchases", json=purchase_body(2, f"show-{time.time()}"), headers=headers)
    return response.status_code, list(log.items)


PACKAGE_GROUPS = [
    ("psycopg (incl. waiting for PostgreSQL)", ("/psycopg/", "/psycopg_binary/", "/psycopg_pool/")),
    ("sqlalchemy", ("/sqlalchemy/",)), ("flask_sqlalchemy", ("/flask_sqlalchemy/",)),
    ("marshmallow", ("/marshmallow/",)), ("webargs", ("/webargs/",)), ("flask_smorest", ("/flask_smorest/",)),
    ("apispec", ("/apispec/",)), ("werkzeug", ("/werkzeug/",)), ("flask", ("/flask/",)),
    ("simplejson", ("/simplejson/",)), ("loyalty (our code)", (os.sep + "loyalty" + os.sep,)),
    ("bench (test client loop)", (HERE,)),
]


def _group(path):
    path = path or ""
    for name, needles in PACKAGE_GROUPS:
        if any(n in path for n in needles):
            return name
    return "python stdlib / other" if path else "builtins / unknown"


def profile_phase(args, state):
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer, HTMLRenderer

    from loyalty.extensions import db

    app = _in_process_app(args)
    with app.app_context():
        log = StatementLog(db.engine)
    client = app.test_client()
    headers = {"Authorization": "Bearer " + state["api_key"]}
    rng = random.Random(7)
    prefix = f"prof{int(time.time())}"
    n = args.profile_requests

    def run(tag, count):
        bad = 0
        for i in range(count):
            r = client.post("/api/v1/purchases", json=purchase_body(rng.randint(1, args.members),
                                                                    f"{prefix}{tag}-{i}"), headers=headers)
            bad += not 200 <= r.status_code < 300
        return bad

    run("w", 50)
    log.reset()
    t0 = time.perf_counter()
    bad = run("u", n)
    plain_wall = time.perf_counter() - t0
    trips_per_request = len(log.items) / n
    statements_per_request = sum(1 for s in log.items if s not in ("BEGIN", "COMMIT", "ROLLBACK")) / n
    db_share = log.db_seconds / plain_wall

    profiler = Profiler(interval=0.001)
    profiler.start()
    bad += run("p", n)
    profiler.stop()
    session = profiler.last_session
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "profile.txt"), "w") as f:
        f.write(ConsoleRenderer(show_all=False, time="percent_of_total").render(session))
    with open(os.path.join(RESULTS, "profile.html"), "w") as f:
        f.write(HTMLRenderer().render(session))

    root = session.root_frame(trim_stem=False)
    total = root.time
    by_group, loyalty_inclusive, self_by_function = {}, {}, {}

    def walk(frame, inside):
        if frame.is_synthetic:
            return
        self_time = frame.total_self_time
        group = _group(frame.file_path)
        by_group[group] = by_group.get(group, 0) + self_time
        key = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        self_by_function[key] = self_by_function.get(key, 0) + self_time
        if os.sep + "loyalty" + os.sep in (frame.file_path or "") and key not in inside:
            loyalty_inclusive[key] = loyalty_inclusive.get(key, 0) + frame.time
        for child in frame.children:
            walk(child, inside | {key})

    walk(root, frozenset())

    def top(d, count):
        return {k: round(v / total, 4) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:count]}

    return {
        "requests": n, "non2xx": bad,
        "in_process_ms_per_request": plain_wall / n * 1000,
        "round_trips_per_request": trips_per_request,
        "statements_per_request": statements_per_request,
        "db_time_share_unprofiled": db_share,
        "by_package_self_time": top(by_group, 20),
        "loyalty_functions_inclusive": top(loyalty_inclusive, 20),
        "top_self_time_functions": top(self_by_function, 15),
        "profile_text": os.path.join(RESULTS, "profile.txt"),
        "profile_html": os.path.join(RESULTS, "profile.html"),
    }


# --- the run --------------------------------------------------------------------------------------

# The round trips of one purchase through the app that each statement set mirrors: the cte set word
# for word (its statements are the service's text), the orm set as short_statement put them then.
EXPECTED_SERVICE_TRIPS = {
    "cte": [" ".join(sql.split()) for sql in ("BEGIN", SQL_LOCK_ACCOUNT_WITH_MEMBER, SQL_CREDIT_PURCHASE,
                                              "COMMIT")],
    "orm": [
        "BEGIN", "SELECT api_keys WHERE api_keys.key_hash",
        "SELECT lots+accounts WHERE lots.member_id, lots.status, lots.available_at, lots.remaining, "
        "lots.expires_at, members.id, accounts.member_id",
        "INSERT INTO purchases", "INSERT INTO ledger_entries",
        "UPDATE accounts SET available, lifetime_earned, updated_at", "INSERT INTO lots",
        "UPDATE purchases SET lot_id",
        "SELECT purchases+activities WHERE purchases.member_id, purchases.occurred_at, activities.member_id, "
        "activities.occurred_at",
        "COMMIT",
    ],
}


def mirrors_service(items, statements):
    """Do the round trips `items` (StatementLog's) match what statement set `statements` sends?"""
    if statements == "orm":
        return [short_statement(i) for i in items] == EXPECTED_SERVICE_TRIPS["orm"]
    return [" ".join(i.split()) for i in items] == EXPECTED_SERVICE_TRIPS["cte"]


def _trip_line(sql, width=160):
    short = short_statement(sql)
    return short if len(short) <= width else short[:width - 3] + "..."


def fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def cpu_text(cpu):
    if not cpu:
        return ""
    c = cpu["cores"]
    return (f"server {c.get('server', 0):.2f}, client {c.get('client', 0):.2f}, "
            f"pg {c.get('postgres (bench db)', 0) + c.get('postgres (shared)', 0):.2f}, "
            f"other {c.get('other', 0):.2f}")


def print_report(args, report):
    m = report["machine"]
    print("\n=== Machine ===")
    print(f"CPU      {m['cpu']}, {m['cores']} cores, {m['memory']} RAM")
    print(f"Software Python {m['python']}, PostgreSQL {m['postgresql']} "
          f"({', '.join(f'{k}={v}' for k, v in m['postgresql_settings'].items())}), {m['gunicorn']}, "
          f"psycopg {m['psycopg']}, {m['wrk'] or 'no wrk'}")
    print(f"Load     load average at start {', '.join(f'{x:.2f}' for x in m['load_average_at_start'])} "
          "(anything else running on the machine skews every figure)")
    print("\n=== Settings ===")
    s = report["settings"]
    for k, v in s.items():
        print(f"{k:<12} {v}")
    print("\n=== Results ===")
    head = f"{'phase':<44}{'per s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}   CPU cores used"
    print(head)
    print("-" * len(head))
    statements = report["settings_raw"]["statements"]
    labels = {"noop": "no-op POST /noop (framework ceiling)", "service": "service POST /api/v1/purchases",
              "sql_service": f"bare SQL, psycopg: statements {statements}",
              "pgbench": f"pgbench (C client): statements {statements}"}
    for key, label in labels.items():
        r = report["phases"].get(key)
        if not r:
            continue
        if "error" in r:
            print(f"{label:<44} failed: {r['error']}")
            continue
        print(f"{label:<44}{fmt(r['per_s']):>9}{fmt(r['p50_ms']):>9}{fmt(r['p90_ms']):>9}{fmt(r['p99_ms']):>9}"
              f"{fmt(r['max_ms']):>9}{r['errors']:>8}   {cpu_text(r.get('cpu'))}")
    for key in ("noop", "service"):
        r = report["phases"].get(key)
        if r and r.get("errors"):
            print(f"  {key}: {r['non2xx']} non-2xx, socket errors {r['socket_errors']}; first bad response: "
                  f"{r['first_bad_response']}")
    for key in ("sql_service",):
        r = report["phases"].get(key)
        if r and r.get("first_error"):
            print(f"  {key}: first error {r['first_error']}")
    print("  (CPU cores used: server = gunicorn, client = wrk / the bare-SQL client / this script, "
          "pg = PostgreSQL, other = the rest of the machine)")
    if report["phases"].get("sql_service") or report["phases"].get("pgbench"):
        print(f"  (bare SQL and pgbench send statement set {statements}, see --statements)")
    ratios = report.get("ratios", {})
    if ratios:
        print("\n=== Against the targets (2 cores, 32 clients) ===")
        for line in ratios["lines"]:
            print(line)
    prof = report.get("profile")
    if prof:
        print(f"\n=== Profile: {prof['requests']} purchases in-process (app.test_client(), one thread) ===")
        print(f"{fmt(prof['in_process_ms_per_request'], 2)} ms per purchase unprofiled, of which "
              f"{prof['db_time_share_unprofiled']:.0%} inside cursor.execute (round trip + server); "
              f"{prof['round_trips_per_request']:.0f} round trips per purchase "
              f"({prof['statements_per_request']:.0f} statements + BEGIN/COMMIT/ROLLBACK)")
        print("Self time by package (psycopg includes the wait for PostgreSQL):")
        for k, v in prof["by_package_self_time"].items():
            if v >= 0.005:
                print(f"  {v:6.1%}  {k}")
        print("Inclusive time of our functions:")
        for k, v in list(prof["loyalty_functions_inclusive"].items())[:12]:
            print(f"  {v:6.1%}  {k}")
        print("Hottest functions by self time:")
        for k, v in list(prof["top_self_time_functions"].items())[:10]:
            print(f"  {v:6.1%}  {k}")
        print(f"Full profile: {prof['profile_text']} and {prof['profile_html']}")
    trips = report.get("service_round_trips")
    if trips:
        status, items = trips
        print(f"\n=== Round trips of one purchase through the app (status {status}) ===")
        for i, sql in enumerate(items, 1):
            print(f"  {i:2}. {_trip_line(sql)}")
        if mirrors_service(items, statements):
            print(f"  (the bare-SQL client and pgbench send exactly these: statement set {statements})")
        elif statements == "orm":
            print("  (statement set orm: the bare-SQL client and pgbench send what the service sent before "
                  "the one-statement credit, not these)")
        else:
            print("  WARNING: the service no longer sends what the bare-SQL client mirrors "
                  "(EXPECTED_SERVICE_TRIPS / one_purchase / pgbench_script in bench/pos_credit.py): update them.")


def ratio_lines(report):
    p = report["phases"]
    lines, out = [], {}
    service, noop, sql = p.get("service"), p.get("noop"), p.get("sql_service")
    if service and noop:
        out["service_over_noop"] = service["per_s"] / noop["per_s"]
        verdict = "meets" if out["service_over_noop"] >= 0.4 else "MISSES"
        lines.append(f"service / no-op      = {fmt(service['per_s'])} / {fmt(noop['per_s'])} = "
                     f"{out['service_over_noop']:.2f}   (target >= 0.40: {verdict})")
    if service and sql:
        out["service_over_bare_sql"] = service["per_s"] / sql["per_s"]
        lines.append(f"service / bare SQL   = {fmt(service['per_s'])} / {fmt(sql['per_s'])} = "
                     f"{out['service_over_bare_sql']:.2f}   (reported, no target)")
    if service and p.get("pgbench") and "per_s" in p["pgbench"]:
        out["service_over_pgbench"] = service["per_s"] / p["pgbench"]["per_s"]
        lines.append(f"service / pgbench    = {out['service_over_pgbench']:.2f}   (the database without a Python client)")
    if service:
        verdict = "meets" if service["p99_ms"] <= 50 else "MISSES"
        lines.append(f"service p50 / p99    = {fmt(service['p50_ms'])} / {fmt(service['p99_ms'])} ms   "
                     f"(target p99 <= 50 ms: {verdict})")
        verdict = "meets" if service["errors"] == 0 else "MISSES"
        lines.append(f"service errors       = {service['errors']} (non-2xx {service['non2xx']})   "
                     f"(target 0: {verdict})")
        lines.append(f"Little's law check   = {args_clients(report)} clients / {fmt(service['per_s'])} per s = "
                     f"{args_clients(report) / service['per_s'] * 1000:.0f} ms mean latency: p99 <= 50 ms at "
                     f"{args_clients(report)} clients needs well over {args_clients(report) / 0.05:.0f} credits/s")
    out["lines"] = lines
    return out


def args_clients(report):
    return report["settings_raw"]["clients"]


def main(argv=None):
    args = parse_args(argv)
    if args.show_sql:
        state = load_state(args) if args.reuse_db else create_database(args)
        status, items = show_sql(args, state)
        print(f"One POST /api/v1/purchases (status {status}): {len(items)} round trips")
        for i, sql in enumerate(items, 1):
            print(f"{i:3}. {sql}")
        if mirrors_service(items, args.statements):
            print(f"The bare-SQL client and pgbench mirror these (statement set {args.statements}).")
        else:
            print(f"DIFFERENT from what statement set {args.statements} mirrors"
                  + (" (it is the service before the one-statement credit)." if args.statements == "orm" else
                     ": update one_purchase / pgbench_script / EXPECTED_SERVICE_TRIPS."))
        return
    wants = lambda phase: phase not in args.skip  # noqa: E731
    if (wants("noop") or wants("service")) and not shutil.which("wrk"):
        sys.exit("wrk is needed for the HTTP phases: apt-get install -y wrk  (or --skip noop,service)")
    print(f"POS credit benchmark: {args.clients} clients, {args.seconds:g} s per phase "
          f"(+{args.warmup:g} s warm-up), {args.members} members, database {args.db_name}")
    report = {"machine": machine_info(args), "phases": {}}
    report["settings_raw"] = {"clients": args.clients, "seconds": args.seconds, "warmup": args.warmup,
                              "members": args.members, "workers": args.workers, "threads": args.threads,
                              "worker_class": args.worker_class, "statements": args.statements}
    report["settings"] = {
        "gunicorn": gunicorn_settings(args) + " (same for the no-op app and the service)",
        "load": f"wrk -t{args.wrk_threads} -c{args.clients} --timeout 10s, keep-alive, "
                f"{args.warmup:g} s warm-up then {args.seconds:g} s measured; "
                "unique receipt per request, member uniform in 1..N",
        "bare SQL": f"{args.clients} psycopg connections in {args.sql_processes} processes; pgbench -M prepared "
                    f"-c {args.clients}; --statements {args.statements}: {SQL_TRIPS[args.statements]}",
        "database": f"{args.db_name} on {args.db_host}:{args.db_port}, {args.members} members with accounts",
    }
    print("[setup]")
    state = load_state(args) if args.reuse_db else create_database(args)

    if wants("noop"):
        print(f"[no-op] gunicorn + bench/noop_app.py, {args.warmup:g}+{args.seconds:g} s ...", flush=True)
        report["phases"]["noop"] = http_phase(args, "noop", "noop_app:app", noop_ready, "/noop",
                                              extra=("--pythonpath", HERE))
    if wants("service"):
        print(f"[service] gunicorn + wsgi:app, {args.warmup:g}+{args.seconds:g} s ...", flush=True)
        report["phases"]["service"] = http_phase(args, "svc", "wsgi:app", service_ready,
                                                 "/api/v1/purchases", key=state["api_key"])
    if wants("sql"):
        print(f"[bare SQL] {SQL_TRIPS[args.statements]} ...", flush=True)
        report["phases"]["sql_service"] = sql_phase(args, state)
    if wants("pgbench"):
        if shutil.which("pgbench"):
            print(f"[pgbench] statement set {args.statements} from a C client ...", flush=True)
            report["phases"]["pgbench"] = pgbench_phase(args, state)
        else:
            print("[pgbench] not installed; skipped")
    report["ratios"] = ratio_lines(report)
    if wants("profile"):
        print(f"[profile] {args.profile_requests} purchases in-process under pyinstrument ...", flush=True)
        report["service_round_trips"] = show_sql(args, state)
        report["profile"] = profile_phase(args, state)
    print_report(args, report)
    os.makedirs(RESULTS, exist_ok=True)
    for path in filter(None, (os.path.join(RESULTS, "last.json"), args.json_out)):
        with open(path, "w") as f:
            json.dump(report, f, indent=2, default=str)
    print(f"\nFigures saved to {os.path.join(RESULTS, 'last.json')}" +
          (f" and {args.json_out}" if args.json_out else ""))


if __name__ == "__main__":
    main()
