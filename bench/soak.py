#!/usr/bin/env python
"""Soak: tills and apps hammer the service with retries, duplicates and (optionally) killed workers;
then every member's balance, lots and history are compared with a model the clients kept.

Run by hand (see bench/README.md, "Soak"). It creates its own database (PostgreSQL: soak_<pid>,
dropped after unless --keep; SQLite: a temp file), migrates it, makes keys, members and rewards
through the CLI and the API, and starts the service: gunicorn on PostgreSQL, the development server
(`loyalty serve`) on SQLite. Then --clients threads, for --seconds, each play a till or an app:

  purchases (stores S1 and S2), partial refunds, sign-ins/shares/reviews, points payments and their
  reversals, redemptions (one reward with little stock) and cancellations, voucher uses;

with deliberate retries: the same request sent again (same receipt, refund number, event id,
payment number or Idempotency-Key), sometimes after a client-side timeout that abandons the first
answer, and duplicate receipts (a till sends a receipt already credited to another member). Every
logical operation is counted once in the model, from the answer the service finally gave; a retry
must get the same answer as the first try.

With --kill-every N (gunicorn only) a random worker gets SIGKILL every N seconds: requests it was
serving die with it, the clients retry, and nothing half-written may remain.

At the end: each member's account (available, net of any debt, + pending), lots and entries against the model,
vouchers used at most once, `loyalty ledger verify`. Prints operations, retries, answers by code and
mismatches, which must be 0; exits 1 otherwise.
"""
import argparse
import collections
import json
import os
import platform
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from decimal import Decimal

import psycopg
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
CENT = Decimal("0.01")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--members", type=int, default=60, help="few members, so clients collide on them")
    p.add_argument("--workers", type=int, default=4, help="gunicorn workers (PostgreSQL)")
    p.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    p.add_argument("--kill-every", type=float, default=0, help="SIGKILL a gunicorn worker every N seconds")
    p.add_argument("--retry-rate", type=float, default=0.15, help="share of operations sent twice on purpose")
    p.add_argument("--timeout-rate", type=float, default=0.05,
                   help="share of first tries with a client-side timeout so short the answer is abandoned")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres", help="libpq DSN without dbname")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument("--json", dest="json_out", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.kill_every and args.db != "postgres":
        p.error("--kill-every needs gunicorn, i.e. --db postgres")
    return args


# --- the service --------------------------------------------------------------------------------

class Deployment:
    """A fresh database, migrated, with keys; the server running on it."""

    def __init__(self, args):
        self.args = args
        if args.db == "postgres":
            self.name = f"soak_{os.getpid()}"
            with psycopg.connect(args.pg + " dbname=postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
                conn.execute(f'CREATE DATABASE "{self.name}"')
            host = dict(part.split("=", 1) for part in args.pg.split())
            self.url = (f"postgresql+psycopg://{host.get('user', 'postgres')}@{host.get('host', '127.0.0.1')}:"
                        f"{host.get('port', '5432')}/{self.name}")
        else:
            self.tmp = tempfile.mkdtemp(prefix="soak_")
            self.name = os.path.join(self.tmp, "soak.sqlite")
            self.url = f"sqlite:///{self.name}"
        self.env = {**os.environ, "LOYALTY_DATABASE_URL": self.url, "LOYALTY_LOG_LEVEL": "WARNING"}
        self.env.pop("FLASK_APP", None)
        self.cli("db", "upgrade")
        self.keys = {role: self.cli("api-keys", "create", "--role", role, "--name", f"soak {role}",
                                    *(("--store", store) if store else ())).strip().splitlines()[-1]
                     for role, store in (("admin", None), ("marketing", None), ("app", None))}
        for store in ("S1", "S2"):
            self.keys[store] = self.cli("api-keys", "create", "--role", "pos", "--store", store, "--name",
                                        f"soak till {store}").strip().splitlines()[-1]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/api/v1"
        self.log = tempfile.TemporaryFile(mode="w+")
        if args.db == "postgres":
            command = [os.path.join(BIN, "gunicorn"), "-w", str(args.workers), "-k", "gthread", "--threads",
                       str(args.threads), "-b", f"127.0.0.1:{self.port}", "--log-level", "warning", "wsgi:app"]
        else:
            command = [os.path.join(BIN, "loyalty"), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                sys.exit(f"the server did not start:\n{self.log.read()[-3000:]}")
            time.sleep(0.3)

    def cli(self, *arguments):
        done = subprocess.run([os.path.join(BIN, "loyalty"), *arguments], cwd=ROOT, env=self.env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"`loyalty {' '.join(arguments)}` failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def workers(self):
        """Pids of the gunicorn workers (children of the master)."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def query(self, sql):
        if self.args.db == "postgres":
            with psycopg.connect(self.args.pg + f" dbname={self.name}") as conn:
                return conn.execute(sql).fetchall()
        with sqlite3.connect(self.name) as conn:
            return conn.execute(sql).fetchall()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.seek(0)
        return self.log.read()

    def drop(self):
        if self.args.keep:
            print(f"kept: {self.url}")
            return
        if self.args.db == "postgres":
            with psycopg.connect(self.args.pg + " dbname=postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the clients and their model -----------------------------------------------------------------

class Model:
    """What every member should have, from the answers the service gave (once per logical operation)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.net = collections.defaultdict(Decimal)  # available (net of debt) + pending
        self.entries = collections.defaultdict(list)  # signed points of each entry expected
        self.purchases = []  # [purchase id, member, store, amount, refunded]
        self.payments = []  # (payment id, member, store, points)
        self.redemptions = []  # (redemption id, member, [codes])
        self.vouchers_used = collections.Counter()
        self.answers = collections.Counter()  # (method path, status, error)
        self.operations = collections.Counter()
        self.requests = self.retries = self.timeouts = self.deliberate = self.rate_limited = 0
        self.mismatches = []

    def move(self, member, points):
        points = Decimal(str(points))
        with self.lock:
            self.net[member] += points
            if points:
                self.entries[member].append(points)

    def mismatch(self, text):
        with self.lock:
            self.mismatches.append(text)


class Client(threading.Thread):
    def __init__(self, number, deployment, members, rewards, model, end_at, rng, args):
        super().__init__(name=f"client-{number}", daemon=True)
        self.d, self.members, self.rewards, self.model = deployment, members, rewards, model
        self.end_at, self.rng, self.args = end_at, rng, args
        self.session = requests.Session()
        self.store = "S1" if number % 2 else "S2"

    def run(self):
        operations = [(self.purchase, 30), (self.refund, 8), (self.activity, 12), (self.payment, 12),
                      (self.reversal, 5), (self.redeem, 10), (self.cancel, 4), (self.use_voucher, 8),
                      (self.duplicate_receipt, 3)]
        functions, weights = zip(*operations)
        while time.monotonic() < self.end_at:
            operation = self.rng.choices(functions, weights)[0]
            try:
                operation()
            except Exception as error:  # noqa: BLE001 - a client must not die; it is reported
                self.model.mismatch(f"{operation.__name__}: {type(error).__name__}: {error}")

    # --- sending, with retries ---

    def send(self, method, path, key, body=None, idempotency_key=None):
        """The final answer (status, json) of one logical request, retried until one arrives; with
        --retry-rate a second, deliberate send whose answer must equal the first."""
        headers = {"Authorization": f"Bearer {key}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        timeout = 0.002 if self.rng.random() < self.args.timeout_rate else 30
        answer = self.until_answered(method, path, body, headers, timeout)
        if self.rng.random() < self.args.retry_rate:
            with self.model.lock:
                self.model.deliberate += 1
            again = self.until_answered(method, path, body, headers, 30)
            if again[0] != answer[0] or _essence(again[1]) != _essence(answer[1]):
                # A voucher use is the one write without a natural key: its retry is a second use.
                if not (path.endswith("/use") and answer[0] == 200 and again[0] == 409):
                    self.model.mismatch(f"retry of {method} {path} answered {again[0]} "
                                        f"{_essence(again[1])}, first {answer[0]} {_essence(answer[1])}")
        label = f"{method} {_route(path)}"
        with self.model.lock:
            self.model.operations[label] += 1
            self.model.answers[(label, answer[0], answer[1].get("error") if answer[0] >= 400 else None)] += 1
        return answer

    def until_answered(self, method, path, body, headers, timeout):
        """Send until an answer arrives: a timeout or a connection lost (a killed worker) is retried,
        the same request, as a till on a bad network would."""
        attempt, sent, give_up_at = 0, 0, time.monotonic() + 300
        while attempt < 30 and time.monotonic() < give_up_at:
            with self.model.lock:
                self.model.requests += 1
                self.model.retries += sent > 0
            sent += 1
            try:
                response = self.session.request(method, self.d.base + path, json=body, headers=headers, timeout=timeout)
                if response.status_code == 429:
                    # Over the key's rate limit (LOYALTY_RATE_LIMITS): refused before any work, so a
                    # till waits as Retry-After says and sends the same request again. Not a failed
                    # try: eight clients on two till keys are refused often (the faster the server,
                    # the more), so only the five-minute bound stops these.
                    with self.model.lock:
                        self.model.rate_limited += 1
                    time.sleep(min(float(response.headers.get("Retry-After") or 1), 2.0) * (0.5 + self.rng.random()))
                    continue
                return response.status_code, response.json()
            except (requests.RequestException, ValueError):
                with self.model.lock:
                    self.model.timeouts += timeout < 1
                timeout = 30
                attempt += 1
                time.sleep(0.05 * attempt)
        raise RuntimeError(f"no answer to {method} {path} after {attempt} tries and {sent - attempt} refusals "
                           "for the rate limit")

    # --- the operations ---

    def purchase(self):
        member = self.rng.choice(self.members)
        amount = Decimal(self.rng.randint(100, 50000)) * CENT
        status, body = self.send("POST", "/purchases", self.d.keys[self.store],
                                 {"member_id": member, "receipt_no": f"R-{uuid.uuid4().hex[:16]}",
                                  "amount": str(amount)})
        if status == 201:
            self.model.move(member, body["points_earned"])
            with self.model.lock:
                self.model.purchases.append([body["purchase_id"], member, self.store, amount, Decimal(0)])
        else:
            self.model.mismatch(f"purchase refused: {status} {body}")

    def duplicate_receipt(self):
        """A till sends a receipt already credited (to some member) for another member: refused."""
        with self.model.lock:
            mine = [p for p in self.model.purchases if p[2] == self.store]
            if not mine:
                return
            purchase_id = self.rng.choice(mine)[0]
        receipt = self.d.query(f"SELECT receipt_no, member_id FROM purchases WHERE id = {purchase_id}")[0]
        other = self.rng.choice([m for m in self.members if m != receipt[1]])
        status, body = self.send("POST", "/purchases", self.d.keys[self.store],
                                 {"member_id": other, "receipt_no": receipt[0], "amount": "10.00"})
        if status != 409:
            self.model.mismatch(f"a duplicate receipt for another member answered {status} {body}")

    def refund(self):
        with self.model.lock:
            open_ = [p for p in self.model.purchases if p[2] == self.store and p[4] < p[3]]
            if not open_:
                return
            purchase = self.rng.choice(open_)
            amount = max(CENT, ((purchase[3] - purchase[4]) * Decimal(self.rng.random())).quantize(CENT))
        status, body = self.send("POST", f"/purchases/{purchase[0]}/refunds", self.d.keys[self.store],
                                 {"refund_no": f"RF-{uuid.uuid4().hex[:12]}", "amount": str(amount)})
        if status == 201:
            self.model.move(purchase[1], -Decimal(str(body["points_reversed"])))
            with self.model.lock:
                purchase[4] += amount
        elif status not in (409, 422):  # another till refunded it meanwhile: more than is left
            self.model.mismatch(f"refund answered {status} {body}")

    def activity(self):
        member = self.rng.choice(self.members)
        status, body = self.send("POST", f"/members/{member}/activities", self.d.keys["app"],
                                 {"type": self.rng.choice(["sign_in", "share", "review"]),
                                  "event_id": uuid.uuid4().hex})
        if status == 201:
            self.model.move(member, body["points_awarded"])
        else:
            self.model.mismatch(f"activity answered {status} {body}")

    def payment(self):
        member = self.rng.choice(self.members)
        points = Decimal(self.rng.randint(1, 30))  # whole points: 100 points pay 1.00, so 1 point pays a cent
        number = f"P-{uuid.uuid4().hex[:16]}"
        status, body = self.send("POST", "/points-payments", self.d.keys[self.store],
                                 {"member_id": member, "payment_no": number, "points": str(points)},
                                 idempotency_key=number)
        if status == 201:
            self.model.move(member, -points)
            with self.model.lock:
                self.model.payments.append((body["payment_id"], member, self.store, points))
        elif (status, body.get("error")) != (409, "insufficient_points"):
            self.model.mismatch(f"payment answered {status} {body}")

    def reversal(self):
        with self.model.lock:
            mine = [p for p in self.model.payments if p[2] == self.store]
            if not mine:
                return
            payment = mine[self.rng.randrange(len(mine))]
            self.model.payments.remove(payment)  # reversed once, by this client
        status, body = self.send("POST", f"/points-payments/{payment[0]}/reversal", self.d.keys[self.store],
                                 idempotency_key=f"reverse-{payment[0]}")
        if status in (200, 201):
            self.model.move(payment[1], payment[3])
        else:
            self.model.mismatch(f"reversal answered {status} {body}")

    def redeem(self):
        member = self.rng.choice(self.members)
        reward = self.rng.choice(self.rewards)
        status, body = self.send("POST", f"/members/{member}/redemptions", self.d.keys["app"],
                                 {"reward_id": reward, "quantity": self.rng.choice([1, 1, 2])},
                                 idempotency_key=uuid.uuid4().hex)
        if status == 201:
            self.model.move(member, -Decimal(str(body["points_spent"])))
            with self.model.lock:
                self.model.redemptions.append((body["redemption_id"], member,
                                               [v["code"] for v in body["vouchers"]]))
        elif (status, body.get("error")) not in ((409, "insufficient_points"), (409, "out_of_stock")):
            self.model.mismatch(f"redemption answered {status} {body}")

    def cancel(self):
        with self.model.lock:
            if not self.model.redemptions:
                return
            redemption = self.model.redemptions.pop(self.rng.randrange(len(self.model.redemptions)))
        status, body = self.send("POST", f"/redemptions/{redemption[0]}/cancel", self.d.keys["app"],
                                 idempotency_key=f"cancel-{redemption[0]}")
        if status == 200:
            self.model.move(redemption[1], Decimal(str(body["points_returned"])))
        elif status != 409:  # every voucher used already
            self.model.mismatch(f"cancellation answered {status} {body}")

    def use_voucher(self):
        with self.model.lock:
            codes = [code for _, _, vouchers in self.model.redemptions for code in vouchers]
            if not codes:
                return
            code = self.rng.choice(codes)
        status, body = self.send("POST", f"/vouchers/{code}/use", self.d.keys[self.store], {})
        if status == 200:
            with self.model.lock:
                self.model.vouchers_used[code] += 1
        elif (status, body.get("error")) not in ((409, "voucher_used"), (409, "voucher_void")):
            self.model.mismatch(f"voucher use answered {status} {body}")


def _essence(body):
    """What a retry must repeat: the answer without the member's current figures (which later
    operations of other clients may have changed)."""
    if not isinstance(body, dict):
        return body
    return {key: value for key, value in body.items() if key != "member"}


def _route(path):
    return "/".join("{id}" if part.isdigit() or (len(part) == 12 and part.isupper()) else part
                    for part in path.split("/"))


# --- setting up, checking, reporting ---------------------------------------------------------------

def populate(d, args):
    members = []
    for n in range(args.members):
        response = requests.post(f"{d.base}/members", headers={"Authorization": f"Bearer {d.keys['app']}"},
                                 json={"name": f"Soak Member {n}", "phone": f"+86137{n:08d}"}, timeout=30)
        response.raise_for_status()
        members.append(response.json()["id"])
    rewards = []
    for name, cost, stock in (("Tote bag", "20.00", None), ("Limited mug", "5.00", 25)):
        response = requests.post(f"{d.base}/rewards", headers={"Authorization": f"Bearer {d.keys['marketing']}"},
                                 json={"name": name, "kind": "goods", "points_cost": cost, "stock": stock,
                                       "voucher_valid_days": 30}, timeout=30)
        response.raise_for_status()
        rewards.append(response.json()["id"])
    return members, rewards


def killer(d, args, end_at, killed):
    rng = random.Random()
    while time.monotonic() + args.kill_every < end_at:
        time.sleep(args.kill_every)
        workers = d.workers()
        if workers:
            os.kill(rng.choice(workers), signal.SIGKILL)
            killed.append(time.monotonic())


def check(d, model, members):
    """Mismatches between the database and the model (and the ledger's own invariants)."""
    problems = []
    accounts = {row[0]: row[1:] for row in d.query(
        "SELECT member_id, available, pending, debt FROM accounts")}
    lots = dict(d.query("SELECT member_id, SUM(remaining) FROM lots WHERE status IN ('available', 'pending') "
                        "GROUP BY member_id"))
    entries = collections.defaultdict(list)
    for member_id, points in d.query("SELECT member_id, points FROM ledger_entries WHERE points <> 0"):
        entries[member_id].append(Decimal(points) / 100)
    for member in members:
        # `available` is already net of debt (DESIGN.md): the lots hold available + pending + debt.
        available, pending, debt = (Decimal(v) / 100 for v in accounts[member])
        if available + pending != model.net[member]:
            problems.append(f"member {member}: balance {available} available + {pending} pending "
                            f"({debt} debt), model {model.net[member]}")
        if Decimal(lots.get(member) or 0) / 100 != available + pending + debt:
            problems.append(f"member {member}: lots hold {Decimal(lots.get(member) or 0) / 100}, "
                            f"account {available + pending + debt} with its debt")
        if sorted(entries[member]) != sorted(model.entries[member]):
            problems.append(f"member {member}: {len(entries[member])} entries, model {len(model.entries[member])}")
    twice = [code for code, count in model.vouchers_used.items() if count > 1]
    if twice:
        problems.append(f"vouchers used twice: {twice[:5]}")
    used = dict(d.query("SELECT code, used_store_id FROM vouchers WHERE status = 'used'"))
    if set(model.vouchers_used) - set(used):
        problems.append(f"vouchers a till was told were used but are not: {sorted(set(model.vouchers_used) - set(used))[:5]}")
    verify = subprocess.run([os.path.join(BIN, "loyalty"), "ledger", "verify"], cwd=ROOT, env=d.env,
                            capture_output=True, text=True)
    if verify.returncode != 0:
        problems.append(f"loyalty ledger verify: {verify.stdout[-1000:]}{verify.stderr[-1000:]}")
    return problems, verify.stdout.strip().splitlines()[-2:] if verify.stdout.strip() else []


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"


def main(argv=None):
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"soak on {args.db}: {args.clients} clients, {args.seconds:.0f} s, {args.members} members, seed {seed}"
          + (f", a worker killed every {args.kill_every:.0f} s" if args.kill_every else ""))
    d = Deployment(args)
    try:
        members, rewards = populate(d, args)
        model = Model()
        started = time.monotonic()
        end_at = started + args.seconds
        clients = [Client(n, d, members, rewards, model, end_at, random.Random(seed + n), args)
                   for n in range(args.clients)]
        killed = []
        threads = clients + ([threading.Thread(target=killer, args=(d, args, end_at, killed), daemon=True)]
                             if args.kill_every else [])
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(args.seconds + 300)
        elapsed = time.monotonic() - started
        server_log = d.stop()
        problems, verify = check(d, model, members)
        problems = model.mismatches + problems
        errors = collections.Counter()
        for (label, status, error), count in model.answers.items():
            if status >= 400:
                errors[f"{status} {error}"] += count
        server_errors = sum(count for (_, status, _), count in model.answers.items() if status >= 500)
        report = {
            "database": args.db, "clients": args.clients, "seconds": round(elapsed, 1), "members": args.members,
            "seed": seed, "operations": sum(model.operations.values()), "requests": model.requests,
            "retries_after_failure": model.retries, "client_timeouts": model.timeouts,
            "deliberate_retries": model.deliberate, "rate_limited_resent": model.rate_limited,
            "workers_killed": len(killed),
            "operations_by_kind": dict(model.operations), "errors_by_code": dict(errors),
            "server_errors": server_errors, "mismatches": len(problems), "ledger_verify": verify,
            "machine": machine(),
        }
        print(f"\n{report['operations']} operations in {elapsed:.0f} s ({report['operations'] / elapsed:.0f}/s), "
              f"{model.requests} requests")
        print(f"retries: {model.deliberate} deliberate, {model.retries} after a timeout or a lost connection "
              f"({model.timeouts} client-side timeouts), {model.rate_limited} resent after 429 rate_limited, "
              f"{len(killed)} workers killed")
        print("operations: " + ", ".join(f"{k} {v}" for k, v in sorted(model.operations.items())))
        print("answers 4xx/5xx: " + (", ".join(f"{k} x{v}" for k, v in sorted(errors.items())) or "none"))
        print(f"server errors (5xx): {server_errors}")
        print(f"ledger verify: {' '.join(verify) or '?'}")
        print(f"mismatches: {len(problems)}")
        for problem in problems[:20]:
            print(f"  - {problem}")
        print(f"machine: {report['machine']}")
        if "Traceback" in server_log:
            print("server log has tracebacks:\n" + server_log[-3000:])
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(report, f, indent=2, default=str)
        return 1 if problems or server_errors else 0
    finally:
        d.stop()
        d.drop()


if __name__ == "__main__":
    sys.exit(main())
