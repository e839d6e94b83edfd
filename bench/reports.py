#!/usr/bin/env python
"""Marketing reports at scale: the overview, the liability by month and segment pages, timed on a
database that bench/jobs.py generated (run it first; this one only reads).

  python bench/reports.py --members 1000000            # PostgreSQL bench_jobs_1000000 and SQLite
  python bench/reports.py --members 100000 --db sqlite

Each figure is the best of --repeat runs in-process (create_app, an app context), so it measures the
queries, not the HTTP layer. Run by hand, never in the test suite.
"""
import argparse
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, action="append", help="N of bench_jobs_<N> (repeatable)")
    p.add_argument("--db", choices=("postgres", "sqlite", "both"), default="both")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    p.add_argument("--pg-prefix", default="bench_jobs", help="PostgreSQL database name prefix (+ _<N>), as "
                   "given to bench/jobs.py")
    p.add_argument("--sqlite-dir", default="/tmp")
    p.add_argument("--write-cost", action="store_true",
                   help="instead: what the running sums' triggers cost a purchase and a points payment, on "
                        "PostgreSQL database <pg-prefix>_writes (dropped and recreated), rounds with the "
                        "triggers off and on alternating in the same run")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--per-round", type=int, default=300)
    args = p.parse_args(argv)
    args.members = args.members or [100_000, 1_000_000]
    return args


def timed(repeat, function):
    best, result = None, None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    return best, result


def run(url, repeat):
    from loyalty import create_app
    from loyalty.extensions import db
    from loyalty.segments import service

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOYALTY_LOG_LEVEL": "WARNING"})
    figures = []
    with app.app_context():
        def page(name):
            def go():
                members, _, _ = service.segment_page(name, 50)
                db.session.expunge_all()
                return len(members)
            return go

        def csv_of(name, limit=10_000):
            def go():
                lines = 0
                for _ in service.csv_rows(name):
                    lines += 1
                    if lines > limit:
                        break
                db.session.rollback()
                return lines - 1
            return go

        from loyalty import clock
        from tests.service.test_report_figures import fast_overview_figures, plain_liability, plain_overview_figures

        now = clock.now()
        # The same figures straight from the rows (the code before issue 20's running sums): the
        # baseline, timed in the same run, and the check that the running sums agree at this size.
        plain = {}
        for label, function in [("plain recompute: overview's members, balances, expiring, flows",
                                  lambda: plain_overview_figures(now)),
                                 ("plain recompute: liability", lambda: plain_liability(now))]:
            seconds, plain[label] = timed(1, function)
            db.session.rollback()
            figures.append((label, seconds))
        fast = fast_overview_figures(now)
        same = (fast[0] == [tuple(row) for row in plain[next(iter(plain))][0]]
                and fast[1:3] == plain[next(iter(plain))][1:3]
                and {k: v for k, v in fast[3].items() if v} == {k: v for k, v in plain[next(iter(plain))][3].items() if v}
                and service.liability(now=now) == plain["plain recompute: liability"])
        db.session.rollback()
        print(f"running sums equal the plain recompute: {'yes' if same else 'NO: MISMATCH'}")
        for label, function in [
            ("GET /reports/overview", lambda: service.overview()),
            ("GET /reports/liability", lambda: service.liability()),
            ("console: daily flows, 30 days", lambda: service.daily_flows()),
            ("segment page: active (50)", page("active")),
            ("segment page: high_value (50)", page("high_value")),
            ("segment page: tier:diamond (50)", page("tier:diamond")),
            ("CSV: first 10 000 rows of at_risk", csv_of("at_risk")),
        ]:
            seconds, _ = timed(repeat, function)
            db.session.rollback()
            figures.append((label, seconds))
    with app.app_context():
        db.engine.dispose()
    return figures


TRIGGERS = [(f"report_{name}_{event}", table) for name, table in (
    ("member_counts", "members"), ("balances", "accounts"), ("lots", "lots"), ("entry_hours", "ledger_entries"))
    for event in ("insert", "update", "delete")]


def write_cost(args):
    """Purchases and points payments through the service, in rounds: the triggers disabled, then
    enabled, alternating (so drift in the machine's speed hits both alike); best and median round."""
    import psycopg
    from decimal import Decimal
    from flask_migrate import upgrade
    from loyalty import create_app
    from loyalty.extensions import db
    from loyalty.members.service import register_member
    from loyalty.points import service as points
    from loyalty.points.service import seed_rules
    from loyalty.tiers.service import seed_tiers

    name = f"{args.pg_prefix}_writes"
    admin = args.pg.replace("postgresql+psycopg", "postgresql") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"{args.pg}/{name}", "LOYALTY_LOG_LEVEL": "WARNING"})
    members = 200
    with app.app_context():
        upgrade()
        seed_rules()
        seed_tiers()
        ids = [register_member(name=f"M{n}", phone=f"+86139{n:08d}").id for n in range(members)]
        for member_id in ids:
            points.adjust_points(member_id, Decimal(100_000), "opening", actor="bench")
        db.session.remove()
        results = {"off": [], "on": []}
        n = 0
        for round_ in range(args.rounds * 2):
            state = "off" if round_ % 2 == 0 else "on"
            with db.engine.begin() as connection:
                for trigger, table in TRIGGERS:
                    connection.exec_driver_sql(f"ALTER TABLE {table} {'DISABLE' if state == 'off' else 'ENABLE'} "
                                               f"TRIGGER {trigger}")
            started = time.perf_counter()
            for _ in range(args.per_round):
                n += 1
                member_id = ids[n % members]
                points.credit_purchase(member_id, "S1", f"R{n}", Decimal("123.45"))
                points.pay_with_points(member_id, "S1", f"P{n}", Decimal(10))
                db.session.remove()
            results[state].append(time.perf_counter() - started)
        with db.engine.begin() as connection:
            for trigger, table in TRIGGERS:
                connection.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
        db.engine.dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
    per = args.per_round
    for state in ("off", "on"):
        rounds = sorted(results[state])
        print(f"triggers {state:3}: purchase + payment pairs/s best {per / rounds[0]:7.1f}, "
              f"median {per / rounds[len(rounds) // 2]:7.1f} ({len(rounds)} rounds of {per})")
    off, on = sorted(results["off"]), sorted(results["on"])
    print(f"cost of the triggers: best {on[0] / off[0] - 1:+.1%}, median "
          f"{on[len(on) // 2] / off[len(off) // 2] - 1:+.1%} time per pair")


def main(argv=None):
    args = parse_args(argv)
    if args.write_cost:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.2f}")
        write_cost(args)
        return
    kinds = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    for n in args.members:
        for kind in kinds:
            url = (f"{args.pg}/{args.pg_prefix}_{n}" if kind == "postgres"
                   else f"sqlite:///{os.path.join(args.sqlite_dir, f'bench_jobs_{n}.sqlite')}")
            if kind == "sqlite" and not os.path.exists(url[len("sqlite:///"):]):
                print(f"{kind} {n}: no database (run bench/jobs.py first)")
                continue
            for label, seconds in run(url, args.repeat):
                print(f"{kind:8} {n:>9,} {label:40} {seconds * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
