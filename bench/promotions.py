#!/usr/bin/env python
"""Promotions benchmark: POST /api/v1/purchases in-process (app.test_client(), one thread, like the
profile phase of bench/pos_credit.py), with no promotions and with 20 active ones, in the same run.

Phases, each `--requests` purchases of random members (distinct receipts), after `--warmup` ones:
  none        no promotion at all;
  20-idle     20 active promotions, none of which applies to the bench's baskets (other stores,
              channels, tiers, weekdays, categories, a future start): the cost of matching them;
  20-two-hit  20 active promotions, 2 of which apply to every basket (double points, 5 per 100):
              matching plus 2 more `bonus` entries and lots per purchase;
  none-again  every promotion stopped: the first phase again, to see the drift of the machine.

PostgreSQL by default: it creates and drops its own database (default bench_promotions; refuses
`test`/`test_*`). `--sqlite` runs on a temporary SQLite file instead. Figures go to stdout and,
with --json, to a file.
"""
import argparse
import cProfile
import io
import json
import os
import pstats
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal

import psycopg
import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from flask_migrate import upgrade  # noqa: E402

from loyalty import auth, clock, create_app  # noqa: E402
from loyalty.config import settings  # noqa: E402
from loyalty.extensions import db  # noqa: E402
from loyalty.members import service as members  # noqa: E402
from loyalty.points.service import seed_rules  # noqa: E402
from loyalty.points.settings import current_rules  # noqa: E402
from loyalty.promotions import rules  # noqa: E402
from loyalty.promotions import service as promotions  # noqa: E402
from loyalty.tiers import service as tiers  # noqa: E402
from loyalty.tiers.service import seed_tiers  # noqa: E402

STORE = "S1"
D = Decimal



# The service's own rate limits (LOYALTY_RATE_LIMITS) would throttle a benchmark's one key; the limiter
# still runs on every request, with limits no benchmark reaches.
UNLIMITED = {role: "1000000/second" for role in ("pos", "app", "member", "marketing", "admin")}

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000, help="purchases measured per phase (default 1000)")
    p.add_argument("--warmup", type=int, default=100, help="purchases before each phase (default 100)")
    p.add_argument("--members", type=int, default=500, help="members to create (default 500)")
    p.add_argument("--rounds", type=int, default=2, help="times the phases are repeated, interleaved (default 2)")
    p.add_argument("--sqlite", action="store_true", help="a temporary SQLite file instead of PostgreSQL")
    p.add_argument("--db-host", default="127.0.0.1")
    p.add_argument("--db-port", type=int, default=5432)
    p.add_argument("--db-user", default="postgres")
    p.add_argument("--db-name", default="bench_promotions")
    p.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.db_name == "test" or args.db_name.startswith("test_"):
        p.error("refusing to use the test databases; pick another --db-name")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.db_name):
        p.error("--db-name: lower-case letters, digits and underscores only")
    return args


def database_url(args):
    if args.sqlite:
        return "sqlite:///" + os.path.join(tempfile.mkdtemp(prefix="bench_promotions_"), "bench.sqlite")
    admin = f"host={args.db_host} port={args.db_port} user={args.db_user} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {args.db_name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {args.db_name}")
    return f"postgresql+psycopg://{args.db_user}@{args.db_host}:{args.db_port}/{args.db_name}"


def drop_database(args):
    if args.sqlite:
        return
    admin = f"host={args.db_host} port={args.db_port} user={args.db_user} dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {args.db_name} WITH (FORCE)")


def idle_promotions(now, tz_today):
    """20 active promotions that apply to none of the bench's baskets (store S1, channel store,
    ordinary members, no items, today)."""
    other_day = tz_today % 7 + 1  # tomorrow's weekday, 1..7
    start = now - timedelta(days=1)
    bonus = {"type": "bonus", "points": D("10")}
    shapes = [
        {"scope": {"stores": [f"S{n}" for n in range(2, 12)]}},
        {"scope": {"channels": ["online"]}},
        {"scope": {"channels": ["mini_program"]}, "effect": {"type": "multiplier", "value": D("3")}},
        {"scope": {"tiers": ["gold", "diamond"]}},
        {"scope": {"tiers": ["silver"]}, "effect": {"type": "multiplier", "value": D("1.5")}},
        {"scope": {"categories": ["beverage"]}, "effect": {"type": "multiplier", "value": D("3")}},
        {"scope": {"skus": ["SKU-1", "SKU-2"]}},
        {"scope": {"tags": ["vip"]}},
        {"schedule": {"days_of_week": [other_day]}},
        {"schedule": {"days_of_week": [other_day], "from": "16:00", "until": "18:00"}},
        {"scope": {"min_amount": D("100000.00")}},
        {"starts_at": now + timedelta(days=30)},
        {"scope": {"stores": ["S9"], "channels": ["online"]}, "stacking": "exclusive", "priority": 5},
        {"scope": {"tiers": ["diamond"]}, "stacking": "exclusive", "priority": 9},
        {"scope": {"stores": ["S2"]}, "limits": {"budget_points": D("100000")}},
        {"scope": {"channels": ["online"]}, "limits": {"per_member": 1, "per_member_period": "day"}},
        {"scope": {"categories": ["tobacco"]}, "effect": {"type": "per_amount", "points": D("1"), "per": D("10.00")}},
        {"scope": {"stores": ["S3"]}, "effect": {"type": "per_amount", "points": D("5"), "per": D("100.00")}},
        {"scope": {"tags": ["staff"], "stores": ["S1"]}},
        {"scope": {"tiers": ["gold"], "first_purchase_only": True}},
    ]
    return [{"name": f"Idle {n}", "status": "active", "starts_at": start, "effect": bonus, **shape}
            for n, shape in enumerate(shapes)]


def hitting_promotions(now):
    start = now - timedelta(days=1)
    return [{"name": "Double points", "status": "active", "starts_at": start,
             "effect": {"type": "multiplier", "value": D("2")}},
            {"name": "5 per 100", "status": "active", "starts_at": start,
             "effect": {"type": "per_amount", "points": D("5"), "per": D("100.00")}}]


def matching_cost(app, baskets=2000):
    """Microseconds to match one basket against the promotions in force, in memory (the pure rule)."""
    with app.app_context():
        loaded, earning_rules = promotions.active_rules(), current_rules()
        basket = rules.Basket(store_id=STORE, channel="store", amount=D("123.45"), items=(),
                              occurred_at=clock.now(), tier="ordinary")
        tz = settings().timezone
        started = time.perf_counter()
        for _ in range(baskets):
            rules.matching(loaded, basket, earning_rules, tz)
        cost = (time.perf_counter() - started) / baskets * 1e6
        db.session.remove()
    print(f"  matching {len(loaded)} promotions in memory: {cost:.0f} us per basket", flush=True)
    return cost


def main(argv=None):
    args = parse_args(argv)
    url = database_url(args)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOYALTY_LOG_LEVEL": "WARNING",
                      "LOYALTY_RATE_LIMITS": UNLIMITED})
    figures = {"database": "sqlite" if args.sqlite else "postgresql", "requests": args.requests,
               "members": args.members, "phases": {}}
    try:
        with app.app_context():
            upgrade(directory=os.path.join(ROOT, "migrations"))
            seed_rules()
            seed_tiers()
            _, key = auth.create_key("pos", "bench till", store_id=STORE)
            # No member changes tier during the run: the idle promotions scoped to silver, gold and
            # diamond members stay idle, and no phase pays for upgrades another did not.
            for rule in sorted(tiers.ladder(), key=lambda tier: -tier.rank)[:-1]:
                document = tiers.tier_document(rule)
                tiers.update_tier(rule.code, rule.name, {**document["qualification"], "spend": D(10) ** 9 * (rule.rank + 1)},
                                  {**document["benefits"], "earn_multiplier": rule.earn_multiplier,
                                   "birthday_points": rule.birthday_points}, actor="bench")
            ids = [members.register_member(f"Bench {n}", phone=f"+86139{n:08d}").id for n in range(args.members)]
            db.session.remove()
        client = app.test_client()
        headers = {"Authorization": "Bearer " + key}
        rng = random.Random(16)
        counter = iter(range(10**9))

        statements = [0]

        def count(*_):
            statements[0] += 1
        with app.app_context():
            sa.event.listen(db.engine, "before_cursor_execute", count)

        def purchases(n, measured=None):
            started, cpu, sent = time.perf_counter(), time.process_time(), statements[0]
            for _ in range(n):
                body = {"member_id": rng.choice(ids), "receipt_no": f"B{next(counter)}",
                        "amount": f"{rng.randint(100, 99999) / 100:.2f}"}
                response = client.post("/api/v1/purchases", json=body, headers=headers)
                if response.status_code != 201:
                    raise SystemExit(f"purchase failed: {response.status_code} {response.get_json()}")
            if measured is not None:  # this process's CPU and round trips per purchase: less at the mercy
                measured.update(cpu_ms=(time.process_time() - cpu) / n * 1000,  # of a busy machine
                                statements=(statements[0] - sent) / n)
            return n / (time.perf_counter() - started)

        def stop_all():
            with app.app_context():
                for promotion in promotions.promotions(limit=200)[0]:
                    promotions.stop_promotion(promotion.id, actor="bench")
                db.session.remove()

        def create(batch):
            with app.app_context():
                for fields in batch:
                    promotions.create_promotion(fields, actor="bench")
                db.session.remove()

        def phase(name):
            purchases(args.warmup)
            measured = {}
            rate = purchases(args.requests, measured)
            figures["phases"].setdefault(name, []).append(rate)
            figures.setdefault("cpu_ms", {}).setdefault(name, []).append(measured["cpu_ms"])
            figures.setdefault("statements", {}).setdefault(name, []).append(measured["statements"])
            # Python function calls per purchase (cProfile, on 100 more): the work this process does,
            # counted rather than timed, so the other processes of a busy machine do not move it.
            profile = cProfile.Profile()
            profile.enable()
            purchases(100)
            profile.disable()
            calls = pstats.Stats(profile, stream=io.StringIO()).total_calls / 100
            figures.setdefault("calls", {}).setdefault(name, []).append(calls)
            print(f"  {name:<11} {rate:8.1f} credits/s  {measured['cpu_ms']:6.2f} ms CPU here  "
                  f"{measured['statements']:5.2f} statements  {calls:6.0f} Python calls per purchase", flush=True)

        print(f"{figures['database']}: {args.requests} purchases per phase, {args.members} members, "
              f"one thread in-process")
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}")
            stop_all()
            phase("none")
            now = clock.now()
            with app.app_context():
                weekday = clock.local_date(now, settings().timezone).isoweekday()
            create(idle_promotions(now, weekday))
            phase("20-idle")
            figures.setdefault("matching_us", []).append(matching_cost(app))
            stop_all()
            create(idle_promotions(now, weekday)[:18] + hitting_promotions(now))
            phase("20-two-hit")
            stop_all()
            phase("none-again")
        summary = {name: statistics.median(rates) for name, rates in figures["phases"].items()}
        figures["median"] = summary
        base = statistics.median(figures["phases"]["none"] + figures["phases"]["none-again"])
        figures["median_matching_us"] = statistics.median(figures["matching_us"])
        print("median credits/s: " + ", ".join(f"{name} {rate:.1f}" for name, rate in summary.items()))
        cpu = {name: statistics.median(values) for name, values in figures["cpu_ms"].items()}
        base_cpu = statistics.median(figures["cpu_ms"]["none"] + figures["cpu_ms"]["none-again"])
        print("median ms of this process's CPU per purchase: " + ", ".join(
            f"{name} {value:.2f}" for name, value in cpu.items()) + f"; 20 idle {100 * (cpu['20-idle'] / base_cpu - 1):+.1f}%"
            f", 20 with 2 applying {100 * (cpu['20-two-hit'] / base_cpu - 1):+.1f}%")
        calls = {name: statistics.median(values) for name, values in figures["calls"].items()}
        print("Python function calls per purchase: " + ", ".join(f"{name} {value:.0f}" for name, value in calls.items())
              + f"; 20 idle {100 * (calls['20-idle'] / calls['none'] - 1):+.1f}%, 20 with 2 applying "
              f"{100 * (calls['20-two-hit'] / calls['none'] - 1):+.1f}%")
        print("statements per purchase: " + ", ".join(
            f"{name} {statistics.median(values):.2f}" for name, values in figures["statements"].items()))
        print(f"against none: 20 idle promotions {100 * (summary['20-idle'] / base - 1):+.1f}% credits/s; "
              f"20 with 2 applying {100 * (summary['20-two-hit'] / base - 1):+.1f}% (2 more bonus entries and "
              "lots per purchase); matching 20 promotions in memory: "
              f"{figures['median_matching_us']:.0f} us per basket")
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(figures, f, indent=2)
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        drop_database(args)


if __name__ == "__main__":
    main()
