#!/usr/bin/env python
"""Offline upload benchmark: credits per second through POST /purchases/batch (batches of 500)
against single POST /purchases, in the same run, on the same database.

Run by hand (never a timed test). In-process through `app.test_client()`, one thread, so the two
figures compare the work each path does per credit (Flask, SQLAlchemy, the database round trips),
not the web server. PostgreSQL: its own database (default `bench_batch`, dropped and recreated;
`test`/`test_*` are refused), migrated like `flask db upgrade`, with `--members` members made
through the service. Target (issue 19): batch credits/s >= 5 x single credits/s.

    .venv/bin/python bench/batch.py [--members 2000] [--singles 1000] [--batches 6] [--db-name bench_batch]
"""
import argparse
import json
import os
import random
import sys
import time
from datetime import timedelta
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import psycopg  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from loyalty import auth, clock, create_app  # noqa: E402
from loyalty.extensions import db  # noqa: E402
from loyalty.members import service as members  # noqa: E402
from loyalty.points import service as points  # noqa: E402
from loyalty.points.verify import broken_accounts  # noqa: E402
from loyalty.promotions import service as promotions  # noqa: E402
from loyalty.tiers.service import seed_tiers  # noqa: E402



# The service's own rate limits (LOYALTY_RATE_LIMITS) would throttle a benchmark's one key; the limiter
# still runs on every request, with limits no benchmark reaches.
UNLIMITED = {role: "1000000/second" for role in ("pos", "app", "member", "marketing", "admin")}

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=2000)
    p.add_argument("--singles", type=int, default=1000, help="single purchases to time")
    p.add_argument("--batches", type=int, default=6, help="batches of 500 to time")
    p.add_argument("--db-host", default="127.0.0.1")
    p.add_argument("--db-port", default="5432")
    p.add_argument("--db-user", default="postgres")
    p.add_argument("--db-name", default="bench_batch")
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--promotions", action="store_true",
                   help="with 3 promotions in force that apply to every purchase (double points; 50 points "
                        "once a day per member; a bonus with a budget), for both figures")
    return p.parse_args(argv)


def fresh_database(args):
    if args.db_name == "test" or args.db_name.startswith("test_"):
        raise SystemExit(f"refusing to drop {args.db_name!r}")
    with psycopg.connect(host=args.db_host, port=args.db_port, user=args.db_user, dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}"')
        conn.execute(f'CREATE DATABASE "{args.db_name}"')
    return f"postgresql+psycopg://{args.db_user}@{args.db_host}:{args.db_port}/{args.db_name}"


def main(argv=None):
    args = parse_args(argv)
    rng = random.Random(args.seed)
    url = fresh_database(args)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOYALTY_LOG_LEVEL": "WARNING",
                      "LOYALTY_RATE_LIMITS": UNLIMITED})
    with app.app_context():
        upgrade()
        points.seed_rules()
        seed_tiers()
        _, key = auth.create_key("pos", "bench till", store_id="S1")
        if args.promotions:
            start = clock.now() - timedelta(days=40)
            for fields in ({"name": "Double points", "effect": {"type": "multiplier", "value": Decimal("2")}},
                           {"name": "Once a day", "effect": {"type": "bonus", "points": Decimal("50")},
                            "limits": {"per_member": 1, "per_member_period": "day"}},
                           {"name": "Budgeted", "effect": {"type": "bonus", "points": Decimal("5")},
                            "limits": {"budget_points": Decimal("1000000")}}):
                promotions.create_promotion({"status": "active", "starts_at": start, **fields}, actor="bench")
        started = time.perf_counter()
        member_ids = [members.register_member(name=f"Bench {n}", phone=f"+86139{n:08d}").id
                      for n in range(args.members)]
        print(f"setup: {args.members} members in {time.perf_counter() - started:.1f} s")
        db.session.remove()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    occurred = (clock.now() - timedelta(hours=2)).isoformat()

    def amount():
        return f"{rng.randint(100, 99_999) / 100:.2f}"

    # Warm-up: a few of each, so neither side pays for first-request costs in its figure.
    for n in range(20):
        client.post("/api/v1/purchases", headers=headers,
                    json={"member_id": rng.choice(member_ids), "receipt_no": f"W{n}", "amount": amount()})
    client.post("/api/v1/purchases/batch", headers=headers, json={"purchases": [
        {"member_id": rng.choice(member_ids), "receipt_no": f"WB{n}", "amount": amount(), "occurred_at": occurred}
        for n in range(50)]})

    started = time.perf_counter()
    for n in range(args.singles):
        response = client.post("/api/v1/purchases", headers=headers,
                               json={"member_id": rng.choice(member_ids), "receipt_no": f"S{n}", "amount": amount()})
        assert response.status_code == 201, response.get_json()
    single_seconds = time.perf_counter() - started

    bodies = [{"purchases": [{"member_id": rng.choice(member_ids), "receipt_no": f"B{b}-{n}", "amount": amount(),
                              "occurred_at": occurred} for n in range(500)]} for b in range(args.batches)]
    started = time.perf_counter()
    for body in bodies:
        response = client.post("/api/v1/purchases/batch", headers=headers, json=body)
        assert response.status_code == 200, response.get_json()
        assert all(r["status"] == "credited" for r in response.get_json()["results"])
    batch_seconds = time.perf_counter() - started

    with app.app_context():
        assert broken_accounts() == []
        db.session.remove()
    single_rate = args.singles / single_seconds
    batch_rate = args.batches * 500 / batch_seconds
    figures = {"members": args.members, "singles": args.singles, "single_seconds": round(single_seconds, 2),
               "single_credits_per_second": round(single_rate, 1), "batches": args.batches,
               "batch_seconds": round(batch_seconds, 2), "batch_credits_per_second": round(batch_rate, 1),
               "ratio": round(batch_rate / single_rate, 2), "target_ratio": 5, "promotions": 3 if args.promotions else 0}
    print(json.dumps(figures, indent=2))
    return 0 if batch_rate >= 5 * single_rate else 1


if __name__ == "__main__":
    sys.exit(main())
