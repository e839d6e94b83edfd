"""Webhooks (issue #7): events written to the outbox in the change's own transaction, delivered by
the job to a real HTTP receiver started here, signed, retried with back-off, dead after the last
try, replayed by admin."""
import hashlib
import hmac
import http.server
import json
import socket
import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from loyalty.audit import AuditEntry
from loyalty.errors import Conflict, NotFound, ValidationFailed
from loyalty.extensions import db
from loyalty.jobs import registry, runner
from loyalty.members import jobs as member_jobs
from loyalty.points import jobs as points_jobs
from loyalty.points import service as points
from loyalty.referrals import service as referrals
from loyalty.rewards import service as rewards
from loyalty.tiers import jobs as tier_jobs
from loyalty.tiers import service as tiers
from loyalty.webhooks import jobs as webhook_jobs
from loyalty.webhooks import service as webhooks
from loyalty.webhooks.models import Attempt, Delivery, Event
from tests import factories
from tests.factories import D
from tests.service.ledger_helpers import T0, assert_ledger_ok, use_rules

pytestmark = pytest.mark.usefixtures("ctx")

SECRET = "s3cret-of-sixteen-chars"
MINUTE = timedelta(minutes=1)


class Receiver:
    """A local HTTP endpoint: records every request, answers with the scripted statuses (then 200)."""

    def __init__(self):
        self.requests, self.script = [], []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server protocol
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body, self.path))
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/loyalty"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def bodies(self):
        return [json.loads(body, parse_float=Decimal) for _, body, _ in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local_receivers(app):
    """Receivers on 127.0.0.1 are loopback, refused by default: allowed as in development."""
    app.config["LOYALTY_WEBHOOK_ALLOW_PRIVATE"] = True
    yield
    app.config["LOYALTY_WEBHOOK_ALLOW_PRIVATE"] = False


@pytest.fixture
def receiver(local_receivers):
    receiver = Receiver()
    yield receiver
    receiver.close()


def subscribe(url, events, **fields):
    return webhooks.create_subscription({"url": url, "events": events, "secret": SECRET, **fields},
                                        actor="admin test", now=T0)


def deliveries():
    return db.session.scalars(sa.select(Delivery).order_by(Delivery.id)
                              .execution_options(populate_existing=True)).all()


def events(type_=None):
    query = sa.select(Event).order_by(Event.created_at, Event.id)
    if type_:
        query = query.where(Event.type == type_)
    return [json.loads(e.body, parse_float=Decimal) for e in db.session.scalars(query)]


def deliver(at=T0):
    return webhook_jobs.deliver_due(now=at)


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nobody-listens"


# --- subscriptions --------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, field", [
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "https:///no-host"}, "url"),
    ({"events": ["points.stolen"]}, "events"),
    ({"events": []}, "events"),
    ({"secret": "short"}, "secret"),
])
def test_a_subscription_must_have_a_web_address_known_events_and_a_real_secret(fields, field):
    good = {"url": "https://crm.example/hooks", "events": ["member.created"], "secret": SECRET}
    with pytest.raises(ValidationFailed) as error:
        webhooks.create_subscription({**good, **fields}, actor="admin test", now=T0)
    assert field in error.value.errors
    assert webhooks.subscriptions() == ([], None)


def test_changes_to_subscriptions_are_audit_logged_without_the_secret():
    subscription = subscribe("https://crm.example/hooks", ["member.created", "tier.changed"])
    webhooks.update_subscription(subscription.id, {"events": ["tier.changed"], "secret": "another-secret-16+"},
                                 actor="admin test", now=T0)
    webhooks.delete_subscription(subscription.id, actor="admin test", now=T0)

    logged = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "webhook")
                                .order_by(AuditEntry.id)).all()
    assert [e.action for e in logged] == ["webhook.create", "webhook.update", "webhook.delete"]
    assert logged[0].after["events"] == ["member.created", "tier.changed"]
    assert logged[1].before["events"] == ["member.created", "tier.changed"]
    assert logged[1].after == {"url": "https://crm.example/hooks", "description": "", "events": ["tier.changed"],
                               "active": True, "secret": "changed"}
    assert SECRET not in json.dumps([e.before for e in logged] + [e.after for e in logged])
    assert webhooks.subscriptions() == ([], None)
    with pytest.raises(NotFound):
        webhooks.get_subscription(subscription.id)


# --- the outbox -----------------------------------------------------------------------------------

def test_nothing_is_written_when_nobody_listens():
    member = factories.member(now=T0)
    factories.purchase(member.id, "120.50", now=T0)

    assert db.session.scalar(sa.select(sa.func.count()).select_from(Event)) == 0


def test_events_are_written_with_the_change_and_one_delivery_per_subscriber():
    crm = subscribe("https://crm.example/hooks", ["member.created", "points.credited"])
    bi = subscribe("https://bi.example/hooks", ["points.credited"])
    member = factories.member(now=T0)
    factories.purchase(member.id, "120.50", now=T0)

    created, credited = events("member.created"), events("points.credited")
    assert [e["data"]["member_id"] for e in created] == [member.id]
    assert created[0]["data"]["member_no"] == member.member_no
    assert len(credited) == 1
    data = credited[0]["data"]
    assert (data["member_id"], data["entry_type"], data["points"], data["pending"]) == \
        (member.id, "earn_purchase", Decimal("120.50"), False)
    assert data["balance"] == {"available": Decimal("120.50"), "pending": Decimal("0.00")}
    assert data["reference"]["type"] == "purchase"
    assert sorted((d.subscription_id, d.event.type) for d in deliveries()) == sorted([
        (crm.id, "member.created"), (crm.id, "points.credited"), (bi.id, "points.credited")])
    assert {d.status for d in deliveries()} == {"pending"}


def test_a_failed_change_writes_no_event():
    subscribe("https://crm.example/hooks", ["points.credited"])
    member = factories.member(now=T0)
    factories.purchase(member.id, "50.00", receipt_no="R-1", now=T0)
    with pytest.raises(Exception):
        points.credit_purchase(member.id, "S1", "R-2", D("-5"), now=T0)  # refused: nothing commits

    assert len(events("points.credited")) == 1


def test_a_retried_purchase_writes_its_event_once():
    subscribe("https://crm.example/hooks", ["points.credited"])
    member = factories.member(now=T0)
    factories.purchase(member.id, "50.00", receipt_no="R-1", now=T0)
    factories.purchase(member.id, "50.00", receipt_no="R-1", now=T0 + MINUTE)  # the till retries

    assert len(events("points.credited")) == 1


def test_tier_upgrades_referral_rewards_and_voucher_use_are_told():
    subscribe("https://crm.example/hooks", ["tier.changed", "referral.rewarded", "voucher.used"])
    referrals.create_campaign({"name": "Bring a friend", "starts_at": T0 - timedelta(days=1), "ends_at": None,
                               "referrer_points": D(100), "referee_points": D(50),
                               "min_first_purchase": D("100.00"), "qualify_within_days": 30,
                               "link_template": "https://shop.example/join?ref={code}"},
                              actor="test", now=T0 - timedelta(days=1))
    referrer = factories.member(now=T0 - timedelta(days=1))
    referee = factories.member(referral_code=referrer.referral_code, now=T0)
    factories.purchase(referee.id, "3000.00", now=T0)  # first purchase, and silver at once
    reward = rewards.create_reward({"name": "Mug", "kind": "goods", "points_cost": D(100),
                                    "voucher_valid_days": 30}, actor="test", now=T0)
    [voucher] = rewards.redeem(referee.id, reward.id, now=T0).record.vouchers
    rewards.use_voucher(voucher.code, "S7", now=T0 + MINUTE)

    [tier] = events("tier.changed")
    assert tier["data"] == {"member_id": referee.id, "from": "ordinary", "to": "silver", "reason": "upgrade",
                            "note": "Qualifying spend 3000.00, 0 activities"}
    [referral] = events("referral.rewarded")
    assert (referral["data"]["referrer_id"], referral["data"]["referee_id"]) == (referrer.id, referee.id)
    assert (referral["data"]["referrer_points"], referral["data"]["referee_points"]) == (100, 50)
    [used] = events("voucher.used")
    assert (used["data"]["code"], used["data"]["store_id"], used["data"]["member_id"]) == \
        (voucher.code, "S7", referee.id)


def test_jobs_tell_of_expiring_points_birthday_gifts_and_recomputed_tiers():
    subscribe("https://crm.example/hooks", ["points.expiring", "points.credited", "tier.changed"])
    use_rules(expiry_days=20)
    member = factories.member(now=T0, birthday=date(1990, 3, 20))
    factories.purchase(member.id, "80.00", now=T0)
    tiers.set_member_tier(member.id, "gold", "Apology for a lost parcel", actor="admin test", now=T0)
    today = date(2026, 3, 20)
    protected_until = date(2027, 3, 10)

    points_jobs.expiry_reminders(today, now=T0 + timedelta(days=10))
    points_jobs.expiry_reminders(today, now=T0 + timedelta(days=10, hours=1))  # again: nothing new
    member_jobs.birthday_bonus(today, now=T0 + timedelta(days=10))
    tier_jobs.recompute_tiers(protected_until + timedelta(days=1), now=T0 + timedelta(days=400))

    [expiring] = events("points.expiring")
    assert expiring["data"]["member_id"] == member.id
    assert expiring["data"]["points"] == "80.00"
    gifts = [e for e in events("points.credited") if e["data"]["reference"]["type"] == "birthday"]
    assert [(g["data"]["member_id"], g["data"]["points"]) for g in gifts] == [(member.id, Decimal(50))]
    moves = [e["data"] for e in events("tier.changed")]
    assert [(m["from"], m["to"], m["reason"]) for m in moves] == [("ordinary", "gold", "manual"),
                                                                   ("gold", "silver", "downgrade")]
    assert_ledger_ok()


# --- delivery -------------------------------------------------------------------------------------

def test_the_job_delivers_a_signed_body_that_the_receiver_can_check(receiver):
    subscription = subscribe(receiver.url, ["points.credited"])
    member = factories.member(now=T0)
    factories.purchase(member.id, "120.50", now=T0)

    summary = deliver()

    assert summary == {"delivered": 1, "failed": 0, "dead": 0, "rows": 1}
    [(headers, body, path)] = receiver.requests
    assert path == "/hooks/loyalty"
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Loyalty-Signature"], expected)
    assert headers["Content-Type"] == "application/json" and headers["X-Loyalty-Event"] == "points.credited"
    sent = json.loads(body, parse_float=Decimal)
    assert sent["type"] == "points.credited" and headers["X-Loyalty-Event-Id"] == sent["id"]
    assert sent["data"]["points"] == Decimal("120.50") and b"120.5" in body  # a number, exact
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.delivered_at) == \
        ("delivered", 1, 200, T0)
    assert headers["X-Loyalty-Delivery"] == str(delivery.id)
    assert [(a.status_code, a.error) for a in delivery.attempt_rows] == [(200, None)]
    assert webhooks.deliveries(subscription.id)[0] == [delivery]
    assert deliver(T0 + MINUTE) == {"delivered": 0, "failed": 0, "dead": 0, "rows": 0}  # nothing twice
    assert len(receiver.requests) == 1


def test_a_receiver_that_fails_twice_then_succeeds_gets_it_on_the_third_try(receiver):
    subscribe(receiver.url, ["member.created"])
    factories.member(now=T0)
    receiver.script = [500, 503]

    assert deliver(T0)["failed"] == 1
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("pending", 1, T0 + MINUTE)
    assert deliver(T0 + 30 * timedelta(seconds=1))["rows"] == 0  # not due yet: back-off
    assert deliver(T0 + MINUTE)["failed"] == 1
    [delivery] = deliveries()
    assert delivery.next_attempt_at == T0 + 3 * MINUTE  # doubled
    assert deliver(T0 + 3 * MINUTE)["delivered"] == 1

    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert [a.status_code for a in delivery.attempt_rows] == [500, 503, 200]
    assert [a.attempted_at for a in delivery.attempt_rows] == [T0, T0 + MINUTE, T0 + 3 * MINUTE]
    bodies = [body for _, body, _ in receiver.requests]
    assert len(bodies) == 3 and len(set(bodies)) == 1  # the same bytes, the same signature each time


def test_a_delivery_that_keeps_failing_is_dead_after_the_last_try_and_admin_can_replay_it(app, receiver):
    app.config["LOYALTY_WEBHOOK_MAX_ATTEMPTS"] = 3
    try:
        subscription = subscribe(receiver.url, ["member.created"])
        factories.member(now=T0)
        receiver.script = [500, 500, 500]
        at = T0
        for _ in range(3):
            deliver(at)
            at += timedelta(hours=1)
        [delivery] = deliveries()
        assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("dead", 3, None)
        assert deliver(at)["rows"] == 0  # dead is not retried

        webhooks.replay(delivery.id, actor="admin test", now=at)
        with pytest.raises(Conflict):
            webhooks.replay(delivery.id, actor="admin test", now=at)  # already pending
        assert deliver(at)["delivered"] == 1
    finally:
        app.config["LOYALTY_WEBHOOK_MAX_ATTEMPTS"] = 8
    [delivery] = deliveries()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert [a.status_code for a in delivery.attempt_rows] == [500, 500, 500, 200]
    assert db.session.scalar(sa.select(AuditEntry.action).where(AuditEntry.entity_type == "webhook_delivery")) \
        == "webhook.replay"
    assert webhooks.subscription_stats([subscription.id])[subscription.id]["delivered"] == 1


def test_replaying_every_dead_delivery_of_a_subscription(app, receiver):
    app.config["LOYALTY_WEBHOOK_MAX_ATTEMPTS"] = 1
    try:
        subscription = subscribe(receiver.url, ["member.created"])
        for _ in range(3):
            factories.member(now=T0)
        receiver.script = [500, 500, 500]
        assert deliver(T0)["dead"] == 3
        assert webhooks.replay_dead(subscription.id, actor="admin test", now=T0 + MINUTE) == 3
        assert deliver(T0 + MINUTE)["delivered"] == 3
    finally:
        app.config["LOYALTY_WEBHOOK_MAX_ATTEMPTS"] = 8


def test_an_unreachable_receiver_is_an_error_that_is_retried(local_receivers):
    subscribe(closed_port_url(), ["member.created"])
    factories.member(now=T0)

    assert deliver(T0) == {"delivered": 0, "failed": 1, "dead": 0, "rows": 1}
    [delivery] = deliveries()
    assert delivery.status == "pending" and delivery.last_status_code is None
    assert delivery.last_error == "connection refused"
    [attempt] = db.session.scalars(sa.select(Attempt)).all()
    assert attempt.error == delivery.last_error


def test_a_paused_subscription_keeps_its_deliveries_and_a_deleted_one_cancels_them(receiver):
    paused = subscribe(receiver.url, ["member.created"])
    factories.member(now=T0)
    webhooks.update_subscription(paused.id, {"active": False}, actor="admin test", now=T0)

    assert deliver(T0)["rows"] == 0
    factories.member(now=T0)  # paused: no new deliveries for it
    assert len(deliveries()) == 1
    webhooks.update_subscription(paused.id, {"active": True}, actor="admin test", now=T0)
    assert deliver(T0)["delivered"] == 1

    factories.member(now=T0 + MINUTE)
    webhooks.delete_subscription(paused.id, actor="admin test", now=T0 + MINUTE)
    assert [d.status for d in deliveries()] == ["delivered", "cancelled"]
    with pytest.raises(NotFound):
        webhooks.replay(12345, actor="admin test")
    assert deliver(T0 + MINUTE)["rows"] == 0


def test_the_job_is_registered_runs_through_the_runner_and_is_recorded(app, receiver):
    subscribe(receiver.url, ["member.created"])
    factories.member()
    job = registry.get("webhooks.deliver")
    assert job.cron == "* * * * *" and job.total() == 1

    record = runner.run(job, date.today())

    assert (record.outcome, record.rows) == ("succeeded", 1)
    assert len(receiver.requests) == 1


# --- destinations and failures (issue 14) ---------------------------------------------------------

def plant_url(subscription_id, url):
    """A URL as a row written before the rules existed may hold: straight into the table."""
    with db.engine.begin() as connection:
        connection.execute(sa.text("UPDATE webhook_subscriptions SET url = :url WHERE id = :id"),
                           {"url": url, "id": subscription_id})


def test_receivers_on_this_machine_are_refused_by_default(app):
    receiver = Receiver()
    assert app.config["LOYALTY_WEBHOOK_ALLOW_PRIVATE"] is False
    with receiver, pytest.raises(ValidationFailed) as error:
        subscribe(receiver.url, ["member.created"])
    assert error.value.errors["url"] == ["Not allowed: the destination is a loopback address; "
                                         "webhooks are sent to public internet addresses only."]
    assert webhooks.subscriptions() == ([], None)


def test_a_bad_url_stored_before_the_rules_fails_alone_and_the_job_succeeds(app, runner):
    first, second = Receiver(), Receiver()
    app.config["LOYALTY_WEBHOOK_ALLOW_PRIVATE"] = True
    try:
        subscribe(first.url, ["member.created"])
        bad = subscribe(first.url.replace("/hooks/loyalty", "/old"), ["member.created"])
        subscribe(second.url, ["member.created"])
        plant_url(bad.id, "http://127.0.0.1:5099/a\r\nX-Injected: 1")
        factories.member()  # now, by the clock: the CLI delivers what is due now

        result = runner.invoke(args=["jobs", "run", "webhooks.deliver"])
        again = runner.invoke(args=["jobs", "run", "webhooks.deliver"])  # the bad one is not due yet

        assert result.exit_code == 0, result.output
        assert "delivered 2, failed 1" in result.output
        assert again.exit_code == 0 and "delivered 0, failed 0" in again.output
        assert (len(first.requests), len(second.requests)) == (1, 1)  # each sent once, never again
        assert [p for _, _, p in first.requests] == ["/hooks/loyalty"]
        by_subscription = {d.subscription_id: d for d in deliveries()}
        failed = by_subscription[bad.id]
        assert (failed.status, failed.attempts, failed.last_status_code) == ("pending", 1, None)
        assert failed.last_error.startswith("The subscription's URL is not valid (Spaces, line breaks")
        assert failed.next_attempt_at is not None
        assert [a.error for a in failed.attempt_rows] == [failed.last_error]
        assert sorted(d.status for d in deliveries()) == ["delivered", "delivered", "pending"]
        assert db.session.scalar(sa.text("SELECT outcome FROM job_runs ORDER BY id DESC LIMIT 1")) == "succeeded"
    finally:
        app.config["LOYALTY_WEBHOOK_ALLOW_PRIVATE"] = False
        first.close()
        second.close()


def test_an_exception_in_one_delivery_is_recorded_on_it_and_the_others_go_out(receiver):
    for path in ("/a", "/boom", "/c"):
        subscribe(receiver.url.replace("/hooks/loyalty", path), ["member.created"])
    factories.member(now=T0)

    def send(url, body, headers, timeout):
        if url.endswith("/boom"):
            raise RuntimeError("the HTTP client broke")
        return webhook_jobs._post(url, body, headers, timeout)

    assert webhook_jobs.deliver_due(now=T0, send=send) == {"delivered": 2, "failed": 1, "dead": 0, "rows": 3}
    assert sorted(p for _, _, p in receiver.requests) == ["/a", "/c"]
    boom = next(d for d in deliveries() if d.status == "pending")
    assert boom.last_error == "the delivery failed unexpectedly; the error is in the service's log"
    assert "HTTP client broke" not in boom.last_error


def test_a_job_killed_mid_batch_keeps_what_it_sent_and_does_not_send_it_again(receiver):
    for path in ("/a", "/b", "/c"):
        subscribe(receiver.url.replace("/hooks/loyalty", path), ["member.created"])
    factories.member(now=T0)
    sent = []

    def send_then_die(url, body, headers, timeout):
        if len(sent) == 1:
            raise KeyboardInterrupt  # the process is stopped between two deliveries
        sent.append(url)
        return webhook_jobs._post(url, body, headers, timeout)

    with pytest.raises(KeyboardInterrupt):
        webhook_jobs.deliver_due(now=T0, send=send_then_die)
    db.session.rollback()
    assert [d.status for d in deliveries()] == ["delivered", "pending", "pending"]

    assert deliver(T0) == {"delivered": 2, "failed": 0, "dead": 0, "rows": 2}
    assert sorted(p for _, _, p in receiver.requests) == ["/a", "/b", "/c"]  # /a once


def test_each_delivery_resolves_again_and_a_name_now_private_is_refused_before_connecting(monkeypatch):
    subscription = subscribe("https://crm.example/hooks", ["member.created"])  # public when subscribed
    factories.member(now=T0)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 443))])  # rebinding: one is private
    monkeypatch.setattr(socket, "socket", None)  # nothing may connect

    assert deliver(T0)["failed"] == 1
    [delivery] = webhooks.deliveries(subscription.id)[0]
    assert delivery.last_error == ("Not allowed: the destination resolves to a private address; "
                                   "webhooks are sent to public internet addresses only.")


def test_the_delivery_connects_to_the_address_it_checked_and_names_the_host(monkeypatch, receiver):
    port = receiver.server.server_address[1]
    subscribe(f"http://hooks.crm.example:{port}/in", ["member.created"])
    factories.member(now=T0)
    real, asked = socket.getaddrinfo, []

    def getaddrinfo(host, *args, **kwargs):
        asked.append(host)
        return real("127.0.0.1", *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    assert deliver(T0)["delivered"] == 1
    [(headers, _, path)] = receiver.requests
    assert (headers["Host"], path) == (f"hooks.crm.example:{port}", "/in")
    assert asked == ["hooks.crm.example"]  # resolved once: the address checked is the one connected to


def test_a_redirect_is_not_followed_and_is_a_failed_attempt(receiver):
    subscribe(receiver.url, ["member.created"])
    factories.member(now=T0)
    receiver.script = [302]

    assert deliver(T0)["failed"] == 1
    [delivery] = deliveries()
    assert (delivery.last_status_code, delivery.last_error) == (302, "answered 302; redirects are not followed")
    assert len(receiver.requests) == 1


class RawServer:
    """A TCP listener on 127.0.0.1 that answers each connection with `banner` (or never answers)."""

    def __init__(self, banner=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks"
        if banner is not None:
            threading.Thread(target=self._answer, args=(banner,), daemon=True).start()

    def _answer(self, banner):
        try:
            connection, _ = self.sock.accept()
        except OSError:
            return
        with connection:
            connection.sendall(banner)
            while connection.recv(65536):  # read what is sent until the client hangs up: no reset
                pass

    def close(self):
        self.sock.close()


def test_a_service_that_is_not_http_is_a_failure_that_does_not_show_its_banner(local_receivers):
    ssh = RawServer(b"SSH-2.0-OpenSSH_9.6 secret-host-banner\r\n")
    try:
        subscribe(ssh.url, ["member.created"])
        factories.member(now=T0)
        assert deliver(T0)["failed"] == 1
    finally:
        ssh.close()
    [delivery] = deliveries()
    assert delivery.last_error == "the answer was not valid HTTP"
    assert "SSH" not in json.dumps([a.error for a in delivery.attempt_rows])


def test_a_receiver_that_never_answers_times_out_in_our_words(app, local_receivers):
    silent = RawServer()  # accepts into its backlog, never answers
    app.config["LOYALTY_WEBHOOK_TIMEOUT_SECONDS"] = 1
    try:
        subscribe(silent.url, ["member.created"])
        factories.member(now=T0)
        assert deliver(T0)["failed"] == 1
    finally:
        app.config["LOYALTY_WEBHOOK_TIMEOUT_SECONDS"] = 10
        silent.close()
    [delivery] = deliveries()
    assert delivery.last_error == "timed out after 1 s"


def test_https_to_a_receiver_that_does_not_speak_tls_is_a_failed_handshake(receiver):
    subscribe(receiver.url.replace("http://", "https://"), ["member.created"])
    factories.member(now=T0)

    assert deliver(T0)["failed"] == 1
    [delivery] = deliveries()
    assert (delivery.last_status_code, delivery.last_error) == (None, "the TLS handshake failed")
