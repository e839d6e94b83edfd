"""The member card QR: the app shows it, a till scans it and finds the member with `?card=`."""
import io
import xml.etree.ElementTree as ElementTree

import pytest
import zxingcpp
from PIL import Image


def new_member(api, phone):
    response = api.post("app", "/members", json={"name": "Li Lei", "phone": phone})
    assert response.status_code == 201, response.json
    return response.json


def scan(png):
    """What a till's scanner reads from the image."""
    barcodes = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(barcodes) == 1
    assert barcodes[0].format == zxingcpp.BarcodeFormat.QRCode
    return barcodes[0].text


@pytest.mark.parametrize("role", ["app", "pos", "admin"])
def test_the_card_png_decodes_to_a_token_that_finds_the_member(api, role):
    member = new_member(api, "13800000001")
    new_member(api, "13800000002")

    card = api.get(role, f"/members/{member['id']}/card.png")

    assert card.status_code == 200
    assert card.mimetype == "image/png"
    assert card.data.startswith(b"\x89PNG\r\n\x1a\n")
    token = scan(card.data)
    found = api.get("pos", "/members", query_string={"card": token})
    assert [m["id"] for m in found.json["items"]] == [member["id"]]


def test_a_till_credits_a_purchase_to_the_scanned_card(api, assert_ledger_ok):
    member = new_member(api, "13800000001")
    token = scan(api.get("app", f"/members/{member['id']}/card.png").data)

    bought = api.post("pos", "/purchases", json={"card": token, "receipt_no": "R1", "amount": "58.00"})

    assert bought.status_code == 201
    assert bought.json["member"]["id"] == member["id"]
    assert bought.json["points_earned"] == 58
    assert_ledger_ok()


def test_a_till_takes_a_points_payment_from_the_scanned_card(api):
    member = new_member(api, "13800000001")
    api.post("admin", f"/members/{member['id']}/adjustments", json={"points": 300, "reason": "welcome gift"})
    token = scan(api.get("pos", f"/members/{member['id']}/card.png").data)

    paid = api.post("pos", "/points-payments", json={"card": token, "payment_no": "P1", "points": 100})

    assert paid.status_code == 201
    assert paid.json["member"]["id"] == member["id"]
    assert paid.json["member"]["points"]["available"] == 200


def test_each_member_has_a_different_card_that_does_not_change(api):
    first, second = new_member(api, "13800000001"), new_member(api, "13800000002")

    first_token = scan(api.get("app", f"/members/{first['id']}/card.png").data)
    second_token = scan(api.get("app", f"/members/{second['id']}/card.png").data)

    assert first_token != second_token
    assert scan(api.get("pos", f"/members/{first['id']}/card.png").data) == first_token
    assert len(first_token) >= 20  # long enough that nobody guesses someone else's card
    assert str(first["id"]) != first_token and first["phone"] not in first_token


def test_the_card_svg_is_an_svg_image(api):
    member = new_member(api, "13800000001")

    card = api.get("app", f"/members/{member['id']}/card.svg")

    assert card.status_code == 200
    assert card.mimetype == "image/svg+xml"
    root = ElementTree.fromstring(card.data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("{http://www.w3.org/2000/svg}path") is not None


def test_cards_are_private_and_briefly_cacheable(api):
    member = new_member(api, "13800000001")

    card = api.get("app", f"/members/{member['id']}/card.png")

    assert card.headers["Cache-Control"] == "private, max-age=300"


@pytest.mark.parametrize("path", ["/members/999/card.png", "/members/999/card.svg", "/members/1/card.gif"])
def test_a_card_that_does_not_exist_is_a_json_404(api, path):
    response = api.get("app", path)

    assert response.status_code == 404
    assert response.json["error"] == "not_found"


def test_marketing_cannot_fetch_a_card(api):
    member = new_member(api, "13800000001")

    response = api.get("marketing", f"/members/{member['id']}/card.png")

    assert response.status_code == 403
    assert response.json["error"] == "forbidden"
