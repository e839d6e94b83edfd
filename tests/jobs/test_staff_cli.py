"""`loyalty staff`: create (a one-time password on the last line), list, disable, reset-password."""
import pytest
from argon2 import PasswordHasher, profiles

from loyalty.extensions import db
from loyalty.staff import service as staff_service


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch):
    monkeypatch.setattr(staff_service, "HASHER", PasswordHasher.from_parameters(profiles.CHEAPEST))


def test_create_prints_a_one_time_password_that_signs_in_once(app, runner):
    result = runner.invoke(args=["staff", "create", "--email", "Alice@Example.com", "--role", "marketing",
                                 "--name", "Alice"])
    assert result.exit_code == 0, result.output
    password = result.output.strip().splitlines()[-1]
    with app.app_context():
        staff = staff_service.sign_in("alice@example.com", password)
        assert staff.must_change_password and staff.role == "marketing" and staff.name == "Alice"
        db.session.remove()


def test_create_refuses_a_second_account_for_one_email_and_an_unknown_role(runner):
    runner.invoke(args=["staff", "create", "--email", "a@example.com", "--role", "admin"])
    again = runner.invoke(args=["staff", "create", "--email", "A@example.com", "--role", "admin"])
    assert again.exit_code != 0 and "exists already" in again.output
    assert runner.invoke(args=["staff", "create", "--email", "b@example.com", "--role", "pos"]).exit_code != 0
    bad = runner.invoke(args=["staff", "create", "--email", "not-an-email", "--role", "admin"])
    assert bad.exit_code != 0 and "not an email address" in bad.output


def test_list_disable_and_reset_password(app, runner):
    runner.invoke(args=["staff", "create", "--email", "a@example.com", "--role", "admin"])
    listing = runner.invoke(args=["staff", "list"]).output
    assert "a@example.com\tadmin\ta\tactive\t-" in listing
    assert runner.invoke(args=["staff", "disable", "a@example.com"]).exit_code == 0
    assert "\tdisabled\t" in runner.invoke(args=["staff", "list"]).output
    reset = runner.invoke(args=["staff", "reset-password", "a@example.com"])
    assert reset.exit_code == 0
    password = reset.output.strip().splitlines()[-1]
    with app.app_context():
        assert staff_service.sign_in("a@example.com", password).must_change_password
        db.session.remove()
    missing = runner.invoke(args=["staff", "disable", "nobody@example.com"])
    assert missing.exit_code != 0 and "No staff member" in missing.output
