"""Webhooks over HTTP (issue #7): admin only; subscriptions never show their secret; deliveries
with their attempts; replay of one delivery or of every dead one."""
import hashlib
import hmac
import json
import socket

import pytest

from loyalty.webhooks import jobs as webhook_jobs
from tests.service.test_webhooks import Receiver

SECRET = "a-shared-secret-for-tests"
ENDPOINTS = [
    ("get", "/webhooks"),
    ("post", "/webhooks"),
    ("get", "/webhooks/1"),
    ("patch", "/webhooks/1"),
    ("delete", "/webhooks/1"),
    ("get", "/webhooks/1/deliveries"),
    ("post", "/webhooks/1/replay"),
    ("post", "/webhook-deliveries/1/replay"),
]


@pytest.fixture
def receiver(app):
    """A receiver on 127.0.0.1: loopback, refused by default, allowed as in development."""
    app.config["LOYALTY_WEBHOOK_ALLOW_PRIVATE"] = True
    receiver = Receiver()
    yield receiver
    receiver.close()
    app.config["LOYALTY_WEBHOOK_ALLOW_PRIVATE"] = False


def create(api, url, events=("member.created",), **fields):
    response = api.post("admin", "/webhooks", json={"url": url, "events": list(events), "secret": SECRET, **fields})
    assert response.status_code == 201, response.json
    return response.json


def register(api, n=1):
    response = api.post("app", "/members", json={"name": f"Member {n}", "phone": f"+8613900000{n:03d}"})
    assert response.status_code == 201, response.json
    return response.json


def deliver(app):
    with app.app_context():
        return webhook_jobs.deliver_due()


@pytest.mark.parametrize("method, path", ENDPOINTS)
@pytest.mark.parametrize("role", ["marketing", "pos", "app"])
def test_only_admin_may_touch_webhooks(api, method, path, role):
    response = getattr(api, method)(role, path, json={} if method in ("post", "patch") else None)
    assert response.status_code == 403
    assert response.json["error"] == "forbidden"


def test_a_subscription_is_created_listed_and_never_shows_its_secret(api):
    created = create(api, "https://crm.example/hooks", ["tier.changed", "member.created"], description="CRM")

    assert created["events"] == ["member.created", "tier.changed"]
    assert created["deliveries"] == {"pending": 0, "delivered": 0, "dead": 0, "cancelled": 0}
    assert "secret" not in created and SECRET not in json.dumps(created)
    listed = api.get("admin", "/webhooks").json["items"]
    assert [s["id"] for s in listed] == [created["id"]] and "secret" not in listed[0]
    audit = api.get("admin", "/audit-log?entity_type=webhook").json["items"]
    assert [e["action"] for e in audit] == ["webhook.create"] and SECRET not in json.dumps(audit)


@pytest.mark.parametrize("body, field", [
    ({"url": "mailto:someone@example.com"}, "url"),
    ({"events": ["points.gifted"]}, "events"),
    ({"events": []}, "events"),
    ({"secret": "too-short"}, "secret"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_subscriptions_are_refused_with_the_field_named(api, body, field):
    good = {"url": "https://crm.example/hooks", "events": ["member.created"], "secret": SECRET}
    response = api.post("admin", "/webhooks", json={**good, **body})

    assert response.status_code == 422, response.json
    assert field in json.dumps(response.json["errors"])
    assert api.get("admin", "/webhooks").json["items"] == []


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:5099/a\r\nX-Injected: 1", "line breaks"),
    ("http://127.0.0.1:abc/", "The port must be a number from 1 to 65535."),
    ("https://crm.example/my hooks", "Spaces"),
    ("https://admin:hunter2@crm.example/hooks", "user name or password"),
    ("https://crm.example/\u0007x", "control"),  # a NUL never gets here: the edge refuses it (400)
    ("http://169.254.169.254/latest/meta-data/", "link-local address"),
    ("http://2130706433/", "loopback address"),
    ("http://[::ffff:127.0.0.1]:5432/", "loopback address"),
    ("http://localhost:5432/", "loopback address"),
    ("http://10.0.0.8/hooks", "private address"),
    ("http://100.64.1.1/hooks", "shared (carrier-grade NAT) address"),
    ("https://crm.example/" + "x" * 490, "between 8 and 500"),
])
def test_a_url_that_cannot_or_may_not_be_reached_is_refused_when_subscribed(api, url, says):
    response = api.post("admin", "/webhooks", json={"url": url, "events": ["member.created"], "secret": SECRET})

    assert response.status_code == 422, response.json
    assert response.json["error"] == "validation_error"
    [sentence] = response.json["errors"]["url"]
    assert says in sentence
    assert api.get("admin", "/webhooks").json["items"] == []


def test_a_url_changed_to_a_refused_one_is_refused_and_the_old_one_stays(api):
    subscription = create(api, "https://crm.example/hooks")
    path = f"/webhooks/{subscription['id']}"

    for url in ("http://169.254.169.254/", "https://crm.example/a\nb", "http://crm.example:99999/"):
        response = api.patch("admin", path, json={"url": url})
        assert response.status_code == 422 and "url" in response.json["errors"], url
    assert api.get("admin", path).json["url"] == "https://crm.example/hooks"
    assert api.patch("admin", path, json={"url": "https://crm.example/v2"}).json["url"] == "https://crm.example/v2"


def test_a_name_that_resolves_to_a_private_address_is_refused_without_saying_which(api, monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("172.20.0.5", 443))])

    response = api.post("admin", "/webhooks", json={"url": "https://db.internal.example/", "events": ["member.created"],
                                                   "secret": SECRET})
    assert response.status_code == 422
    assert response.json["errors"]["url"] == ["Not allowed: the destination resolves to a private address; "
                                              "webhooks are sent to public internet addresses only."]
    assert "172.20" not in json.dumps(response.json)


def test_deliveries_show_their_attempts_and_a_dead_one_can_be_replayed(api, app, receiver):
    app.config["LOYALTY_WEBHOOK_MAX_ATTEMPTS"] = 1
    try:
        subscription = create(api, receiver.url)
        member = register(api)
        receiver.script = [500]
        assert deliver(app)["dead"] == 1
    finally:
        app.config["LOYALTY_WEBHOOK_MAX_ATTEMPTS"] = 8

    page = api.get("admin", f"/webhooks/{subscription['id']}/deliveries?status=dead").json
    [delivery] = page["items"]
    assert page["next_cursor"] is None
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("dead", 1, 500)
    assert delivery["event_type"] == "member.created"
    assert json.loads(delivery["body"])["data"]["member_id"] == member["id"]
    assert [(a["status_code"], a["error"]) for a in delivery["attempt_log"]] == [(500, "answered 500")]
    assert api.get("admin", f"/webhooks/{subscription['id']}").json["deliveries"]["dead"] == 1

    replayed = api.post("admin", f"/webhook-deliveries/{delivery['id']}/replay")
    assert replayed.status_code == 200 and replayed.json["status"] == "pending"
    again = api.post("admin", f"/webhook-deliveries/{delivery['id']}/replay")
    assert again.status_code == 409 and "still pending" in again.json["message"]
    assert deliver(app)["delivered"] == 1
    headers, body, _ = receiver.requests[-1]
    assert headers["X-Loyalty-Signature"] == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert api.post("admin", "/webhook-deliveries/999/replay").status_code == 404


def test_replay_of_every_dead_delivery_and_pagination(api, app, receiver):
    app.config["LOYALTY_WEBHOOK_MAX_ATTEMPTS"] = 1
    try:
        subscription = create(api, receiver.url)
        for n in range(3):
            register(api, n)
        receiver.script = [500] * 3
        deliver(app)
    finally:
        app.config["LOYALTY_WEBHOOK_MAX_ATTEMPTS"] = 8
    first = api.get("admin", f"/webhooks/{subscription['id']}/deliveries?limit=2").json
    second = api.get("admin", f"/webhooks/{subscription['id']}/deliveries?limit=2&cursor={first['next_cursor']}").json
    assert len(first["items"]) == 2 and len(second["items"]) == 1 and second["next_cursor"] is None
    ids = [d["id"] for d in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True)

    response = api.post("admin", f"/webhooks/{subscription['id']}/replay")
    assert response.status_code == 200 and response.json == {"replayed": 3}
    assert deliver(app)["delivered"] == 3


def test_subscriptions_are_listed_oldest_first_a_page_at_a_time(api):
    made = [create(api, f"https://crm.example/hooks/{n}")["id"] for n in range(3)]
    api.delete("admin", f"/webhooks/{made[1]}")

    first = api.get("admin", "/webhooks?limit=1").json
    assert [s["id"] for s in first["items"]] == [made[0]] and first["next_cursor"]
    second = api.get("admin", f"/webhooks?limit=1&cursor={first['next_cursor']}").json
    assert ([s["id"] for s in second["items"]], second["next_cursor"]) == ([made[2]], None)  # deleted: not listed
    whole = api.get("admin", "/webhooks").json
    assert ([s["id"] for s in whole["items"]], whole["next_cursor"]) == ([made[0], made[2]], None)
    for query, field in [("limit=0", "limit"), ("limit=201", "limit"), ("cursor=%%%", "cursor")]:
        response = api.get("admin", f"/webhooks?{query}")
        assert response.status_code == 422 and field in response.json["errors"], query


def test_pausing_editing_and_deleting_a_subscription(api):
    subscription = create(api, "https://crm.example/hooks")
    path = f"/webhooks/{subscription['id']}"

    paused = api.patch("admin", path, json={"active": False, "events": ["points.credited", "voucher.used"]})
    assert paused.status_code == 200
    assert (paused.json["active"], paused.json["events"]) == (False, ["points.credited", "voucher.used"])
    assert api.patch("admin", path, json={"url": "gopher://x"}).status_code == 422

    deleted = api.delete("admin", path)
    assert deleted.status_code == 200 and deleted.json["active"] is False
    assert deleted.json["deliveries"]["cancelled"] == 0
    assert api.get("admin", path).status_code == 404
    assert api.delete("admin", path).status_code == 404
    assert api.get("admin", "/webhooks").json["items"] == []


def test_webhooks_are_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert {"/api/v1/webhooks", "/api/v1/webhooks/{subscription_id}", "/api/v1/webhooks/{subscription_id}/deliveries",
            "/api/v1/webhooks/{subscription_id}/replay", "/api/v1/webhook-deliveries/{delivery_id}/replay"} <= set(paths)
