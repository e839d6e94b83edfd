"""What marketing sets on rewards and referral campaigns has documented bounds: 422 beyond them."""
import pytest

CAMPAIGN = {
    "name": "Bring a friend", "starts_at": "2026-03-01T00:00:00Z", "referrer_points": 100,
    "referee_points": 50, "min_first_purchase": "100.00", "qualify_within_days": 30,
    "link_template": "https://shop.example/join?ref={code}",
}
REWARD = {"name": "Tote bag", "kind": "goods", "points_cost": 100, "voucher_valid_days": 30}


@pytest.mark.parametrize("cost, status", [(10_000_000, 201), ("10000000.01", 422), (10**12, 422)])
def test_a_reward_costs_at_most_ten_million_points(api, cost, status):
    response = api.post("marketing", "/rewards", json={**REWARD, "points_cost": cost})

    assert response.status_code == status, response.json
    if status == 422:
        assert "points_cost" in response.json["errors"]


def test_a_reward_cannot_be_changed_to_cost_more(api):
    reward = api.post("marketing", "/rewards", json=REWARD).json

    response = api.patch("marketing", f"/rewards/{reward['id']}", json={"points_cost": 10**9})

    assert response.status_code == 422 and "points_cost" in response.json["errors"]


@pytest.mark.parametrize("field", ["referrer_points", "referee_points", "ambassador_bonus_points"])
def test_campaign_points_are_at_most_one_hundred_thousand(api, field):
    at_most = api.post("marketing", "/referral-campaigns", json={**CAMPAIGN, field: 100000})
    beyond = api.post("marketing", "/referral-campaigns", json={**CAMPAIGN, field: "100000.01"})

    assert at_most.status_code == 201, at_most.json
    assert beyond.status_code == 422 and field in beyond.json["errors"]
