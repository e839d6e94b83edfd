#!/usr/bin/env python
"""The tier upgrade of an offline till's batch, before and after it became set-based: batches of
500 through `batch.credit_batch`, alternating the per-member path (`tiers.upgrade_if_qualified`
once per member, as the batch did before) and the one-statement path
(`tiers.upgrade_after_purchases`), in the same process on the same database, so machine drift
hits both sides alike. Prints each side's median seconds per batch and credits per second.

Run by hand (never a timed test). PostgreSQL: its own database (default `bench_tiers`, dropped
and recreated; `test`/`test_*` are refused).

    .venv/bin/python bench/batch_tiers.py [--members 1500] [--rounds 8] [--db-name bench_tiers]
"""
import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from flask_migrate import upgrade  # noqa: E402

from batch import UNLIMITED, fresh_database  # noqa: E402  (bench/batch.py)
from loyalty import clock, create_app  # noqa: E402
from loyalty.extensions import db  # noqa: E402
from loyalty.members import service as members  # noqa: E402
from loyalty.points import batch  # noqa: E402
from loyalty.points import service as points  # noqa: E402
from loyalty.points.verify import broken_accounts  # noqa: E402
from loyalty.tiers import service as tiers  # noqa: E402


def per_member(members_by_id, purchases, now):
    """The batch's tier step as it was: one upgrade_if_qualified (one query) per member."""
    last = {purchase.member_id: purchase for purchase in purchases}
    for member_id, purchase in sorted(last.items()):
        tiers.upgrade_if_qualified(members_by_id[member_id], now, purchase=purchase)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=1500)
    p.add_argument("--rounds", type=int, default=8, help="batches per side, alternating")
    p.add_argument("--db-host", default="127.0.0.1")
    p.add_argument("--db-port", default="5432")
    p.add_argument("--db-user", default="postgres")
    p.add_argument("--db-name", default="bench_tiers")
    p.add_argument("--seed", type=int, default=21)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rng = random.Random(args.seed)
    url = fresh_database(args)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOYALTY_LOG_LEVEL": "WARNING",
                      "LOYALTY_RATE_LIMITS": UNLIMITED})
    set_based = tiers.upgrade_after_purchases
    seconds = {"per_member": [], "set_based": []}
    with app.app_context():
        upgrade()
        points.seed_rules()
        tiers.seed_tiers()
        member_ids = [members.register_member(name=f"Bench {n}", phone=f"+86139{n:08d}").id
                      for n in range(args.members)]
        db.session.remove()
        occurred = clock.now() - timedelta(hours=2)

        def one_batch(tag):
            return [{"member_id": rng.choice(member_ids), "receipt_no": f"{tag}-{n}",
                     "amount": Decimal(rng.randint(100, 99_999)) / 100, "occurred_at": occurred}
                    for n in range(500)]

        batch.credit_batch("S1", one_batch("warm"))  # first-request costs paid by neither side
        db.session.remove()
        for number in range(args.rounds):
            for side in (("per_member", "set_based") if number % 2 == 0 else ("set_based", "per_member")):
                tiers.upgrade_after_purchases = per_member if side == "per_member" else set_based
                items = one_batch(f"{side}{number}")
                started = time.perf_counter()
                results = batch.credit_batch("S1", items)
                seconds[side].append(time.perf_counter() - started)
                db.session.remove()
                assert all(result["status"] == "credited" for result in results)
        tiers.upgrade_after_purchases = set_based
        assert broken_accounts() == []
    medians = {side: statistics.median(values) for side, values in seconds.items()}
    print(json.dumps({
        "members": args.members, "rounds": args.rounds,
        "per_member_seconds_per_batch": round(medians["per_member"], 3),
        "set_based_seconds_per_batch": round(medians["set_based"], 3),
        "per_member_credits_per_second": round(500 / medians["per_member"], 1),
        "set_based_credits_per_second": round(500 / medians["set_based"], 1),
        "speedup": round(medians["per_member"] / medians["set_based"], 2),
        "all_seconds": {side: [round(value, 3) for value in values] for side, values in seconds.items()},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
