"""The OpenAPI document describes every path of the contract; the docs page and health check answer."""
import re
import pytest
import sqlalchemy as sa

from loyalty.extensions import db

# Every path of API.md built so far (members, points, earning rules, tiers, rewards, referrals), with its methods.
CONTRACT = {
    "/api/v1/members": {"get", "post"},
    "/api/v1/members/{member_id}": {"get", "patch"},
    "/api/v1/members/{member_id}/card.png": {"get"},
    "/api/v1/members/{member_id}/card.svg": {"get"},
    "/api/v1/purchases": {"post"},
    "/api/v1/purchases/{purchase_id}/refunds": {"post"},
    "/api/v1/members/{member_id}/activities": {"post"},
    "/api/v1/members/{member_id}/adjustments": {"post"},
    "/api/v1/members/{member_id}/points": {"get"},
    "/api/v1/members/{member_id}/points/history": {"get"},
    "/api/v1/points-payments": {"post"},
    "/api/v1/points-payments/{payment_id}/reversal": {"post"},
    "/api/v1/points-holds": {"post"},
    "/api/v1/points-holds/{hold_id}": {"get"},
    "/api/v1/points-holds/{hold_id}/capture": {"post"},
    "/api/v1/points-holds/{hold_id}/release": {"post"},
    "/api/v1/reports/stores/{store_id}/days/{date}": {"get"},
    "/api/v1/earning-rules": {"get", "put"},
    "/api/v1/tiers": {"get"},
    "/api/v1/tiers/{code}": {"put"},
    "/api/v1/members/{member_id}/tier": {"get"},
    "/api/v1/rewards": {"get", "post"},
    "/api/v1/rewards/{reward_id}": {"patch"},
    "/api/v1/members/{member_id}/redemptions": {"get", "post"},
    "/api/v1/redemptions/{redemption_id}/cancel": {"post"},
    "/api/v1/vouchers/{code}": {"get"},
    "/api/v1/vouchers/{code}/qr.png": {"get"},
    "/api/v1/vouchers/{code}/use": {"post"},
    "/api/v1/referral-campaigns": {"get", "post"},
    "/api/v1/referral-campaigns/{campaign_id}": {"get", "patch"},
    "/api/v1/referral-campaigns/{campaign_id}/stats": {"get"},
    "/api/v1/members/{member_id}/referral": {"get"},
    "/api/v1/members/{member_id}/referral/qr.png": {"get"},
    "/api/v1/members/{member_id}/referral/qr.svg": {"get"},
    "/api/v1/jobs": {"get"},
    "/api/v1/segments/{name}/members": {"get"},
    "/api/v1/members/{member_id}/tags": {"get", "post", "delete"},
    "/api/v1/reports/overview": {"get"},
    "/api/v1/reports/liability": {"get"},
    "/api/v1/audit-log": {"get"},
    "/api/v1/members/{member_id}/merge": {"post"},
    "/api/v1/members/{member_id}/tokens": {"post", "delete"},
    "/api/v1/promotions": {"get", "post"},
    "/api/v1/promotions/{promotion_id}": {"get", "patch"},
    "/api/v1/promotions/{promotion_id}/stop": {"post"},
    "/api/v1/promotions/{promotion_id}/stats": {"get"},
    "/api/v1/promotions/simulate": {"post"},
    "/api/v1/members/{member_id}/export": {"get"},
    "/api/v1/members/{member_id}/erase": {"post"},
    "/api/v1/bulk-awards": {"post"},
    "/api/v1/bulk-awards/{award_id}": {"get"},
    "/healthz": {"get"},
}
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def spec(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.json


def operations(spec):
    return [(path, method, operation) for path, item in spec["paths"].items()
            for method, operation in item.items() if method in METHODS]


def test_the_document_is_openapi_3_and_needs_no_key(spec):
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"] == "v1"


@pytest.mark.parametrize("path", sorted(CONTRACT))
def test_every_path_of_the_contract_is_described_with_its_methods(spec, path):
    assert path in spec["paths"]
    assert CONTRACT[path] <= set(spec["paths"][path])


def test_every_operation_has_a_summary_and_a_success_answer(spec):
    for path, method, operation in operations(spec):
        assert operation.get("summary"), (method, path)
        assert any(code.startswith("2") for code in operation["responses"]), (method, path)


def test_api_keys_are_the_security_scheme_and_the_health_check_is_open(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": "An API key, or a member token (role member: its own member only)."}
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_success_statuses_are_those_of_the_contract(spec):
    created = {("post", p) for p in ["/api/v1/members", "/api/v1/purchases", "/api/v1/points-payments",
                                     "/api/v1/purchases/{purchase_id}/refunds",
                                     "/api/v1/members/{member_id}/activities",
                                     "/api/v1/members/{member_id}/adjustments",
                                     "/api/v1/points-payments/{payment_id}/reversal",
                                     "/api/v1/rewards", "/api/v1/members/{member_id}/redemptions",
                                     "/api/v1/referral-campaigns", "/api/v1/webhooks", "/api/v1/promotions",
                                     "/api/v1/members/{member_id}/tokens",
                                     "/api/v1/points-holds", "/api/v1/points-holds/{hold_id}/capture"]}
    no_content = {("delete", "/api/v1/members/{member_id}/tokens")}
    accepted = {("post", "/api/v1/bulk-awards")}  # queued for a job: 202

    for path, method, operation in operations(spec):
        success = {code for code in operation["responses"] if code.startswith("2")}
        expected = ({"201"} if (method, path) in created else {"204"} if (method, path) in no_content
                    else {"202"} if (method, path) in accepted else {"200"})
        assert success == expected, (method, path)


def test_request_bodies_name_their_required_fields(spec):
    def body_schema(path, method):
        schema = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        return spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]

    assert {"receipt_no", "amount"} <= set(body_schema("/api/v1/purchases", "post")["required"])
    assert body_schema("/api/v1/members", "post")["required"] == ["name"]
    assert {"payment_no", "points"} <= set(body_schema("/api/v1/points-payments", "post")["required"])


def test_member_answers_describe_every_member_field(spec):
    member = spec["components"]["schemas"]["Member"]["properties"]

    assert {"id", "member_no", "name", "phone", "email", "birthday", "tier", "points", "lifecycle_stage",
            "referral_code", "joined_at", "status"} <= set(member)


def test_every_post_documents_the_idempotency_key_header(spec):
    for path, method, operation in operations(spec):
        if method == "post":
            headers = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
            assert headers == ["Idempotency-Key"], path


def test_errors_are_documented_as_the_body_the_service_sends(spec, api):
    documented = spec["components"]["schemas"]["Error"]
    sent = api.get("app", "/members/999").json

    assert set(documented["required"]) == {"code", "status", "error", "message"} == set(sent)
    assert documented["additionalProperties"] is True  # e.g. the owner's member_id of a conflict
    assert "errors" in documented["properties"]
    assert spec["paths"]["/api/v1/purchases"]["post"]["responses"]["default"] == {
        "$ref": "#/components/responses/DEFAULT_ERROR"}


def test_qr_cards_are_described_as_binary_images(spec):
    png = spec["paths"]["/api/v1/members/{member_id}/card.png"]["get"]["responses"]["200"]["content"]

    assert png["image/png"]["schema"] == {"type": "string", "format": "binary"}


def test_ids_in_paths_are_positive_64_bit_integers(spec):
    parameters = spec["paths"]["/api/v1/members/{member_id}"]["parameters"]

    assert parameters == [{"in": "path", "name": "member_id", "required": True,
                           "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}]


def test_the_docs_page_is_html(client):
    response = client.get("/api/v1/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert b"openapi.json" in response.data


def test_the_health_check_answers_without_a_key(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}


def test_the_health_check_answers_503_when_the_database_is_unreachable(client, monkeypatch):
    def unreachable(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(db.session, "execute", unreachable)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json["error"] == "unavailable"
    assert response.json["database"] == "unreachable"
    assert response.json["code"] == 503


def test_the_docs_page_loads_every_asset_from_our_own_server(client):
    """A shop's intranet has no internet: no script or style of the docs page may come from elsewhere."""
    page = client.get("/api/v1/docs").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)

    assert {asset.rsplit("/", 1)[-1] for asset in assets} >= {
        "swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"}
    for asset in assets:
        assert asset.startswith("/api/v1/docs/assets/"), asset  # not http://, not //host/
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.data) > 1000, asset
        assert response.mimetype in ("text/css", "text/javascript", "application/javascript"), asset
        response.close()


def test_the_docs_assets_folder_serves_nothing_outside_the_bundle(client):
    for path in ("/api/v1/docs/assets/../../../setup.cfg", "/api/v1/docs/assets/%2e%2e/%2e%2e/setup.cfg",
                 "/api/v1/docs/assets/no-such-file.js"):
        response = client.get(path)

        assert response.status_code == 404, path
        assert response.json["error"] == "not_found"
