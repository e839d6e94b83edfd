"""A short soak in CI (issue #8): bench/soak.py, the real service over HTTP with concurrent tills
and apps, deliberate retries and client-side timeouts, checked against the clients' model. On
PostgreSQL under gunicorn with a worker killed (SIGKILL) every few seconds; on SQLite under the
development server. The full one-minute run is `python bench/soak.py` (README, "Guarantees")."""
import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_DATABASE_URL = os.environ.get("LOYALTY_TEST_DATABASE_URL") or ""


def soak(*arguments):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "soak.py"), "--seconds", "8",
                           "--clients", "8", "--members", "20", "--seed", "7", *arguments],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.postgres_only
def test_a_short_soak_on_postgresql_with_killed_workers_loses_and_doubles_nothing():
    url = urlsplit(TEST_DATABASE_URL.replace("postgresql+psycopg", "postgresql"))
    dsn = f"host={url.hostname or '127.0.0.1'} port={url.port or 5432} user={url.username or 'postgres'}"
    code, output = soak("--db", "postgres", "--pg", dsn, "--workers", "2", "--threads", "4", "--kill-every", "3")

    assert code == 0, output
    assert "mismatches: 0" in output and "server errors (5xx): 0" in output
    assert "Ledger OK" in output


@pytest.mark.skipif(TEST_DATABASE_URL.startswith("postgresql"), reason="the SQLite variant")
def test_a_short_soak_on_sqlite_under_the_development_server_loses_and_doubles_nothing():
    code, output = soak("--db", "sqlite")

    assert code == 0, output
    assert "mismatches: 0" in output and "server errors (5xx): 0" in output
    assert "Ledger OK" in output
