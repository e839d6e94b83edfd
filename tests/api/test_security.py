"""Security checks as tests (issue #8).

1. The role matrix: every operation served under /api/v1, with the roles API.md allows. A new
   endpoint without an entry here fails `test_the_matrix_lists_every_operation_the_app_serves`.
   Refused roles get 403 with API.md's error body naming the role, no key (or an unknown or
   revoked one) gets 401 with WWW-Authenticate, allowed roles get past the door, and a refused
   write changes no row of any table.
2. API keys are never stored or logged in plain text (nor listed by `loyalty api-keys list`).
3. A key revoked with `loyalty api-keys revoke` stops working with the very next request.
4. Members' personal data (name, phone, email, birthday) never reaches a log record.
5. A POS key acts for its own store only: purchases, refunds, points payments, vouchers.
6. Member tokens (issue 18): the matrix has a `member` column. A member token passes the door
   of the operations API.md lists for it, for its own member; the same requests with another
   member's token answer 404 not_found (nothing says the record exists) and change nothing; every
   other operation is 403 for it. More in tests/api/test_member_tokens.py.
"""
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

import jwt
import pytest
import sqlalchemy as sa

from loyalty import auth, clock
from loyalty.extensions import db
from loyalty.webhooks.models import Delivery

ROLES = ("app", "pos", "marketing", "member", "admin")  # the order allowed roles are tried in: admin last
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
PUBLIC = frozenset({"public"})


# --- the matrix -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    method: str
    rule: str  # as in app.url_map, without the /api/v1 prefix
    allowed: frozenset  # the roles allowed; admin "may do everything" (API.md) and is always in
    path: str  # a concrete path: str.format_map'ed with the world's ids
    body: object = None  # None, or a function of the world giving the JSON body
    source: str = "API.md"


def op(method, rule, roles, path=None, body=None, source="API.md", member=False):
    """`member`: a member token may do this for its own member (API.md, "Member tokens")."""
    allowed = PUBLIC if roles == "public" else frozenset(roles.split()) | {"admin"} | ({"member"} if member else set())
    return Op(method, rule, allowed, path or rule, body, source)


ANY = "app pos marketing"
SILENT = "code; API.md is silent"
M = "/members/<id:member_id>"
V = "/vouchers/<string(minlength=4, maxlength=40):code>"
CAMPAIGN = {"name": "Bring a friend", "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2090-01-01T00:00:00Z",
            "referrer_points": 100, "referee_points": 50, "min_first_purchase": "100.00",
            "qualify_within_days": 30, "link_template": "https://shop.example/join?ref={code}"}
SECRET = "a-webhook-secret-for-tests"
PROMOTION = {"name": "Double points", "status": "active", "starts_at": "2020-01-01T00:00:00Z",
             "effect": {"type": "multiplier", "value": "2"}}

MATRIX = [
    # Documentation: API.md names these pages but is silent on auth; the code serves them to anyone.
    op("GET", "/openapi.json", "public", source=SILENT),
    op("GET", "/docs", "public", source=SILENT),
    op("GET", "/docs/assets/<path:filename>", "public", "/docs/assets/swagger-ui.css", source=SILENT),
    # Members
    op("POST", "/members", "app pos",
       body=lambda w: {"name": "Door Test", "phone": "+8613700000009"}),
    op("GET", "/members", "pos marketing", "/members?phone={phone_q}"),  # all but app
    op("GET", M, ANY, "/members/{member}", member=True),
    op("PATCH", M, "app", "/members/{member}", body=lambda w: {"name": "Renamed One"}, member=True),
    op("POST", M + "/merge", "", "/members/{member}/merge", body=lambda w: {"from_member_id": w["spare"]}),
    op("GET", M + "/card.png", "app pos", "/members/{member}/card.png", member=True),
    op("GET", M + "/card.svg", "app pos", "/members/{member}/card.svg", member=True),
    # Member tokens (issued and revoked by the member app's backend); revoked for another member
    # than the one whose token the matrix uses.
    op("POST", M + "/tokens", "app", "/members/{member}/tokens", body=lambda w: {"ttl_seconds": 600}),
    op("DELETE", M + "/tokens", "app", "/members/{spare}/tokens"),
    op("GET", M + "/export", "", "/members/{member}/export"),
    op("POST", M + "/erase", "", "/members/{erasable}/erase", body=lambda w: {"reason": "the member asked"}),
    op("POST", "/bulk-awards", "marketing", body=lambda w: {"award_no": "A-door", "segment": "new", "points": 5,
                                                           "reason": "door test"}, source="API.md"),
    op("GET", "/bulk-awards/<id:award_id>", "marketing", "/bulk-awards/{bulk_award}"),
    # Points
    op("POST", "/purchases", "pos", body=lambda w: {"member_id": w["member"], "store_id": "S1",
                                                    "receipt_no": "R-door", "amount": "10.00"}),
    op("POST", "/purchases/<id:purchase_id>/refunds", "pos", "/purchases/{purchase}/refunds",
       body=lambda w: {"refund_no": "F-door", "amount": "10.00"}),
    op("POST", M + "/activities", "app", "/members/{member}/activities",
       body=lambda w: {"type": "sign_in", "event_id": "E-door"}),
    op("POST", M + "/adjustments", "", "/members/{member}/adjustments",
       body=lambda w: {"points": 10, "reason": "door test"}),
    op("GET", M + "/points", ANY, "/members/{member}/points", member=True),
    op("GET", M + "/points/history", ANY, "/members/{member}/points/history", member=True),
    op("POST", "/points-payments", "pos", body=lambda w: {"member_id": w["member"], "store_id": "S1",
                                                          "payment_no": "P-door", "points": 10}),
    op("POST", "/points-payments/<id:payment_id>/reversal", "pos", "/points-payments/{payment}/reversal"),
    # POS: holds, offline upload, the store's day (issue 19)
    op("POST", "/points-holds", "pos", body=lambda w: {"member_id": w["holder"], "store_id": "S1",
                                                       "hold_no": "H-door", "points": 10}),
    op("GET", "/points-holds/<id:hold_id>", "pos", "/points-holds/{hold}"),
    op("POST", "/points-holds/<id:hold_id>/capture", "pos", "/points-holds/{hold}/capture",
       body=lambda w: {"payment_no": "P-hold-door"}),
    op("POST", "/points-holds/<id:hold_id>/release", "pos", "/points-holds/{hold_to_release}/release"),
    op("POST", "/purchases/batch", "pos", body=lambda w: {"store_id": "S1", "purchases": [
        {"member_id": w["member"], "receipt_no": "R-batch-door", "amount": "10.00", "occurred_at": w["recently"]}]}),
    op("GET", "/reports/stores/<string(maxlength=40):store_id>/days/<string(maxlength=40):date>", "pos marketing",
       "/reports/stores/S1/days/{today}"),
    # Tiers and earning rules
    op("GET", "/earning-rules", ANY),
    op("PUT", "/earning-rules", "marketing", body=lambda w: w["rules"]),
    op("GET", "/tiers", ANY),
    op("PUT", "/tiers/<string(maxlength=20):code>", "marketing", "/tiers/silver", body=lambda w: w["silver"]),
    op("GET", M + "/tier", ANY, "/members/{member}/tier", member=True),
    op("PUT", M + "/tier", "", "/members/{member}/tier", body=lambda w: {"tier": "silver", "reason": "door test"},
       source=SILENT),
    # Referrals
    op("GET", "/referral-campaigns", "marketing"),
    op("POST", "/referral-campaigns", "marketing",
       body=lambda w: {**CAMPAIGN, "name": "Door test", "starts_at": "2095-01-01T00:00:00Z", "ends_at": None}),
    op("GET", "/referral-campaigns/<id:campaign_id>", "marketing", "/referral-campaigns/{campaign}"),
    op("PATCH", "/referral-campaigns/<id:campaign_id>", "marketing", "/referral-campaigns/{campaign}",
       body=lambda w: {"name": "Renamed campaign"}),
    op("GET", "/referral-campaigns/<id:campaign_id>/stats", "marketing", "/referral-campaigns/{campaign}/stats"),
    op("GET", M + "/referral", "app", "/members/{member}/referral", member=True),
    op("PUT", M + "/referral", "app", "/members/{fresh}/referral",
       body=lambda w: {"referral_code": w["referral_code"]}, source=SILENT),
    op("GET", M + "/referral/qr.png", "app", "/members/{member}/referral/qr.png", member=True),
    op("GET", M + "/referral/qr.svg", "app", "/members/{member}/referral/qr.svg", member=True),
    # Promotions
    op("GET", "/promotions", "marketing"),
    op("POST", "/promotions", "marketing", body=lambda w: {**PROMOTION, "name": "Door test"}),
    op("GET", "/promotions/<id:promotion_id>", "marketing", "/promotions/{promotion}"),
    op("PATCH", "/promotions/<id:promotion_id>", "marketing", "/promotions/{promotion}",
       body=lambda w: {"name": "Renamed promotion"}),
    op("POST", "/promotions/<id:promotion_id>/stop", "marketing", "/promotions/{doomed_promotion}/stop"),
    op("GET", "/promotions/<id:promotion_id>/stats", "marketing", "/promotions/{promotion}/stats"),
    op("POST", "/promotions/simulate", ANY, body=lambda w: {"member_id": w["member"], "store_id": "S1",
                                                            "amount": "100.00"}, member=True),
    # Rewards and redemption
    op("GET", "/rewards", ANY, "/rewards?member_id={member}", member=True),
    op("POST", "/rewards", "marketing",
       body=lambda w: {"name": "Tea", "kind": "coupon", "points_cost": 5, "voucher_valid_days": 30}),
    op("GET", "/rewards/<id:reward_id>", ANY, "/rewards/{reward}", source=SILENT),
    op("PATCH", "/rewards/<id:reward_id>", "marketing", "/rewards/{reward}", body=lambda w: {"stock": 99}),
    op("POST", M + "/redemptions", "app", "/members/{member}/redemptions",
       body=lambda w: {"reward_id": w["reward"], "quantity": 1}, member=True),
    op("GET", M + "/redemptions", "app", "/members/{member}/redemptions", member=True),
    op("POST", "/redemptions/<id:redemption_id>/cancel", "app", "/redemptions/{doomed_redemption}/cancel",
       member=True),
    op("GET", V, "pos app", "/vouchers/{voucher}", member=True),
    op("POST", V + "/use", "pos", "/vouchers/{voucher_to_use}/use", body=lambda w: {"store_id": "S1"}),
    op("GET", V + "/qr.png", "app", "/vouchers/{voucher}/qr.png", member=True),
    op("GET", V + "/qr.svg", "app", "/vouchers/{voucher}/qr.svg", source=SILENT, member=True),
    # Marketing reports; tags, liability and the audit log are not in API.md's tables (the audit log
    # is in its role table: admin only).
    op("GET", "/reports/overview", "marketing"),
    op("GET", "/reports/liability", "marketing", source=SILENT),
    op("GET", "/segments/<string(maxlength=80):name>/members", "marketing", "/segments/new/members"),
    op("GET", M + "/tags", "marketing", "/members/{member}/tags", source=SILENT),
    op("POST", M + "/tags", "marketing", "/members/{member}/tags", body=lambda w: {"tags": ["vip"]},
       source=SILENT),
    op("DELETE", M + "/tags", "marketing", "/members/{member}/tags", body=lambda w: {"tags": ["vip"]},
       source=SILENT),
    op("GET", "/audit-log", "", source="API.md's role table; no endpoint row"),
    # Jobs and webhooks (issue #7): admin only.
    op("GET", "/jobs", "", source=SILENT),
    op("GET", "/webhooks", "", source=SILENT),
    op("POST", "/webhooks", "", source=SILENT,
       body=lambda w: {"url": "https://crm.example/door", "events": ["tier.changed"], "secret": SECRET}),
    op("GET", "/webhooks/<id:subscription_id>", "", "/webhooks/{hook}", source=SILENT),
    op("PATCH", "/webhooks/<id:subscription_id>", "", "/webhooks/{hook}", source=SILENT,
       body=lambda w: {"description": "door test"}),
    op("DELETE", "/webhooks/<id:subscription_id>", "", "/webhooks/{doomed_hook}", source=SILENT),
    op("GET", "/webhooks/<id:subscription_id>/deliveries", "", "/webhooks/{hook}/deliveries", source=SILENT),
    op("POST", "/webhook-deliveries/<id:delivery_id>/replay", "", "/webhook-deliveries/{delivery}/replay",
       source=SILENT),
    op("POST", "/webhooks/<id:subscription_id>/replay", "", "/webhooks/{hook}/replay", source=SILENT),
]
GUARDED = [o for o in MATRIX if o.allowed is not PUBLIC]
MEMBER_OPS = [o for o in GUARDED if "member" in o.allowed]

# Where the code and API.md disagree (none now): (method, rule, role) -> where.
DIFFERENCES = {}


# --- helpers ----------------------------------------------------------------------------------

def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def send(client, o, world, headers=None, idempotency_key=None):
    headers = dict(headers or {})
    if idempotency_key and o.method == "POST":
        headers["Idempotency-Key"] = idempotency_key
    kwargs = {"json": o.body(world)} if o.body else {}
    return client.open("/api/v1" + o.path.format_map(world), method=o.method, headers=headers, **kwargs)


def fingerprint(app):
    """Every row of every table (so also their counts), to compare before and after a request."""
    with app.app_context():
        with db.engine.connect() as connection:
            rows = {table.name: sorted(repr(tuple(row)) for row in connection.execute(sa.select(table)))
                    for table in db.metadata.sorted_tables}
        db.session.remove()
    return rows


def changed_tables(before, after):
    return {name: (len(before[name]), len(after[name])) for name in before if before[name] != after[name]}


def is_error_body(response, status, code):
    body = response.get_json(silent=True)
    return (response.mimetype == "application/json" and isinstance(body, dict)
            and set(body) == {"code", "status", "error", "message"}
            and (body["code"], body["error"]) == (status, code)
            and body["status"] == {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}[status]
            and isinstance(body["message"], str) and len(body["message"]) > 10)


def ok(response, expected=201):
    assert response.status_code == expected, response.get_json(silent=True)
    return response.get_json()


@pytest.fixture
def world(app, api):
    """One of everything the matrix's paths and bodies point at, made through the API."""
    w = {}
    one = ok(api.post("app", "/members", json={"name": "Matrix One", "phone": "+8613800000001",
                                               "email": "one@example.com"}))
    w["member"], w["referral_code"], w["phone_q"] = one["id"], one["referral_code"], quote(one["phone"])
    ok(api.post("admin", f"/members/{one['id']}/adjustments", json={"points": 5000, "reason": "matrix float"}))
    w["purchase"] = ok(api.post("pos", "/purchases", json={"member_id": one["id"], "receipt_no": "R0",
                                                           "amount": "100.00"}))["purchase_id"]
    w["payment"] = ok(api.post("pos", "/points-payments", json={"member_id": one["id"], "payment_no": "P0",
                                                                "points": 100}))["payment_id"]
    # Holds on a member of their own: a member with points on hold is not merged.
    holder = ok(api.post("app", "/members", json={"name": "Matrix Holder", "phone": "+8613800000004"}))["id"]
    ok(api.post("admin", f"/members/{holder}/adjustments", json={"points": 500, "reason": "matrix float"}))
    w["holder"] = holder
    w["hold"], w["hold_to_release"] = (
        ok(api.post("pos", "/points-holds", json={"member_id": holder, "hold_no": f"H{n}", "points": 50}))["hold_id"]
        for n in range(2))
    w["recently"] = (clock.now() - timedelta(hours=1)).isoformat()
    w["today"] = clock.local_date(clock.now(), "Asia/Shanghai").isoformat()
    w["reward"] = ok(api.post("marketing", "/rewards", json={"name": "Coffee", "kind": "coupon", "points_cost": 10,
                                                             "voucher_valid_days": 30}))["id"]
    vouchers = ok(api.post("app", f"/members/{one['id']}/redemptions",
                           json={"reward_id": w["reward"], "quantity": 2}))["vouchers"]
    w["voucher"], w["voucher_to_use"] = vouchers[0]["code"], vouchers[1]["code"]
    w["doomed_redemption"] = ok(api.post("app", f"/members/{one['id']}/redemptions",
                                         json={"reward_id": w["reward"]}))["redemption_id"]
    w["campaign"] = ok(api.post("marketing", "/referral-campaigns", json=CAMPAIGN))["id"]
    w["promotion"] = ok(api.post("marketing", "/promotions", json=PROMOTION))["id"]
    w["doomed_promotion"] = ok(api.post("marketing", "/promotions", json={**PROMOTION, "status": "draft"}))["id"]
    w["hook"] = ok(api.post("admin", "/webhooks", json={"url": "https://crm.example/hooks",
                                                        "events": ["member.created"], "secret": SECRET}))["id"]
    w["doomed_hook"] = ok(api.post("admin", "/webhooks", json={"url": "https://crm.example/old",
                                                               "events": ["tier.changed"], "secret": SECRET}))["id"]
    # Registered after the subscription: one delivery, marked dead so that it may be replayed.
    w["spare"] = ok(api.post("app", "/members", json={"name": "Matrix Spare", "phone": "+8613800000002"}))["id"]
    w["fresh"] = ok(api.post("app", "/members", json={"name": "Matrix Fresh", "phone": "+8613800000003"}))["id"]
    w["bulk_award"] = ok(api.post("marketing", "/bulk-awards", json={
        "award_no": "A-world", "segment": "new", "points": 5, "reason": "matrix"}), 202)["id"]
    w["erasable"] = ok(api.post("app", "/members", json={"name": "Matrix Gone", "phone": "+8613800000005"}))["id"]
    w["rules"] = ok(api.get("marketing", "/earning-rules"), 200)
    silver = next(t for t in ok(api.get("marketing", "/tiers"), 200) if t["code"] == "silver")
    w["silver"] = {key: silver[key] for key in ("name", "qualification", "benefits")}
    with app.app_context():
        w["delivery"] = db.session.scalar(sa.select(sa.func.min(Delivery.id)))
        db.session.execute(sa.update(Delivery).values(status="dead"))
        db.session.commit()
        db.session.remove()
    assert w["delivery"] is not None
    return w


@pytest.fixture
def all_headers(api, headers, world):
    """Every role's headers, `member` a member token of the world's member, `other_member` one of
    another member (the world's spare)."""
    own = ok(api.post("app", f"/members/{world['member']}/tokens", json={}))["token"]
    other = ok(api.post("app", f"/members/{world['spare']}/tokens", json={}))["token"]
    return {**headers, "member": bearer(own), "other_member": bearer(other)}


def forged_member_token(member_id):
    """A well-formed member token signed with a secret that is not the service's."""
    claims = {"typ": "member", "sub": str(member_id), "ep": 0, "iat": 1_700_000_000, "exp": 4_000_000_000}
    return jwt.encode(claims, "not-the-service-secret-" + "x" * 32, algorithm="HS256")


@pytest.fixture
def revoked_admin_key(app):
    with app.app_context():
        key, plaintext = auth.create_key("admin", "revoked admin")
        auth.revoke_key(key.id, actor="test")
        db.session.remove()
    return plaintext


# --- 1. the role matrix -----------------------------------------------------------------------

class AnyId(dict):
    def __missing__(self, name):
        return "1234"


def test_the_matrix_lists_every_operation_the_app_serves(app):
    served = {(method, rule.rule[len("/api/v1"):])
              for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    listed = [(o.method, o.rule) for o in MATRIX]

    assert len(listed) == len(set(listed)), "an operation is listed twice"
    assert sorted(served - set(listed)) == [], "served under /api/v1 but not in MATRIX: add them with their roles"
    assert sorted(set(listed) - served) == [], "in MATRIX but not served"
    adapter = app.url_map.bind("localhost")
    for o in MATRIX:  # each concrete path reaches the rule it stands for
        rule, _ = adapter.match("/api/v1" + o.path.format_map(AnyId()).partition("?")[0], o.method, return_rule=True)
        assert (o.method, rule.rule) == (o.method, "/api/v1" + o.rule)
    assert all("admin" in o.allowed for o in GUARDED)
    # API.md's list for member tokens: the member's profile (read, and name and email), points,
    # history, tier, redemptions, referral and its QR, card, the catalog for it, redeeming,
    # cancelling its redemptions, its vouchers and their QR, and simulating a basket for itself.
    assert len(MEMBER_OPS) == 18


def test_every_operation_refuses_a_missing_unknown_or_revoked_key(app, client, world, revoked_admin_key):
    credentials = {"no key": {}, "unknown key": bearer("lk_" + "x" * 43), "revoked admin key": bearer(revoked_admin_key),
                   "not a bearer": {"Authorization": "Basic YWRtaW46YWRtaW4="},
                   "forged member token": bearer(forged_member_token(world["member"]))}
    failures = []
    before = fingerprint(app)
    for o in GUARDED:
        for label, headers in credentials.items():
            response = send(client, o, world, headers, idempotency_key=f"k-{label}")
            if response.status_code != 401 or not is_error_body(response, 401, "unauthorized"):
                failures.append((o.method, o.path, label, response.status_code, response.get_json(silent=True)))
            elif not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
                failures.append((o.method, o.path, label, "no WWW-Authenticate: Bearer"))
        if o.method in WRITES:
            after = fingerprint(app)
            if after != before:
                failures.append((o.method, o.path, "changed", changed_tables(before, after)))
                before = after
    for o in MATRIX:
        if o.allowed is PUBLIC:
            response = send(client, o, world)
            response.close()  # a static file's answer holds the file open until closed
            if response.status_code != 200:
                failures.append((o.method, o.path, "public", response.status_code))

    assert failures == []


def test_every_operation_refuses_the_roles_api_md_does_not_name_and_changes_nothing(app, client, all_headers, world):
    headers = all_headers
    failures, refusals = [], 0
    before = fingerprint(app)
    for o in GUARDED:
        for role in ROLES:
            if role in o.allowed or (o.method, o.rule, role) in DIFFERENCES:
                continue
            refusals += 1
            response = send(client, o, world, headers[role], idempotency_key=f"k-{role}")
            if response.status_code != 403 or not is_error_body(response, 403, "forbidden"):
                failures.append((o.method, o.path, role, response.status_code, response.get_json(silent=True)))
            elif f" {'member token' if role == 'member' else role + ' key'} may not" not in response.get_json()["message"]:
                failures.append((o.method, o.path, role, "the role is not named", response.get_json()["message"]))
            if o.method in WRITES:
                after = fingerprint(app)
                if after != before:
                    failures.append((o.method, o.path, role, "changed", changed_tables(before, after)))
                    before = after

    assert failures == []
    assert refusals > 100


def test_every_role_api_md_names_gets_past_the_door(client, all_headers, world):
    """Allowed roles are tried in order, admin last, against one evolving world: the first one
    must succeed (2xx, so the request really was valid), later ones may meet a state conflict or a
    replay, but never 401, 403 or a 5xx."""
    headers = all_headers
    failures = []
    for o in GUARDED:
        for n, role in enumerate(r for r in ROLES if r in o.allowed):
            response = send(client, o, world, headers[role])
            status = response.status_code
            if status in (401, 403) or status >= 500 or (n == 0 and not 200 <= status < 300):
                failures.append((o.method, o.path, role, status, response.get_json(silent=True)))

    assert failures == []


def test_a_member_token_reaches_its_own_member_only(app, client, all_headers, world):
    """The member operations, sent with another member's token, answer 404 as if the member (its
    redemption, its voucher) did not exist, and change nothing."""
    failures = []
    before = fingerprint(app)
    for o in MEMBER_OPS:
        response = send(client, o, world, all_headers["other_member"], idempotency_key="k-other")
        if response.status_code != 404 or not is_error_body(response, 404, "not_found"):
            failures.append((o.method, o.path, response.status_code, response.get_json(silent=True)))
    after = fingerprint(app)

    assert failures == []
    assert changed_tables(before, after) == {}


# --- 2 and 3. API keys: never in plain text; revoked at once ----------------------------------

def capture_logging(caplog, level, sql_level=None):
    """Capture the root logger at `level`, as LOYALTY_LOG_LEVEL sets it (logging.basicConfig).
    SQLAlchemy pins its own "sqlalchemy" logger at WARNING on import (sqlalchemy/log.py), so the
    root level never turns its SQL echo on; `sql_level` turns it on, as an operator debugging
    would (INFO: statements and, hidden, their parameters; DEBUG: also every result row)."""
    caplog.set_level(level)
    if sql_level is not None:
        caplog.set_level(sql_level, logger="sqlalchemy.engine")
    caplog.handler.setLevel(logging.NOTSET)  # the loggers' levels decide what is captured


def log_texts(caplog):
    formatter = logging.Formatter()
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + formatter.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + record.stack_info
        yield record, text


def stored_values(app):
    """Every non-null value of every column of every table, as text."""
    with app.app_context():
        with db.engine.connect() as connection:
            values = [(table.name, column, str(value))
                      for table in db.metadata.sorted_tables
                      for row in connection.execute(sa.select(table))
                      for column, value in row._mapping.items() if value is not None]
        db.session.remove()
    return values


def secret_parts(plaintext):
    """The whole key, and the part of it no listing shows (the first 8 characters are its hint)."""
    return plaintext, plaintext[8:]


def cli_create(runner, *args):
    result = runner.invoke(args=["api-keys", "create", *args])
    assert result.exit_code == 0, result.output
    key_id = int(re.search(r"Created API key (\d+)", result.output).group(1))
    return key_id, result.output.strip().splitlines()[-1], result.output


def test_api_keys_are_never_stored_logged_or_listed_in_plain_text(app, client, runner, keys, caplog):
    # Everything at DEBUG, SQLAlchemy's echo of statements and result rows included: api_keys rows
    # hold a hash and a hint, and a key is looked up by its hash, so no plaintext can show.
    capture_logging(caplog, logging.DEBUG, sql_level=logging.DEBUG)
    pos_id, pos_key, created_output = cli_create(runner, "--role", "pos", "--store", "S3", "--name", "Till 3")
    _, marketing_key, _ = cli_create(runner, "--role", "marketing")
    with app.app_context():
        direct, direct_key = auth.create_key("app", name="direct")
        direct_id = direct.id
        db.session.remove()
    wrong_key = pos_key[:-4] + ("AAAA" if not pos_key.endswith("AAAA") else "BBBB")  # a near miss

    assert created_output.count(pos_key) == 1  # shown once, at creation
    assert client.get("/api/v1/members?phone=13800000000", headers=bearer(pos_key)).status_code == 200
    assert client.get("/api/v1/tiers", headers=bearer(direct_key)).status_code == 200
    assert client.put("/api/v1/earning-rules", headers=bearer(marketing_key), json={}).status_code == 422
    assert client.get("/api/v1/tiers", headers=bearer(wrong_key)).status_code == 401
    revoked = runner.invoke(args=["api-keys", "revoke", str(pos_id)])
    assert revoked.exit_code == 0, revoked.output
    with app.app_context():
        auth.revoke_key(direct_id, actor="test")
        db.session.remove()
    assert client.get("/api/v1/members?phone=13800000000", headers=bearer(pos_key)).status_code == 401
    assert client.get("/api/v1/tiers", headers=bearer(direct_key)).status_code == 401
    listing = runner.invoke(args=["api-keys", "list"])
    assert listing.exit_code == 0, listing.output

    plaintexts = [pos_key, marketing_key, direct_key, wrong_key, *keys.values()]
    # Listed by their hint only.
    assert pos_key[:8] in listing.output and "revoked" in listing.output
    assert [p for p in plaintexts for part in secret_parts(p) if part in listing.output] == []
    # Stored as their SHA-256 and an 8-character hint.
    stored = stored_values(app)
    assert [(table, column) for table, column, value in stored
            for p in plaintexts for part in secret_parts(p) if part in value] == []
    with app.app_context():
        rows = {row.key_hash: row.key_hint for row in db.session.scalars(sa.select(auth.ApiKey))}
        db.session.remove()
    assert {auth.hash_key(p): p[:8] for p in plaintexts if p != wrong_key}.items() <= rows.items()
    # Never logged, whatever happened: created, used, mistyped, revoked, listed.
    assert caplog.records, "nothing was captured: the check below would prove nothing"
    assert [(record.name, record.levelname) for record, text in log_texts(caplog)
            for p in plaintexts for part in secret_parts(p) if part in text] == []


def test_a_key_revoked_on_the_command_line_fails_the_very_next_request(client, runner, headers):
    key_id, key, _ = cli_create(runner, "--role", "pos", "--store", "S4")
    assert client.post("/api/v1/members", headers=bearer(key), json={"name": "Before"}).status_code == 201

    revoked = runner.invoke(args=["api-keys", "revoke", str(key_id)])
    response = client.post("/api/v1/members", headers=bearer(key), json={"name": "After"})

    assert revoked.exit_code == 0, revoked.output
    assert f"Revoked API key {key_id}" in revoked.output
    assert response.status_code == 401
    assert is_error_body(response, 401, "unauthorized")
    assert "revoked" in response.get_json()["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/v1/members?phone=13800000000", headers=bearer(key)).status_code == 401
    assert client.get("/api/v1/members?phone=13800000000", headers=headers["pos"]).status_code == 200  # others unaffected


# --- 4. members' personal data stays out of the logs ------------------------------------------

PEOPLE = [
    {"name": "Ouyang Privatissimus", "phone": "+8613912345671", "email": "ouyang.private@example.com",
     "birthday": "1987-06-13"},
    {"name": "Shangguan Secretia", "phone": "+8613912345672", "email": "shangguan.secret@example.org",
     "birthday": "1979-11-28"},
]
NEW_EMAIL = "ouyang.changed@example.net"


def personal_strings():
    strings = {NEW_EMAIL, NEW_EMAIL.split("@")[0]}
    for person in PEOPLE:
        year, month, day = (int(part) for part in person["birthday"].split("-"))
        strings |= {person["name"], *person["name"].split(), person["phone"], person["phone"][3:],
                    person["email"], person["email"].split("@")[0], person["birthday"],
                    f"{year}, {month}, {day}"}  # a date's repr: datetime.date(1987, 6, 13)
    return strings


def members_are_handled_every_way(api, monkeypatch):
    """Registration, lookups, purchases, a profile change, a duplicate (409 by the service's check
    and, with that check gone, by the database's unique constraint) and an unexpected error (500)."""
    ids = [ok(api.post("app", "/members", json={**person, "channel": "wechat",
                                                 "external_ids": [{"channel": "wechat", "id": f"wx-{n}"}]}))["id"]
           for n, person in enumerate(PEOPLE)]
    first, second = PEOPLE
    assert ok(api.get("pos", "/members?phone=" + quote(first["phone"])), 200)["items"][0]["id"] == ids[0]
    assert ok(api.get("marketing", "/members?email=" + quote(second["email"])), 200)["items"][0]["id"] == ids[1]
    ok(api.post("pos", "/purchases", json={"member_id": ids[0], "receipt_no": "R1", "amount": "88.00"}))
    ok(api.post("pos", "/purchases", json={"member_id": ids[1], "receipt_no": "R2", "amount": "1288.00"}))
    ok(api.patch("app", f"/members/{ids[0]}", json={"email": NEW_EMAIL}), 200)
    for role in ("app", "pos", "marketing", "admin"):
        ok(api.get(role, f"/members/{ids[1]}"), 200)

    duplicate = api.post("app", "/members", json={"name": first["name"], "phone": first["phone"]})
    assert (duplicate.status_code, duplicate.json["error"], duplicate.json["member_id"]) == (409, "conflict", ids[0])
    with monkeypatch.context() as patch:
        patch.setattr("loyalty.members.service._check_identities_free", lambda *args, **kwargs: None)
        raced = api.post("app", "/members", json={"name": second["name"], "phone": first["phone"]})
        assert (raced.status_code, raced.json["error"]) == (409, "conflict"), raced.json
        taken = api.patch("app", f"/members/{ids[0]}", json={"email": second["email"]})
        assert (taken.status_code, taken.json["error"]) == (409, "conflict"), taken.json

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure")

    with monkeypatch.context() as patch:
        patch.setattr("loyalty.members.service.member_number", fail)  # mid-registration, after the INSERT
        broken = api.post("app", "/members", json={"name": "Never Stored", "phone": "+8613900000000"})
        assert (broken.status_code, broken.json["error"]) == (500, "internal_error")
    with monkeypatch.context() as patch:
        patch.setattr("loyalty.points.service.credit_purchase", fail)
        broken = api.post("pos", "/purchases", json={"member_id": ids[1], "receipt_no": "R3", "amount": "5.00"})
        assert (broken.status_code, broken.json["error"]) == (500, "internal_error")
    assert api.get("admin", "/members?phone=%2B8613900000000").json["items"] == []


def leaks(caplog):
    strings = personal_strings()
    return [(record.name, record.levelname, text[:120]) for record, text in log_texts(caplog)
            if any(s in text for s in strings)]


def test_members_personal_data_is_not_logged(api, caplog, monkeypatch):
    """At DEBUG, no log record carries a name, phone, email or birthday: not the 409 of a unique
    constraint (its name only, never the database's message, which repeats the values), not the
    500's message or traceback."""
    capture_logging(caplog, logging.DEBUG)

    members_are_handled_every_way(api, monkeypatch)

    messages = [record.getMessage() for record in caplog.records]
    assert sum(1 for m in messages if m.startswith("integrity error turned into 409")) == 2
    assert sum(1 for r in caplog.records if r.getMessage() == "unhandled error" and r.exc_info) == 2
    assert leaks(caplog) == []


def test_members_personal_data_is_not_in_sql_statement_logs(api, caplog, monkeypatch):
    """With SQLAlchemy's statement echo on (sqlalchemy.engine at INFO, or SQLALCHEMY_ECHO), the
    statements' parameters are hidden (hide_parameters, loyalty/config.py). Its DEBUG level also
    echoes result rows, personal data included: that is the operator's explicit choice, not tested."""
    capture_logging(caplog, logging.DEBUG, sql_level=logging.INFO)

    members_are_handled_every_way(api, monkeypatch)

    messages = [record.getMessage() for record in caplog.records]
    assert any("INSERT INTO members" in m for m in messages)
    assert any("UPDATE members" in m for m in messages)
    assert any("SQL parameters hidden" in m for m in messages)
    assert leaks(caplog) == []


# --- 5. a POS key acts for its own store only -------------------------------------------------

def test_a_pos_key_cannot_act_for_another_store(app, api):
    member = ok(api.post("app", "/members", json={"name": "Store Test", "phone": "+8613800000011"}))["id"]
    ok(api.post("admin", f"/members/{member}/adjustments", json={"points": 1000, "reason": "store test"}))
    reward = ok(api.post("marketing", "/rewards", json={"name": "Cake", "kind": "coupon", "points_cost": 10,
                                                        "voucher_valid_days": 30}))["id"]
    codes = [v["code"] for v in ok(api.post("app", f"/members/{member}/redemptions",
                                            json={"reward_id": reward, "quantity": 4}))["vouchers"]]
    purchase = ok(api.post("pos_other", "/purchases", json={"member_id": member, "receipt_no": "R1",
                                                            "amount": "100.00"}))
    payment = ok(api.post("pos_other", "/points-payments", json={"member_id": member, "payment_no": "P1",
                                                                 "points": 50}))
    assert (purchase["store_id"], payment["store_id"]) == ("S2", "S2")

    # Store S2's key may not name store S1; store S1's key may not touch store S2's records.
    before = fingerprint(app)
    attempts = [
        api.post("pos_other", "/purchases", json={"member_id": member, "store_id": "S1", "receipt_no": "R2",
                                                  "amount": "10.00"}, extra_headers={"Idempotency-Key": "x1"}),
        api.post("pos_other", "/points-payments", json={"member_id": member, "store_id": "S1", "payment_no": "P2",
                                                        "points": 10}),
        api.post("pos_other", f"/vouchers/{codes[0]}/use", json={"store_id": "S1"},
                 extra_headers={"Idempotency-Key": "x2"}),
        api.post("pos", f"/purchases/{purchase['purchase_id']}/refunds", json={"refund_no": "F1", "amount": "10.00"},
                 extra_headers={"Idempotency-Key": "x3"}),
        api.post("pos", f"/points-payments/{payment['payment_id']}/reversal"),
    ]
    assert [(r.status_code, r.json["error"]) for r in attempts] == [(403, "forbidden")] * len(attempts)
    assert all("'S2'" in r.json["message"] and "'S1'" in r.json["message"] for r in attempts[:3])
    assert all("another store" in r.json["message"] for r in attempts[3:])
    assert changed_tables(before, fingerprint(app)) == {}
    assert api.get("pos", f"/vouchers/{codes[0]}").json["status"] == "issued"

    # A voucher is used at the key's own store: named or not, the record says S2.
    used = [ok(api.post("pos_other", f"/vouchers/{codes[0]}/use", json={}), 200),
            ok(api.post("pos_other", f"/vouchers/{codes[1]}/use", json={"store_id": "S2"}), 200)]
    assert [(v["status"], v["used_store_id"]) for v in used] == [("used", "S2")] * 2
    assert api.get("app", f"/vouchers/{codes[0]}").json["used_store_id"] == "S2"
    # An admin acts for the store it names, and must name one.
    missing = api.post("admin", f"/vouchers/{codes[2]}/use", json={})
    assert (missing.status_code, list(missing.json["errors"])) == (422, ["store_id"])
    assert ok(api.post("admin", f"/vouchers/{codes[2]}/use", json={"store_id": "S9"}), 200)["used_store_id"] == "S9"

    # An Idempotency-Key belongs to the key that sent it: the same key and body from another store's
    # key is a new request of that store, never the other store's stored answer.
    body = {"member_id": member, "receipt_no": "R7", "amount": "20.00"}
    theirs = api.post("pos_other", "/purchases", json=body, extra_headers={"Idempotency-Key": "shared"})
    ours = api.post("pos", "/purchases", json=body, extra_headers={"Idempotency-Key": "shared"})
    assert (theirs.status_code, ours.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in ours.headers
    assert (theirs.json["store_id"], ours.json["store_id"]) == ("S2", "S1")
    assert theirs.json["purchase_id"] != ours.json["purchase_id"]
    # ...and store S2's own records stay its own to change.
    ok(api.post("pos_other", f"/purchases/{purchase['purchase_id']}/refunds", json={"refund_no": "F1",
                                                                                      "amount": "10.00"}))
    ok(api.post("pos_other", f"/points-payments/{payment['payment_id']}/reversal"))
