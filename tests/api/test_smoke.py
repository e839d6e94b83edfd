from decimal import Decimal


def test_member_purchase_and_points_flow(api, client):
    created = api.post("app", "/members", json={"name": "Li Lei", "phone": "138 0000 0001"})
    assert created.status_code == 201, created.json
    member = created.json
    assert member["phone"] == "13800000001"
    assert member["points"] == {"available": 0, "pending": 0, "lifetime_earned": 0}
    bought = api.post("pos", "/purchases", json={"member_id": member["id"], "receipt_no": "A-1",
                                                  "amount": "199.90"})
    assert bought.status_code == 201, bought.json
    assert b'"points_earned": 199.9,' in bought.data
    assert bought.json["member"]["points"]["available"] == Decimal("199.9")
    points = api.get("app", f"/members/{member['id']}/points")
    assert points.status_code == 200
    assert points.json["available"] == Decimal("199.9")
    refund = api.post("pos", f"/purchases/{bought.json['purchase_id']}/refunds",
                      json={"refund_no": "R1", "amount": "100.00"})
    assert refund.status_code == 201, refund.json
    pay = api.post("pos", "/points-payments", json={"member_id": member["id"], "payment_no": "P1", "points": 50})
    assert pay.status_code == 201, pay.json
    rev = api.post("pos", f"/points-payments/{pay.json['payment_id']}/reversal")
    assert rev.status_code == 201, rev.json
    act = api.post("app", f"/members/{member['id']}/activities", json={"type": "sign_in", "event_id": "e1"})
    assert act.status_code == 201, act.json
    adj = api.post("admin", f"/members/{member['id']}/adjustments", json={"points": -500, "reason": "test debt"})
    assert adj.status_code == 201, adj.json
    hist = api.get("app", f"/members/{member['id']}/points/history?limit=2")
    assert hist.status_code == 200, hist.json
    print(hist.json)
    rules = api.get("marketing", "/earning-rules")
    assert rules.status_code == 200
    put = api.put("marketing", "/earning-rules", json=rules.json)
    assert put.status_code == 200, put.json["errors"]
    card = api.get("pos", f"/members/{member['id']}/card.png")
    assert card.status_code == 200 and card.mimetype == "image/png"
    assert client.get("/healthz").json == {"status": "ok", "database": "ok"}
    spec = client.get("/api/v1/openapi.json")
    assert spec.status_code == 200
    bad = api.post("pos", "/purchases", json={"member_id": member["id"], "receipt_no": "A-2", "amount": 1.005, "x": 1})
    print(bad.json)
    assert bad.status_code == 422
