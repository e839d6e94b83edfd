"""Input no operation can take is refused at the edge, before any view (issue 14): NULs, lone
surrogates and invalid UTF-8 anywhere, duplicate keys, deep nesting, absurd numbers; numbers in ASCII
digits only. Each answer is API.md's JSON error (never a 5xx, which PostgreSQL used to give) and
changes nothing."""
from decimal import Decimal

import pytest

from tests.api.test_errors import assert_error_body, new_member, state


@pytest.fixture
def member_id(api):
    return new_member(api)


def post_raw(api, role, path, raw, **kwargs):
    return api.post(role, path, data=raw, content_type="application/json", **kwargs)


# --- the body --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, says", [
    (b'{"name": "Li\\u0000Lei"}', "The body's field 'name' has a NUL character"),
    ('{"name": "Li\x00Lei"}'.encode(), "not valid JSON"),  # a raw control character is not JSON at all
    (b'{"name": "Li", "external_ids": [{"channel": "wechat", "id": "o\\u0000x"}]}',
     "The body's field 'external_ids[0].id' has a NUL character"),
    (b'{"name": "Li", "na\\u0000me": "x"}', "The body's key 'na\\x00me' has a NUL character"),
    (b'{"name": "Li\\ud800"}', "The body's field 'name' has a lone surrogate (\\ud800)"),
    (b'{"name": "Li\\udfff\\ud800"}', "lone surrogate (\\udfff)"),  # a pair the wrong way round
    (b'{"name": "\\ud83d"}', "lone surrogate (\\ud83d)"),
    (b'{"name": "Li \xed\xa0\x80"}', "not UTF-8"),  # a surrogate encoded as UTF-8 bytes
    (b'{"name": "Li \xff"}', "not UTF-8"),
    (b'"\\u0000"', "The body has a NUL character"),
])
def test_nul_characters_lone_surrogates_and_invalid_utf8_in_a_body_are_400(api, raw, says):
    response = post_raw(api, "app", "/members", raw)

    body = assert_error_body(response, 400, "bad_request")
    assert says in body["message"], body
    assert api.get("admin", "/members/1").status_code == 404


def test_a_surrogate_pair_is_one_character_and_welcome(api):
    response = post_raw(api, "app", "/members", b'{"name": "Li \\ud83d\\ude00"}')

    assert response.status_code == 201, response.json
    assert response.json["name"] == "Li \U0001F600"


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_json_nested_deeper_than_any_request_is_a_400_that_says_so(api, depth):
    for raw in (b"[" * depth + b"]" * depth, b'{"a": ' * depth + b"1" + b"}" * depth,
                b'{"name": "Li", "external_ids": ' + b"[" * depth + b"]" * depth + b"}"):
        response = post_raw(api, "app", "/members", raw)

        body = assert_error_body(response, 400, "bad_request")
        assert "nested too deeply" in body["message"] and "32 levels" in body["message"]


def test_nesting_within_the_cap_is_left_to_the_fields(api):
    response = post_raw(api, "app", "/members", b'{"name": "Li", "x": ' + b"[" * 31 + b"]" * 31 + b"}")

    assert_error_body(response, 422, "validation_error")
    assert response.json["errors"] == {"x": ["Unknown field."]}


@pytest.mark.parametrize("raw, key", [
    (b'{"name": "Li", "name": "Lei"}', "name"),
    (b'{"name": "Li", "external_ids": [{"channel": "a", "id": "1", "channel": "b"}]}', "channel"),
])
def test_a_key_given_twice_is_a_400_naming_it_not_the_last_one_winning(api, raw, key):
    response = post_raw(api, "app", "/members", raw)

    body = assert_error_body(response, 400, "bad_request")
    assert f"key '{key}' twice" in body["message"]
    assert api.get("admin", "/members/1").status_code == 404


def test_a_duplicate_key_in_a_purchase_changes_nothing(api, member_id):
    before = state(api, member_id)
    raw = b'{"member_id": %d, "receipt_no": "R1", "amount": "1.00", "amount": "100.00"}' % member_id

    response = post_raw(api, "pos", "/purchases", raw)

    assert_error_body(response, 400, "bad_request")
    assert state(api, member_id) == before


@pytest.mark.parametrize("number", [b"1e999999", b"-1e999999", b"1e-999999", b"1" + b"0" * 50,
                                    b"1" * 5000, b"0." + b"0" * 60 + b"1", b"1" + b"0" * 41 + b".5"])
def test_a_number_with_more_digits_than_any_field_is_a_400(api, member_id, number):
    before = state(api, member_id)
    raw = b'{"points": %s, "reason": "correction"}' % number

    response = post_raw(api, "admin", f"/members/{member_id}/adjustments", raw)

    body = assert_error_body(response, 400, "bad_request")
    assert "more digits than any field takes" in body["message"]
    assert "set_int_max_str_digits" not in body["message"]
    assert state(api, member_id) == before


def test_a_body_that_is_not_json_is_refused_before_an_idempotency_key_is_read(api, member_id):
    """The Idempotency-Key fingerprint reads the body before the view: it must never see it."""
    raw = b"[" * 5000 + b"]" * 5000

    response = api.post("admin", f"/members/{member_id}/adjustments", data=raw, content_type="text/plain",
                        extra_headers={"Idempotency-Key": "k1"})

    assert_error_body(response, 415, "unsupported_media_type")


# --- the address, the query, the headers -----------------------------------------------------

@pytest.mark.parametrize("path", ["/vouchers/%00abcd", "/vouchers/abcd%00", "/segments/%00/members",
                                  "/tiers/gold%00", "/members/1%00"])
def test_a_nul_in_the_address_is_a_400(api, member_id, path):
    body = assert_error_body(api.get("admin", path), 400, "bad_request")

    assert "The address has a NUL character" in body["message"]


@pytest.mark.parametrize("raw_path", [b"/api/v1/vouchers/\xffabcd", b"/api/v1/vouchers/\xed\xa0\x80abc",
                                      b"/api/v1/segments/\xc3/members"])
def test_an_address_that_is_not_utf8_is_a_400(client, headers, raw_path):
    """What a server puts in PATH_INFO for `%ff`: the byte itself (decoded as latin-1, as WSGI says)."""
    response = client.get("/", headers=headers["admin"], environ_overrides={"PATH_INFO": raw_path.decode("latin-1")})

    body = assert_error_body(response, 400, "bad_request")
    assert "The address is not valid UTF-8" in body["message"]


@pytest.mark.parametrize("query", ["email=a%00b", "phone=%00", "card=%00", "channel=wechat&external_id=%00",
                                   "email=%ff", "email=%ed%a0%80", "email=a@b.c&x%00=1"])
def test_a_nul_or_invalid_utf8_in_the_query_is_a_400(api, query):
    body = assert_error_body(api.get("admin", "/members?" + query), 400, "bad_request")

    assert "The query string" in body["message"]


@pytest.mark.parametrize("query", ["actor=%00", "action=%00", "entity=x%00"])
def test_a_nul_in_an_audit_filter_is_a_400(api, query):
    assert_error_body(api.get("admin", "/audit-log?" + query), 400, "bad_request")


@pytest.mark.parametrize("name, value", [("Idempotency-Key", "k\x001"), ("Authorization", "Bearer x\x00y")])
def test_a_nul_in_a_header_is_a_400(api, member_id, name, value):
    before = state(api, member_id)

    response = api.post("admin", f"/members/{member_id}/adjustments", json={"points": 5, "reason": "correction"},
                        extra_headers={name: value})

    body = assert_error_body(response, 400, "bad_request")
    assert f"The {name} header has a NUL character" in body["message"]
    assert state(api, member_id) == before


def test_unicode_that_is_text_is_still_welcome_everywhere(api):
    created = api.post("app", "/members", json={"name": "李雷 Ünïcödé 😀", "email": "lei@example.com"})

    found = api.get("admin", "/members", query_string={"email": "lei@example.com"})

    assert created.status_code == 201
    assert found.json["items"][0]["name"] == "李雷 Ünïcödé 😀"


# --- numbers are ASCII digits ----------------------------------------------------------------

@pytest.mark.parametrize("amount", ["１００", "١٠٠", "१००", "1_000", " 10.00 ", "10.00 ", "+10", "1e3", "1E2",
                                    "1.5e2", "0x10", "10.", ".5", "1,000.00", "10..0", "", "-", "Infinity", "NaN"])
def test_an_amount_not_written_in_ascii_digits_is_refused(api, member_id, amount):
    before = state(api, member_id)

    response = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": amount})

    assert_error_body(response, 422, "validation_error")
    assert response.json["errors"] == {"amount": ['Must be a decimal number such as 120.5, in ASCII digits.']}
    assert state(api, member_id) == before


@pytest.mark.parametrize("points", ["１０", "١٠", "1_0", " 10", "+10", "1e1", "0x10"])
def test_points_not_written_in_ascii_digits_are_refused(api, member_id, points):
    response = api.post("admin", f"/members/{member_id}/adjustments", json={"points": points, "reason": "correction"})

    assert_error_body(response, 422, "validation_error")
    assert list(response.json["errors"]) == ["points"]


@pytest.mark.parametrize("amount, expected", [("10", "10.00"), ("10.5", "10.50"), ("007.10", "7.10"),
                                              (10, "10.00"), (Decimal("1E+1"), "10.00")])
def test_ascii_amounts_and_json_numbers_are_read(api, member_id, amount, expected):
    response = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": amount})

    assert response.status_code == 201, response.json
    assert response.json["amount"] == expected


@pytest.mark.parametrize("raw, expected", [(b"120.5", 120.5), (b"1e2", 100), (b"1.5E1", 15), (b'"-7.25"', -7.25)])
def test_points_as_json_numbers_follow_jsons_grammar(api, member_id, raw, expected):
    """A JSON number is read by JSON's grammar (an encoder may write 1e2); a string by ours."""
    api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": "100.00"})

    response = post_raw(api, "admin", f"/members/{member_id}/adjustments",
                        b'{"points": %s, "reason": "correction"}' % raw)

    assert response.status_code == 201, response.json
    assert response.json["points"] == Decimal(str(expected))


@pytest.mark.parametrize("amount, message", [("-0", "Must be greater than 0."), ("-0.00", "Must be greater than 0."),
                                             ("-1.00", "Must be greater than 0.")])
def test_a_negative_or_minus_zero_amount_is_not_a_purchase(api, member_id, amount, message):
    response = api.post("pos", "/purchases", json={"member_id": member_id, "receipt_no": "R1", "amount": amount})

    assert_error_body(response, 422, "validation_error")
    assert response.json["errors"] == {"amount": [message]}


@pytest.mark.parametrize("path", ["/members/１", "/members/١", "/members/+1", "/members/%201", "/members/1.0",
                                  "/members/0x1", "/members/1_0"])
def test_an_id_not_written_in_ascii_digits_names_nothing(api, member_id, path):
    assert member_id == 1

    assert_error_body(api.get("admin", path), 404, "not_found")


@pytest.mark.parametrize("limit", ["１", "١٠", "1_0", " 10", "+10", "1e1", "10.0", "0x10"])
def test_a_query_number_not_in_ascii_digits_is_refused(api, member_id, limit):
    response = api.get("admin", f"/members/{member_id}/points/history", query_string={"limit": limit})

    assert_error_body(response, 422, "validation_error")
    assert response.json["errors"] == {"limit": ["Not a valid integer: use ASCII digits."]}


@pytest.mark.parametrize("quantity, message", [
    (Decimal("1.5"), "Not a valid integer: use ASCII digits."),  # no longer truncated to 1
    ("２", "Not a valid integer: use ASCII digits."),
    (2**63, "Must be at most 9223372036854775807."),
    ("99999999999999999999", "Must be at most 9223372036854775807."),
])
def test_an_integer_field_takes_only_whole_ascii_numbers_within_64_bits(api, member_id, quantity, message):
    response = api.post("pos", "/purchases", json={
        "member_id": member_id, "receipt_no": "R1", "amount": "10.00",
        "items": [{"sku": "A", "quantity": quantity, "amount": "10.00"}]})

    assert_error_body(response, 422, "validation_error")
    assert response.json["errors"] == {"items": {"0": {"quantity": [message]}}}


def test_a_whole_json_number_is_an_integer(api, member_id):
    response = post_raw(api, "pos", "/purchases", b'{"member_id": %d, "receipt_no": "R1", "amount": "10.00", '
                                                  b'"items": [{"sku": "A", "quantity": 2.0, "amount": "10.00"}]}'
                        % member_id)

    assert response.status_code == 201, response.json


@pytest.mark.parametrize("birthday", ["２０００-01-01", "2000-0١-01", "2000-01-01 "])
def test_dates_are_ascii_digits_too(api, birthday):
    response = api.post("app", "/members", json={"name": "Li", "birthday": birthday})

    assert_error_body(response, 422, "validation_error")
    assert list(response.json["errors"]) == ["birthday"]
