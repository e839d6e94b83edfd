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

        for label, function in [
            ("GET /reports/overview", lambda: service.overview()),
            ("GET /reports/liability", lambda: service.liability()),
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


def main(argv=None):
    args = parse_args(argv)
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
