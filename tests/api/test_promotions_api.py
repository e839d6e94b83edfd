"""Promotions over HTTP: every field's validation with a sentence, roles, the audit log, listing
by status, stats, simulate, and the purchase answer's breakdown."""
import pytest

from tests.api.test_auth_and_roles import new_member

PROMOTION = {"name": "Double points Tuesday", "status": "active", "starts_at": "2020-01-01T00:00:00Z",
             "effect": {"type": "multiplier", "value": "2"}}


def create(api, role="marketing", **fields):
    response = api.post(role, "/promotions", json={**PROMOTION, **fields})
    assert response.status_code == 201, response.json
    return response.json


def field_errors(response):
    assert response.status_code == 422, response.json
    assert response.json["error"] == "validation_error"
    assert len(response.json["message"]) > 10
    return response.json["errors"]


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("change, where", [
    ({"effect": {"type": "cashback", "value": "2"}}, "effect"),
    ({"effect": {"type": "multiplier", "value": "0"}}, "effect"),
    ({"effect": {"type": "multiplier", "value": "-2"}}, "effect"),
    ({"effect": {"type": "multiplier", "value": "10.01"}}, "effect"),
    ({"effect": {"type": "multiplier", "value": "1"}}, "effect"),
    ({"effect": {"type": "multiplier"}}, "effect"),
    ({"effect": {"type": "bonus", "points": "50", "value": "2"}}, "effect"),
    ({"effect": {"type": "per_amount", "points": "5"}}, "effect"),
    ({"effect": {"type": "per_amount", "points": "5", "per": "0.00"}}, "effect"),
    ({"effect": {"type": "bonus", "points": "1.005"}}, "effect"),
    ({"effect": {"type": "bonus", "points": "１０"}}, "effect"),
    ({"ends_at": "2019-12-31T00:00:00Z"}, "ends_at"),
    ({"ends_at": "2020-01-01T00:00:00Z"}, "ends_at"),
    ({"schedule": {"days_of_week": [8]}}, "schedule"),
    ({"schedule": {"days_of_week": [0]}}, "schedule"),
    ({"schedule": {"days_of_week": [2, 2]}}, "schedule"),
    ({"schedule": {"from": "24:00"}}, "schedule"),
    ({"schedule": {"from": "9:00"}}, "schedule"),
    ({"schedule": {"until": "12:60"}}, "schedule"),
    ({"schedule": {"from": "10:00", "until": "10:00"}}, "schedule"),
    ({"scope": {"tiers": ["platinum"]}}, "scope"),
    ({"scope": {"stores": []}}, "scope"),
    ({"scope": {"min_amount": "-1.00"}}, "scope"),
    ({"scope": {"colour": ["red"]}}, "scope"),
    ({"limits": {"per_member": 0}}, "limits"),
    ({"limits": {"per_member": 1, "per_member_period": "year"}}, "limits"),
    ({"limits": {"per_member_period": "day"}}, "limits"),
    ({"limits": {"budget_points": 0}}, "limits"),
    ({"stacking": "sometimes"}, "stacking"),
    ({"priority": "high"}, "priority"),
    ({"status": "stopped"}, "status"),
    ({"status": "ended"}, "status"),
    ({"name": ""}, "name"),
])
def test_every_field_is_checked_with_a_sentence_and_nothing_is_written(api, change, where):
    errors = field_errors(api.post("marketing", "/promotions", json={**PROMOTION, **change}))

    assert where in errors
    assert api.get("marketing", "/promotions").json["items"] == []


@pytest.mark.parametrize("missing", ["name", "starts_at", "effect"])
def test_name_start_and_effect_are_required(api, missing):
    body = {key: value for key, value in PROMOTION.items() if key != missing}

    assert missing in field_errors(api.post("marketing", "/promotions", json=body))


def test_a_promotion_is_created_with_its_defaults_and_read_back(api):
    created = create(api, **{"schedule": {"days_of_week": [2], "from": "16:00",
                                                                                "until": "18:00"}})

    assert created["status"] == "active" and created["stacking"] == "stack" and created["priority"] == 0
    assert created["effect"] == {"type": "multiplier", "value": "2"}
    assert created["schedule"] == {"days_of_week": [2], "from": "16:00", "until": "18:00"}
    assert api.get("marketing", f"/promotions/{created['id']}").json == created
    draft = api.post("marketing", "/promotions", json={key: v for key, v in PROMOTION.items() if key != "status"})
    assert draft.json["status"] == "draft"


def test_a_patch_changes_what_it_names_and_is_audit_logged(api):
    promotion = create(api)

    changed = api.patch("marketing", f"/promotions/{promotion['id']}",
                        json={"effect": {"type": "per_amount", "points": "5", "per": "100.00"},
                              "limits": {"per_member": 1, "per_member_period": "week"}})

    assert changed.status_code == 200, changed.json
    assert changed.json["effect"] == {"type": "per_amount", "points": "5", "per": "100.00"}
    assert changed.json["limits"] == {"per_member": 1, "per_member_period": "week"}
    assert changed.json["name"] == PROMOTION["name"]
    log = api.get("admin", "/audit-log?entity_type=promotion").json["items"]
    assert [entry["action"] for entry in log] == ["promotion.update", "promotion.create"]
    assert log[0]["before"]["effect"]["type"] == "multiplier" and log[0]["after"]["effect"]["type"] == "per_amount"


def test_a_patch_that_would_end_before_the_start_is_refused(api):
    promotion = create(api)

    errors = field_errors(api.patch("marketing", f"/promotions/{promotion['id']}",
                                    json={"ends_at": "2019-06-01T00:00:00Z"}))

    assert "ends_at" in errors


def test_stop_is_final_and_unknown_ids_are_404(api):
    promotion = create(api)

    stopped = api.post("marketing", f"/promotions/{promotion['id']}/stop")

    assert stopped.status_code == 200 and stopped.json["status"] == "stopped"
    refused = api.patch("marketing", f"/promotions/{promotion['id']}", json={"name": "Again"})
    assert refused.status_code == 409 and refused.json["error"] == "conflict"
    assert api.get("marketing", "/promotions/999").status_code == 404
    assert api.post("marketing", "/promotions/999/stop").status_code == 404
    assert api.get("marketing", "/promotions/999/stats").status_code == 404


# --- listing --------------------------------------------------------------------------------------

def test_the_list_filters_by_status_and_pages_by_cursor(api):
    active = [create(api, name=f"Active {n}")["id"] for n in range(3)]
    draft = create(api, name="Draft", status="draft")["id"]
    ended = create(api, name="Ended", ends_at="2021-01-01T00:00:00Z")["id"]
    stopped = create(api, name="Stopped")["id"]
    api.post("marketing", f"/promotions/{stopped}/stop")

    def ids(status):
        return [p["id"] for p in api.get("marketing", f"/promotions?status={status}").json["items"]]

    assert ids("active") == active[::-1]
    assert (ids("draft"), ids("ended"), ids("stopped")) == ([draft], [ended], [stopped])
    first = api.get("marketing", "/promotions?status=active&limit=2").json
    second = api.get("marketing", f"/promotions?status=active&limit=2&cursor={first['next_cursor']}").json
    assert [p["id"] for p in first["items"] + second["items"]] == active[::-1]
    assert second["next_cursor"] is None
    assert field_errors(api.get("marketing", "/promotions?status=running"))
    assert api.get("marketing", "/promotions?cursor=nonsense").status_code == 422


# --- purchases, refunds, stats --------------------------------------------------------------------

def test_the_purchase_answer_has_its_breakdown_and_a_refund_takes_promotion_points_back(api):
    member_id = new_member(api)
    double = create(api)["id"]
    bonus = create(api, name="50 over 200", effect={"type": "bonus", "points": "50"},
                   scope={"min_amount": "200.00"})["id"]

    purchase = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "200.00",
                                                   "channel": "online"})

    assert purchase.status_code == 201, purchase.json
    assert purchase.json["points_earned"] == 450
    assert purchase.json["breakdown"] == [
        {"source": "base", "name": "Base points", "points": 200},
        {"source": "promotion", "promotion_id": double, "name": "Double points Tuesday", "points": 200},
        {"source": "promotion", "promotion_id": bonus, "name": "50 over 200", "points": 50}]
    history = api.get("app", f"/members/{member_id}/points/history?type=bonus").json["items"]
    assert sorted(entry["reference"]["id"] for entry in history) == sorted([str(double), str(bonus)])
    refund = api.post("pos", f"/purchases/{purchase.json['purchase_id']}/refunds",
                      json={"refund_no": "F1", "amount": "100.00"})
    assert refund.json["points_reversed"] == 225
    stats = api.get("marketing", f"/promotions/{double}/stats").json
    assert stats == {"promotion_id": double, "purchases": 1, "members": 1, "points_granted": 200,
                     "points_clawed_back": 100, "qualifying_spend": "200.00", "budget_points": None,
                     "budget_left": None}


# --- simulate -------------------------------------------------------------------------------------

def test_simulate_shows_what_a_purchase_would_earn_and_writes_nothing(api):
    member_id = new_member(api)
    double = create(api)["id"]
    draft = create(api, name="Draft bonus", status="draft", effect={"type": "bonus", "points": "7"})["id"]
    body = {"member_id": member_id, "store_id": "S1", "amount": "10.00"}

    for role in ("pos", "app", "marketing", "admin"):
        answer = api.post(role, "/promotions/simulate", json=body)
        assert answer.status_code == 200, (role, answer.json)
        assert answer.json["points"] == 20
        assert answer.json["breakdown"][1] == {"source": "promotion", "promotion_id": double,
                                               "name": "Double points Tuesday", "points": 10}
    with_drafts = api.post("marketing", "/promotions/simulate", json={**body, "include_drafts": True})
    assert with_drafts.json["points"] == 27 and with_drafts.json["breakdown"][-1]["promotion_id"] == draft
    assert api.get("app", f"/members/{member_id}/points/history").json["items"] == []
    assert api.get("marketing", f"/promotions/{double}/stats").json["purchases"] == 0


def test_simulate_for_a_guest_and_at_another_time(api):
    create(api, name="Evenings", schedule={"from": "20:00", "until": "22:00"}, effect={"type": "bonus", "points": "5"})

    evening = api.post("app", "/promotions/simulate", json={"store_id": "S1", "amount": "10.00",
                                                            "at": "2026-11-24T12:30:00Z"})  # 20:30 in Shanghai
    morning = api.post("app", "/promotions/simulate", json={"store_id": "S1", "amount": "10.00",
                                                            "at": "2026-11-24T01:30:00Z"})

    assert (evening.json["points"], morning.json["points"]) == (15, 10)
    assert evening.json["at"] == "2026-11-24T12:30:00Z"


def test_only_marketing_and_admin_simulate_drafts_and_a_till_only_its_own_store(api):
    body = {"store_id": "S1", "amount": "10.00", "include_drafts": True}

    for role in ("pos", "app"):
        refused = api.post(role, "/promotions/simulate", json=body)
        assert refused.status_code == 403 and "draft" in refused.json["message"]
    other_store = api.post("pos", "/promotions/simulate", json={"store_id": "S2", "amount": "10.00"})
    assert other_store.status_code == 403 and "S1" in other_store.json["message"]
    own_store = api.post("pos", "/promotions/simulate", json={"amount": "10.00"})
    assert own_store.status_code == 200
    assert "store_id" in field_errors(api.post("app", "/promotions/simulate", json={"amount": "10.00"}))
    assert api.post("app", "/promotions/simulate", json={"store_id": "S1", "amount": "10.00",
                                                         "member_id": 999}).status_code == 404


@pytest.mark.parametrize("role", ["pos", "app"])
def test_tills_and_the_app_cannot_manage_promotions(api, role):
    assert api.post(role, "/promotions", json=PROMOTION).status_code == 403
    assert api.get(role, "/promotions").status_code == 403
