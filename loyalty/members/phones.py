"""Phone numbers: one number, one spelling (E.164, `+8613800138000`), whatever way it was typed.

Every phone that enters the service (registration, profile changes, lookups, referral checks) goes
through `to_e164`, and the migration that rewrote the stored phones used it too, so two spellings of
one number are one identity. Numbers without a country code are read in the deployment's region
(LOYALTY_PHONE_REGION, CN by default). Pure: no database, no web framework."""
import functools
import re
from dataclasses import dataclass

import phonenumbers

DEFAULT_REGION = "CN"
# What people type around the digits; anything else (letters, other scripts' digits, control
# characters) is refused rather than guessed at.
TYPED = re.compile(r"\(?\+?[0-9\-(). ]*")
MAX_TYPED = 40
ADVICE = "Use a valid phone number, with its country code when it is not a local one (+86 138 0013 8000)."


class InvalidPhone(ValueError):
    """The text is not a valid phone number; the message says so in a sentence for people."""


def to_e164(text, region=DEFAULT_REGION):
    """The number `text` spells, in E.164, or InvalidPhone saying why not.

    A leading + or the region's international prefix (00 in China) gives the country code, otherwise
    the number is read as national; a national reading that is not a valid number but starts with the
    region's country code (8613800138000 in China) is read as international (phonenumbers does this).
    So +86 138 0013 8000, 13800138000, 8613800138000 and 0086 13800138000 are all +8613800138000."""
    text = text.strip()
    if not text:
        raise InvalidPhone("The phone number is empty. " + ADVICE)
    if len(text) > MAX_TYPED or not TYPED.fullmatch(text):
        raise InvalidPhone("The phone number may only contain digits, spaces, dashes, brackets, dots and a "
                           "leading +. " + ADVICE)
    quick = _quick_e164(text, region)
    if quick is not None:
        return quick
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise InvalidPhone("The phone number is not a valid number. " + ADVICE)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class _Region:
    """What the quick reading needs of a region's metadata, compiled once."""
    country_code: str
    general: re.Pattern[str]
    general_lengths: tuple[int, ...]
    mobile: re.Pattern[str]
    mobile_lengths: tuple[int, ...]
    national_prefix: re.Pattern[str] | None
    international_prefix: re.Pattern[str] | None


@functools.lru_cache(maxsize=16)
def _quick_region(region: str) -> _Region | None:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.country_code is None:
        return None
    general, mobile = metadata.general_desc, metadata.mobile
    if general is None or mobile is None or not general.national_number_pattern or not mobile.national_number_pattern:
        return None
    country_code = str(metadata.country_code)
    # A code several regions share (+1, +7, +44...): whether a number is valid depends on which region
    # it falls in, which only phonenumbers' full lookup says. A shorter code that prefixes this one
    # would be the one parse() reads (country codes are prefix-free, so this is a belt for the braces).
    if len(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(metadata.country_code, ())) != 1 or any(
            int(country_code[:n]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE for n in range(1, len(country_code))):
        return None

    def compiled(pattern: str | None) -> re.Pattern[str] | None:
        return re.compile(pattern) if pattern else None
    return _Region(country_code, re.compile(general.national_number_pattern), tuple(general.possible_length),
                   re.compile(mobile.national_number_pattern), tuple(mobile.possible_length),
                   compiled(metadata.national_prefix_for_parsing),
                   compiled(metadata.international_prefix))


def _quick_e164(text: str, region: str) -> str | None:
    """The E.164 form of a mobile number of `region` typed as E.164 (`+8613800138000`) or plainly
    national (`13800138000`), or None when the text is anything else: phonenumbers then decides,
    rejections included (this never refuses a number). A large import spends most of its CPU in
    phonenumbers.parse otherwise.

    Exact by construction, and tested against phonenumbers over generated numbers
    (tests/unit/test_phones.py): for such text parse() takes the country code (after the +) or the
    region's, strips nothing (no national or international prefix, nor the country code, starts the
    national number: those cases go to phonenumbers), has no leading zero to keep, and
    is_valid_number() is true exactly when the number matches the region's general pattern and some
    type's pattern; matching the mobile pattern (with its lengths) is one such type."""
    quick = _quick_region(region)
    if quick is None or not text.isascii():
        return None
    if text[:1] == "+":
        digits = text[1:]
        if not digits.isdigit() or not digits.startswith(quick.country_code):
            return None
        national = digits[len(quick.country_code):]
    elif text.isdigit():
        if text.startswith(quick.country_code) or (quick.international_prefix and quick.international_prefix.match(text)):
            return None
        national = text
    else:
        return None
    if not national or national[0] == "0" or (quick.national_prefix and quick.national_prefix.match(national)):
        return None
    length = len(national)
    if (quick.general_lengths and length not in quick.general_lengths) or not quick.general.fullmatch(national) \
            or (quick.mobile_lengths and length not in quick.mobile_lengths) or not quick.mobile.fullmatch(national):
        return None
    return "+" + quick.country_code + national


def e164_or_none(text, region=DEFAULT_REGION):
    """The E.164 form of a stored phone, or None when it is not a valid number (a legacy value)."""
    if text is None:
        return None
    try:
        return to_e164(text, region)
    except InvalidPhone:
        return None


def is_region(region):
    return region in phonenumbers.SUPPORTED_REGIONS



def legacy_spellings(e164, region=DEFAULT_REGION):
    """The ways this service stored `e164` before it stored E.164 (digits with an optional leading +,
    as typed): what a member kept by the E.164 migration, because another member already had the
    number, may still hold. Lookups and identity checks match these too, so such a member is found
    (and listed by `loyalty members duplicates`) until an admin merges the two."""
    # Only spellings that, read in this region, are this number (16502530000 is a Chinese mobile).
    return sorted(spelling for spelling in candidate_spellings(e164, region) if e164_or_none(spelling, region) == e164)


def candidate_spellings(e164, region=DEFAULT_REGION):
    """The spellings legacy_spellings() keeps, before it reads each one back: string work only, so a
    large import can look up every row's (the few matches are then checked with legacy_spellings)."""
    digits = e164[1:]
    if e164[:1] != "+" or not digits.isdigit():
        return {e164}
    # parse() takes the country code this way: the first 1-3 digits that are one (they are prefix-free).
    for length in (1, 2, 3):
        if int(digits[:length]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            country_code, national = digits[:length], digits[length:]
            break
    else:
        return {e164}
    spellings = {e164, country_code + national}
    region_code, exit_code, trunk = _region_prefixes(region)
    if exit_code:
        spellings.add(exit_code + country_code + national)
    if region_code == country_code:
        spellings.add(national)
        if trunk:
            spellings.add(trunk + national)
    return spellings


@functools.lru_cache(maxsize=16)
def _region_prefixes(region):
    """(country code, international prefix if it is plain digits, trunk prefix) of a region."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return None, None, None
    exit_code = metadata.preferred_international_prefix or metadata.international_prefix
    return (str(metadata.country_code), exit_code if exit_code and exit_code.isdigit() else None,
            phonenumbers.ndd_prefix_for_region(region, True) or None)


def same_number(a, b, region=DEFAULT_REGION):
    """Whether two phones, stored or typed in any spelling, are one number."""
    if a is None or b is None:
        return False
    return a == b or (e164_or_none(a, region) or a) == (e164_or_none(b, region) or b)
