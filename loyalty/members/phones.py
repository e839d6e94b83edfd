"""Phone numbers: one number, one spelling (E.164, `+8613800138000`), whatever way it was typed.

Every phone that enters the service (registration, profile changes, lookups, referral checks) goes
through `to_e164`, and the migration that rewrote the stored phones used it too, so two spellings of
one number are one identity. Numbers without a country code are read in the deployment's region
(LOYALTY_PHONE_REGION, CN by default). Pure: no database, no web framework."""
import re

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
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise InvalidPhone("The phone number is not a valid number. " + ADVICE)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


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
    number = phonenumbers.parse(e164)
    national = phonenumbers.national_significant_number(number)
    country_code = str(number.country_code)
    spellings = {e164, country_code + national}
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is not None:
        exit_code = metadata.preferred_international_prefix or metadata.international_prefix
        if exit_code and exit_code.isdigit():
            spellings.add(exit_code + country_code + national)
        if metadata.country_code == number.country_code:
            spellings.add(national)
            trunk = phonenumbers.ndd_prefix_for_region(region, True)
            if trunk:
                spellings.add(trunk + national)
    # Only spellings that, read in this region, are this number (16502530000 is a Chinese mobile).
    return sorted(spelling for spelling in spellings if e164_or_none(spelling, region) == e164)


def same_number(a, b, region=DEFAULT_REGION):
    """Whether two phones, stored or typed in any spelling, are one number."""
    if a is None or b is None:
        return False
    return a == b or (e164_or_none(a, region) or a) == (e164_or_none(b, region) or b)
