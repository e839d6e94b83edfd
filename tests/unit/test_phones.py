"""Phone numbers in E.164 however they are typed (pure: no app, no database)."""
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty.config import from_environment
from loyalty.members import phones

SPELLINGS = ["+86 138 0013 8000", "13800138000", "8613800138000", "0086 13800138000", "0086 138-0013-8000",
             "+8613800138000", "(+86) 138 0013 8000", "008613800138000", "  138 0013 8000  "]


@pytest.mark.parametrize("typed", SPELLINGS)
def test_every_spelling_of_a_chinese_mobile_is_one_e164_number(typed):
    assert phones.to_e164(typed, "CN") == "+8613800138000"


@pytest.mark.parametrize("typed, region, number", [
    ("(010) 6552 9988", "CN", "+861065529988"),  # a Beijing landline with its trunk 0
    ("861065529988", "CN", "+861065529988"),
    ("+1 650 253 0000", "CN", "+16502530000"),  # a country code overrides the region
    ("650-253-0000", "US", "+16502530000"),
    ("9123 4567", "HK", "+85291234567"),
])
def test_numbers_are_read_in_the_region_unless_they_carry_a_country_code(typed, region, number):
    assert phones.to_e164(typed, region) == number


@pytest.mark.parametrize("typed, reason", [
    ("", "empty"),
    ("   ", "empty"),
    ("12345", "not a valid number"),
    ("1380013800", "not a valid number"),  # a digit short
    ("138001380001", "not a valid number"),  # a digit too many
    ("+86 000 0000 0000", "not a valid number"),
    ("+", "not a valid number"),
    ("++8613800138000", "may only contain"),
    ("138-0013-800x", "may only contain"),
    ("+86 138 0013 8000 ext 5", "may only contain"),  # an extension has no E.164 form
    ("１３８００１３８０００", "may only contain"),  # full-width digits
    ("١٣٨٠٠١٣٨٠٠٠", "may only contain"),  # Arabic-Indic digits
    ("13800138000\x00", "may only contain"),
    ("1" * 41, "may only contain"),
])
def test_what_is_not_a_valid_number_is_refused_with_a_sentence_naming_the_phone(typed, reason):
    with pytest.raises(phones.InvalidPhone) as refused:
        phones.to_e164(typed, "CN")

    assert str(refused.value).startswith("The phone number ")
    assert reason in str(refused.value)


def test_a_chinese_mobile_is_not_valid_as_a_us_number():
    with pytest.raises(phones.InvalidPhone):
        phones.to_e164("13800138000", "US")


def test_the_old_spellings_of_a_number_are_those_that_read_as_it():
    assert phones.legacy_spellings("+8613800138000", "CN") == [
        "+8613800138000", "008613800138000", "013800138000", "13800138000", "8613800138000"]
    # 16502530000 would be a Chinese mobile in China: it is not a spelling of the US number there.
    assert phones.legacy_spellings("+16502530000", "CN") == ["+16502530000", "0016502530000"]


@pytest.mark.parametrize("a, b, same", [
    ("+8613800138000", "13800138000", True),
    ("0086 138 0013 8000", "8613800138000", True),
    ("+8613800138000", "+8613800138001", False),
    ("12345", "12345", True),  # a legacy value that is not a number is still equal to itself
    ("12345", "123456", False),
    (None, None, False),
    ("+8613800138000", None, False),
])
def test_two_phones_are_the_same_number_in_any_spelling(a, b, same):
    assert phones.same_number(a, b, "CN") is same


def test_the_region_comes_from_the_environment_and_defaults_to_china(monkeypatch, tmp_path):
    monkeypatch.delenv("LOYALTY_PHONE_REGION", raising=False)
    assert from_environment(str(tmp_path))["LOYALTY_PHONE_REGION"] == "CN"
    monkeypatch.setenv("LOYALTY_PHONE_REGION", " hk ")
    assert from_environment(str(tmp_path))["LOYALTY_PHONE_REGION"] == "HK"


def test_an_unknown_region_stops_the_service_with_a_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("LOYALTY_PHONE_REGION", "China")

    with pytest.raises(SystemExit) as stopped:
        from_environment(str(tmp_path))

    assert "LOYALTY_PHONE_REGION='China'" in str(stopped.value)


# --- the quick reading agrees with phonenumbers -----------------------------------------------------

REGIONS = ["CN", "HK", "SG", "TW", "DE", "GB", "FR", "IT", "IN", "JP", "BR", "AU", "US", "RU", "CI", "GA"]  # CI, GA: leading zeros


def _by_phonenumbers(text, region):
    """What phonenumbers alone makes of `text`: the reference the quick reading must equal."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@st.composite
def typed_numbers(draw):
    """Digits as an import file has them: near a region's real mobiles and fixed lines (a digit
    changed, one more or one less, its country code or a prefix in front) or any digits at all."""
    region = draw(st.sampled_from(REGIONS))
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    kind = draw(st.sampled_from([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]))
    example = phonenumbers.example_number_for_type(region, kind)
    national = phonenumbers.national_significant_number(example) if example else "1380013800"
    digits = list(draw(st.sampled_from([national, draw(st.text("0123456789", min_size=1, max_size=16))])))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(digits)))
        change = draw(st.sampled_from(["replace", "insert", "delete"]))
        if change == "insert" or not digits:
            digits.insert(at, draw(st.sampled_from("0123456789")))
        elif change == "delete":
            del digits[min(at, len(digits) - 1)]
        else:
            digits[min(at, len(digits) - 1)] = draw(st.sampled_from("0123456789"))
    front = draw(st.sampled_from(["", "+", "0", "00", "1", "179", "12", "11"])) \
        + draw(st.sampled_from(["", str(metadata.country_code), "86", "1"]))
    return "".join([front, *digits]), region


@settings(max_examples=2500, deadline=None, derandomize=True)
@given(typed_numbers())
def test_the_quick_reading_agrees_with_phonenumbers_on_every_number_and_every_refusal(typed):
    text, region = typed
    assert phones.e164_or_none(text, region) == _by_phonenumbers(text, region)
    quick = phones._quick_e164(text, region)
    assert quick is None or quick == _by_phonenumbers(text, region)


@pytest.mark.parametrize("typed", ["13800138000", "+8613800138000", "19912345678", "+8615012345678"])
def test_chinese_mobiles_in_e164_or_plainly_national_are_read_without_phonenumbers(typed):
    assert phones._quick_e164(typed, "CN") == _by_phonenumbers(typed, "CN") is not None


@pytest.mark.parametrize("typed", [
    "8613800138000", "008613800138000", "013800138000",  # a prefix phonenumbers strips
    "12593138001380", "17951138001380",  # a carrier prefix (China's national prefix for parsing)
    "1065529988", "+861065529988",  # a landline
    "12345678901", "+8612345678901",  # no such mobile: phonenumbers refuses it
])
def test_anything_else_is_left_to_phonenumbers(typed):
    assert phones._quick_e164(typed, "CN") is None


def test_regions_sharing_a_country_code_are_left_to_phonenumbers():
    assert phones._quick_e164("6502530000", "US") is None
    assert phones._quick_e164("+16502530000", "US") is None
    assert phones.to_e164("650 253 0000", "US") == "+16502530000"
