"""Writes trust an API key (or member token) this process checked a few seconds ago, as reads do
(tests/api/test_read_paths.py), and confirm it inside their transaction, just before it commits, by
the settings version that transaction read (auth.roles, database.BEFORE_COMMIT): a POS credit does
not read its key again (issue 20), and a key revoked anywhere is refused by the next write here,
which then writes nothing."""
import pytest
import sqlalchemy as sa

from loyalty.extensions import db
from tests.api.test_read_paths import (Statements, in_other_process, member_id, other_process,  # noqa: F401
                                       revoke_elsewhere, token_for)


def counts(app):
    with app.app_context():
        found = db.session.execute(sa.text(
            "SELECT (SELECT count(*) FROM purchases), (SELECT count(*) FROM ledger_entries), "
            "(SELECT count(*) FROM activities), (SELECT count(*) FROM refunds), "
            "(SELECT count(*) FROM members WHERE name = 'Changed')")).one()
        db.session.remove()
    return tuple(found)


def test_a_credit_with_a_key_checked_moments_ago_does_not_read_the_key(app, api, member_id):
    assert api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R2",
                                               "amount": "10.00"}).status_code == 201
    with app.app_context():
        statements = Statements(db.engine)

    again = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R3", "amount": "10.00"})

    assert again.status_code == 201, again.get_json()
    assert not [s for s in statements.seen if "api_keys" in s], statements.seen
    assert again.get_json()["member"]["points"]["available"] == 120


WRITES = {  # (role, method, path, body): each reads the settings version in its transaction or not
    "purchase": ("pos", "post", "/purchases", {"member_id": "{id}", "receipt_no": "R9", "amount": "10.00"}),
    "activity": ("app", "post", "/members/{id}/activities", {"type": "sign_in", "event_id": "E9"}),
    "refund": ("pos", "post", "/purchases/{purchase}/refunds", {"refund_no": "F9", "amount": "10.00"}),
    "profile": ("app", "patch", "/members/{id}", {"name": "Changed"}),
    "refused": ("pos", "post", "/purchases", {"member_id": "{id}", "receipt_no": "R9", "amount": "-1"}),
}


def _filled(value, ids):
    if isinstance(value, dict):
        return {key: _filled(item, ids) for key, item in value.items()}
    if value == "{id}":
        return ids["id"]
    return value.format(**ids) if isinstance(value, str) else value


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_key_revoked_by_another_process_is_refused_by_the_next_write_here(app, api, keys, member_id,
                                                                           other_process, write):
    role, method, path, body = WRITES[write]
    first = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R2", "amount": "10.00"})
    assert first.status_code == 201
    assert api.get("app", f"/members/{member_id}").status_code == 200  # both keys now kept by this process
    ids = {"id": member_id, "purchase": first.get_json()["purchase_id"]}
    before = counts(app)

    revoke_elsewhere(other_process, keys[role])

    refused = getattr(api, method)(role, _filled(path, ids), json=_filled(body, ids))
    assert refused.status_code == 401, refused.get_json()
    assert "revoked" in refused.get_json()["message"]
    assert counts(app) == before


def test_member_tokens_revoked_by_another_process_are_refused_by_the_next_write_here(app, client, api, keys,
                                                                                    member_id, other_process):
    token = token_for(api, member_id)
    url = f"/api/v1/members/{member_id}"
    assert client.patch(url, headers=token, json={"name": "Kept"}).status_code == 200  # kept by this process now
    before = counts(app)

    in_other_process(other_process, keys, "delete", f"/members/{member_id}/tokens")

    refused = client.patch(url, headers=token, json={"name": "Changed"})
    assert refused.status_code == 401
    assert "revoked" in refused.get_json()["message"]
    assert counts(app) == before


def test_an_idempotent_replay_with_a_key_revoked_elsewhere_is_refused(api, keys, member_id, other_process):
    body = {"member_id": member_id, "receipt_no": "R5", "amount": "10.00"}
    first = api.post("pos", "/purchases", json=body, extra_headers={"Idempotency-Key": "k-5"})
    assert first.status_code == 201

    revoke_elsewhere(other_process, keys["pos"])

    again = api.post("pos", "/purchases", json=body, extra_headers={"Idempotency-Key": "k-5"})
    assert again.status_code == 401, again.get_json()  # not the stored answer


def test_a_version_moved_by_another_change_reads_the_key_again_and_the_write_goes_through(
        app, api, keys, headers, member_id, other_process):
    assert api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R2",
                                               "amount": "10.00"}).status_code == 201  # the key kept here
    rules = api.get("pos", "/earning-rules").get_json()
    changed = other_process.test_client().put("/api/v1/earning-rules", headers=headers["admin"],
                                               json={**rules, "points_per_unit": 2})
    assert changed.status_code == 200, changed.get_json()
    with app.app_context():
        statements = Statements(db.engine)

    credited = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R3", "amount": "10.00"})

    assert credited.status_code == 201, credited.get_json()
    assert credited.get_json()["points_earned"] == 20  # the rules changed elsewhere, seen at once
    assert [s for s in statements.seen if "api_keys" in s], statements.seen  # the key read again


def test_a_member_merged_by_another_process_loses_its_token_for_writes_here(client, api, keys, member_id,
                                                                           other_process):
    token = token_for(api, member_id)
    url = f"/api/v1/members/{member_id}"
    assert client.patch(url, headers=token, json={"name": "Kept"}).status_code == 200
    survivor = api.post("app", "/members", json={"phone": "13800000078", "name": "Survivor"}).get_json()["id"]
    in_other_process(other_process, keys, "post", f"/members/{survivor}/merge", json={"from_member_id": member_id})

    refused = client.patch(url, headers=token, json={"name": "Changed"})
    assert refused.status_code == 401
    assert "closed" in refused.get_json()["message"]
