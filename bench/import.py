#!/usr/bin/env python
"""Import benchmark: `loyalty import members` over a generated CSV of N rows, on PostgreSQL.

Run by hand (never a timed test):

    .venv/bin/python bench/import.py --rows 100000          # about a minute
    .venv/bin/python bench/import.py --rows 100000,1000000  # the target: 1 000 000 rows <= 5 min

For each N: a fresh database `bench_import` (dropped and recreated; `test`/`test_*` are refused) migrated
to head with the default rules and tiers; a CSV of N rows (every 100th row bad: an invalid phone,
negative points, a missing key or a bad date, in turn), with phones, emails, birthdays, opening points
with and without an expiry, and tiers; then the import timed (the same function the CLI runs), a
second run of the same file timed (it must import nothing), and `loyalty ledger verify`'s check.
With --bulk-award, then a bulk award to the `tier:ordinary` segment (half the members) is queued and
the `bulk_awards.run` job timed (target: 1 000 000 members <= 60 s), and the ledger checked again;
with --award-everyone, to every imported member instead (each is tagged `bench` by one INSERT ...
SELECT, and the award goes to `tag:bench`), which is how 1 000 000 members are measured directly.
With --subscriber, a webhook subscription to member.created exists before the import, so each
imported member is also an event and a delivery (the cost of telling subscribers).
"""
import argparse
import csv
import io
import os
import sys
import time
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from loyalty import clock, create_app  # noqa: E402
from loyalty.bulk_awards import jobs as bulk_award_jobs  # noqa: E402
from loyalty.bulk_awards import service as bulk_awards  # noqa: E402
from loyalty.extensions import db  # noqa: E402
from loyalty.members import importer  # noqa: E402
from loyalty.points.service import seed_rules  # noqa: E402
from loyalty.points.verify import broken_accounts  # noqa: E402
from loyalty.tiers.service import seed_tiers  # noqa: E402
from loyalty.webhooks.models import Subscription, SubscriptionEvent  # noqa: E402

TARGET_ROWS, TARGET_SECONDS = 1_000_000, 300.0
TIERS = ("", "", "", "silver", "gold", "diamond")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="100000", help="comma list of row counts (default 100000)")
    p.add_argument("--db-host", default="127.0.0.1")
    p.add_argument("--db-port", default="5432")
    p.add_argument("--db-user", default="postgres")
    p.add_argument("--db-name", default="bench_import")
    p.add_argument("--batch", type=int, default=importer.BATCH)
    p.add_argument("--bulk-award", action="store_true", help="also time a bulk award to the imported members")
    p.add_argument("--award-everyone", action="store_true",
                   help="the bulk award goes to every imported member (tag:bench), not tier:ordinary")
    p.add_argument("--subscriber", action="store_true", help="a member.created webhook subscription exists")
    args = p.parse_args(argv)
    if args.db_name == "test" or args.db_name.startswith("test_"):
        p.error("refusing to drop a test database")
    return args


def generate(path, rows):
    bad = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(importer.COLUMNS)
        for n in range(rows):
            row = ["store", f"C{n:08d}", f"Member {n}", f"139{n:08d}", f"m{n}@shop.example",
                   f"19{50 + n % 50}-{1 + n % 12:02d}-{1 + n % 28:02d}", f"{n % 5000}.{n % 100:02d}",
                   "2099-12-31" if n % 2 else "", TIERS[n % len(TIERS)]]
            if n % 100 == 99:
                bad += 1
                kind = (n // 100) % 4
                if kind == 0:
                    row[3] = "12345"
                elif kind == 1:
                    row[6] = "-5"
                elif kind == 2:
                    row[1] = ""
                else:
                    row[7] = "31/12/2099"
            writer.writerow(row)
    return bad


def fresh_database(args):
    with psycopg.connect(host=args.db_host, port=args.db_port, user=args.db_user, dbname="postgres",
                         autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{args.db_name}"')
        connection.execute(f'CREATE DATABASE "{args.db_name}"')
    url = f"postgresql+psycopg://{args.db_user}@{args.db_host}:{args.db_port}/{args.db_name}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOYALTY_LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        seed_rules()
        seed_tiers()
        db.session.remove()
    return app


def main(argv=None):
    args = parse_args(argv)
    results = []
    for rows in (int(n) for n in args.rows.split(",")):
        path = f"/tmp/bench_import_{rows}.csv"
        started = time.monotonic()
        bad = generate(path, rows)
        print(f"{rows} rows: file written in {time.monotonic() - started:.1f} s ({bad} bad rows)", flush=True)
        app = fresh_database(args)
        with app.app_context():
            if args.subscriber:
                # Written directly: the service would resolve the URL's host, and nothing is sent here.
                moment = clock.now()
                db.session.add(Subscription(url="https://crm.example/hooks", secret="s" * 32, created_at=moment,
                                            updated_at=moment, event_rows=[SubscriptionEvent(event="member.created")]))
                db.session.commit()
                db.session.remove()
            started, cpu = time.monotonic(), time.process_time()
            summary = importer.import_members(path, io.StringIO(), batch_size=args.batch)
            first, cpu = time.monotonic() - started, time.process_time() - cpu
            print(f"  import: {summary.imported} imported, {summary.rejected} rejected in {first:.1f} s "
                  f"({rows / first:,.0f} rows/s; this process's CPU {cpu:.1f} s = {cpu / first:.0%} of it; "
                  f"{getattr(summary, 'events', 0)} webhook events)", flush=True)
            assert summary.imported == rows - bad and summary.rejected == bad, summary
            started = time.monotonic()
            again = importer.import_members(path, io.StringIO(), batch_size=args.batch)
            second = time.monotonic() - started
            print(f"  second run: {again.imported} imported, {again.already_there} already here in {second:.1f} s",
                  flush=True)
            assert again.imported == 0 and again.already_there == rows - bad, again
            assert broken_accounts() == [], "the ledger does not verify"
            db.session.remove()
            if args.bulk_award:
                segment = "tier:ordinary"
                if args.award_everyone:
                    segment = "tag:bench"
                    db.session.execute(sa.text("INSERT INTO member_tags (member_id, tag, created_at) "
                                               "SELECT id, 'bench', now() FROM members"))
                    db.session.commit()
                started = time.monotonic()
                award = bulk_awards.queue_award(bulk_awards.Order("bench-1", segment, Decimal("10"),
                                                                  "bench"), "bench")
                queued = time.monotonic() - started
                started = time.monotonic()
                bulk_award_jobs.run_awards()
                ran = time.monotonic() - started
                db.session.expire_all()
                award = db.session.get(type(award), award.id)
                print(f"  bulk award: {award.members} members queued in {queued:.1f} s, {award.awarded} credited "
                      f"in {ran:.1f} s", flush=True)
                assert award.awarded == award.members and award.status == "done", award
                assert broken_accounts() == [], "the ledger does not verify after the bulk award"
                db.session.remove()
        results.append((rows, first, second))
    print("\nrows\timport s\tsecond run s\ttarget")
    for rows, first, second in results:
        target = f"<= {TARGET_SECONDS:.0f} s: {'met' if first <= TARGET_SECONDS else 'MISSED'}" \
            if rows >= TARGET_ROWS else "-"
        print(f"{rows}\t{first:.1f}\t{second:.1f}\t{target}")


if __name__ == "__main__":
    main()
