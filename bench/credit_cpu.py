"""In-process CPU per POS credit, interleaved checkouts (issue 20).

Sends `--requests` purchases through `app.test_client()` (one thread) against an existing bench
database made by hot_paths.py or pos_credit.py (`--db-name`, its state file in bench/results/), three
times, and prints the CPU time per credit of each run (time.process_time: the machine's other work
inflates it, so compare checkouts run one after the other), the statements and round trips per
credit, one credit's statements, and a cProfile with a CPU timer: the Python function calls per
credit (exact, load-independent) and the profile (bench/results/credit_cpu.prof).

    .venv/bin/python bench/credit_cpu.py --db-name bench_hot [--requests 300] [--top 40]

Run it from each checkout (the code measured is the checkout's: bench/ sits beside loyalty/).
"""
import argparse
import cProfile
import os
import pstats
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hot_paths as hp
import pos_credit as pc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db-name", default="bench_hot")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--top", type=int, default=0, help="print the N functions of most cumulative CPU")
    args = p.parse_args(argv)
    bench_args = hp.parse_args(["--db-name", args.db_name, "--reuse-db"])
    state = pc.load_state(bench_args)
    app = pc._in_process_app(bench_args)
    import loyalty
    from loyalty.extensions import db

    assert loyalty.__file__.startswith(hp.ROOT), f"in-process code is {loyalty.__file__}, not this checkout's"
    with app.app_context():
        log = hp.RoundTrips(db.engine)
    client = app.test_client()
    headers = {"Authorization": "Bearer " + state["api_key"]}
    rng = random.Random(args.seed)
    prefix = f"cc{time.time_ns()}"
    n = args.requests

    def credit(i):
        response = client.post("/api/v1/purchases", headers=headers,
                               json=pc.purchase_body(rng.randint(1, bench_args.members), f"{prefix}-{i}"))
        assert response.status_code == 201, response.get_data(as_text=True)

    for i in range(50):
        credit(-i - 1)
    log.reset()
    cpus = []
    for run in range(args.runs):
        started = time.process_time()
        for i in range(n):
            credit(run * n + i)
        cpus.append((time.process_time() - started) / n * 1000)
    total = args.runs * n
    statements = [s for s in log.items if s not in ("BEGIN", "COMMIT", "ROLLBACK")]
    print(f"code {hp.ROOT}; load {' '.join(hp.load_figures())}")
    print(f"CPU ms per credit, each run: {' '.join(f'{c:.2f}' for c in cpus)} (min {min(cpus):.2f}); "
          f"{len(statements) / total:.2f} statements, {len(log.items) / total:.2f} round trips per credit")
    log.reset()
    credit(10**7)
    print("one credit: " + " | ".join(pc.short_statement(s) for s in log.items))
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for i in range(n):
        credit(10**6 + i)
    profiler.disable()
    os.makedirs(pc.RESULTS, exist_ok=True)
    path = os.path.join(pc.RESULTS, "credit_cpu.prof")
    profiler.dump_stats(path)
    stats = pstats.Stats(profiler)
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][3])
    print(f"Python function calls per credit {stats.total_calls / n:.0f}; profiled CPU per credit "
          f"{top[0][1][3] / n * 1000:.2f} ms (the profiler's own cost included); profile {path}")
    for fn, v in top[:args.top]:
        print(f"{v[3] / n * 1000:8.3f} ms {v[1] / n:6.1f} calls  {fn[2]} ({os.path.basename(fn[0])}:{fn[1]})")


if __name__ == "__main__":
    main()
