"""Wrong passwords sent at the same instant are each counted: the account locks once, at the
fifth, however the guesses interleave (the staff row is locked while an attempt is judged)."""
import threading

import pytest
import sqlalchemy as sa

from loyalty.audit import AuditEntry
from loyalty.extensions import db
from loyalty.staff import service as staff_service
from loyalty.staff.models import StaffMember
from tests.console.conftest import PASSWORD, make_staff

THREADS = 10


@pytest.mark.postgres_only
def test_ten_concurrent_wrong_passwords_lock_the_account_exactly_once(app):
    make_staff(app, "alice@example.com", "admin")
    barrier = threading.Barrier(THREADS)
    outcomes = []

    def guess():
        with app.app_context():
            barrier.wait(timeout=30)
            try:
                staff_service.sign_in("alice@example.com", "wrong guess")
                outcomes.append("signed in")
            except staff_service.AccountLocked:
                outcomes.append("locked")
            except staff_service.SignInRefused:
                outcomes.append("refused")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=guess) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["locked"] * 6 + ["refused"] * 4
    with app.app_context():
        assert len(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "staff.locked")).all()) == 1
        staff = db.session.scalars(sa.select(StaffMember)).one()
        assert staff.locked_until is not None and staff.failed_sign_ins == 0
        with pytest.raises(staff_service.AccountLocked):
            staff_service.sign_in("alice@example.com", PASSWORD)
        db.session.remove()
