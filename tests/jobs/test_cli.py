"""The `loyalty` command as operations use it."""
import sqlalchemy as sa

from loyalty.extensions import db
from tests import factories


def last_line(output):
    return output.strip().splitlines()[-1]


def test_api_key_created_on_the_command_line_authenticates(runner, client):
    result = runner.invoke(args=["api-keys", "create", "--role", "pos", "--store", "S7", "--name", "Till 7"])
    assert result.exit_code == 0, result.output
    key = last_line(result.output)
    assert key.startswith("lk_")
    answer = client.get("/api/v1/members?phone=13800000000", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200


def test_pos_key_without_a_store_is_refused(runner):
    result = runner.invoke(args=["api-keys", "create", "--role", "pos"])
    assert result.exit_code != 0
    assert "store" in result.output


def test_key_list_never_shows_the_key(runner):
    key = last_line(runner.invoke(args=["api-keys", "create", "--role", "marketing"]).output)
    listing = runner.invoke(args=["api-keys", "list"])
    assert listing.exit_code == 0
    assert "marketing" in listing.output
    assert key not in listing.output
    assert key[:8] in listing.output


def test_revoked_key_stops_working_at_once(runner, client):
    created = runner.invoke(args=["api-keys", "create", "--role", "marketing"])
    key = last_line(created.output)
    key_id = created.output.split("Created API key ")[1].split(" ")[0]
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/earning-rules", headers=auth).status_code == 200
    result = runner.invoke(args=["api-keys", "revoke", key_id])
    assert result.exit_code == 0, result.output
    assert client.get("/api/v1/earning-rules", headers=auth).status_code == 401


def test_revoking_an_unknown_key_says_so(runner):
    result = runner.invoke(args=["api-keys", "revoke", "999999"])
    assert result.exit_code != 0
    assert "No API key with id 999999" in result.output


def test_first_start_creates_one_admin_key_and_prints_it_once(app, runner, monkeypatch):
    monkeypatch.setattr("loyalty.cli.run_server", lambda *args: None)
    first = runner.invoke(args=["serve"])
    assert first.exit_code == 0, first.output
    key = first.output.split("keep it safe:\n")[1].splitlines()[0]
    assert key.startswith("lk_")
    second = runner.invoke(args=["serve"])
    assert second.exit_code == 0
    assert "lk_" not in second.output
    assert app.test_client().get("/api/v1/earning-rules",
                                 headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_ledger_verify_passes_on_a_consistent_ledger(ctx, runner):
    member = factories.member()
    factories.purchase(member.id, "88.80")
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert "Ledger OK" in result.output


def test_ledger_verify_names_the_broken_account_and_fails(ctx, runner):
    member = factories.member()
    factories.purchase(member.id, "100.00")
    with db.engine.begin() as connection:  # corrupt the cached balance behind the ledger's back
        connection.execute(sa.text("UPDATE accounts SET available = available + 100 WHERE member_id = :m"),
                           {"m": member.id})
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1
    assert f"member {member.id}: available is not the remaining points" in result.output


def test_ledger_verify_checks_the_reports_running_sums_against_the_rows(ctx, runner):
    member = factories.member()
    factories.purchase(member.id, "100.00")
    passed = runner.invoke(args=["ledger", "verify"])
    assert passed.exit_code == 0, passed.output
    assert "Reports OK" in passed.output
    db.session.rollback()  # the next run reads afresh, as a new `loyalty ledger verify` process would
    with db.engine.begin() as connection:  # a running sum that no row explains (a trigger gone wrong)
        connection.execute(sa.text("INSERT INTO report_lots (expires_at, status, remaining) "
                                   "VALUES (NULL, 'available', 700)"))
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1
    assert "reports: remaining points of available lots: 107.00 in the running sums, 100.00 in lots" in result.output
    assert "Ledger OK" not in result.output
