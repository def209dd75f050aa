"""Phone formats for LeadSquared: lookup candidates and the stored form of a WhatsApp number."""

from __future__ import annotations

import re

import phonenumbers

# Digits and punctuation only: a key with letters (e.g. a business-scoped "US.1349...") is no phone.
_PHONE_CHARS = re.compile(r"^\+?[\d\s().-]+$")
MEXICO_OLD_MOBILE = "521"  # +52 1 …: Mexican mobiles before 2019, still WhatsApp's wa_id form


def lookup_candidates(e164: str) -> list[str]:
    """Forms to try with RetrieveLeadByPhoneNumber, most likely first, without duplicates.

    The docs allow digits only, with or without the country code, "no spaces, hyphens or
    any other character" (reference §2a, §4, §9): so no leading '+'. Per variant:
    CCnational (unambiguous across countries), national, and the national number with the
    trunk prefix where the number plan has one (0 in India). Brazil and Argentina also get
    the mobile number with and without the extra 9, Mexico with and without the 1 after
    52 (`variants`). Other stored formats ("+91-98…", as
    LeadSquared's own examples store numbers) are found by `search_keys` (or match these
    where the account compares digits), never by breaking the rule.
    """
    number = _parse(e164)
    if number is None:
        return []
    code, trunk = str(number.country_code), _trunk_prefix(number)
    candidates: list[str] = []
    for national in _variants(code, phonenumbers.national_significant_number(number)):
        forms = [f"{code}{national}", national]
        if trunk:
            forms.append(trunk + national)
        candidates.extend(f for f in forms if f not in candidates)
    return candidates


def primary_candidates(e164: str) -> list[str]:
    """The CCnational form of each variant (the number, then its Brazil/Argentina/Mexico
    twin): the one lookup each a chat spends when the lead directory missed it."""
    return [v[1:] for v in variant_numbers(e164)]


def variant_numbers(e164: str) -> list[str]:
    """The number in E.164 (a Mexican +521… read as +52…), then each twin WhatsApp or a
    CRM may write it as: Brazil with/without the ninth digit, Argentina with/without the 9
    after 54, Mexico with/without the 1 after 52. [] for no phone number."""
    number = _parse(e164)
    if number is None:
        return []
    code = str(number.country_code)
    return [f"+{code}{national}" for national in
            _variants(code, phonenumbers.national_significant_number(number))]


def national_variants(e164: str) -> list[str]:
    """The national significant numbers of `variant_numbers`, in the same order."""
    number = _parse(e164)
    if number is None:
        return []
    return _variants(str(number.country_code),
                     phonenumbers.national_significant_number(number))


def stored_e164(text: str, *, international: bool) -> str | None:
    """A stored Phone/Mobile value as E.164, for the lead directory: written with '+' or
    00 (`international`), any possible number; bare digits only when they (or a
    Brazil/Argentina/Mexico twin) make a valid number, since national digits may
    otherwise pass for a country code."""
    number = _parse(text)
    if number is None:
        return None
    e164 = f"+{number.country_code}{phonenumbers.national_significant_number(number)}"
    if international or any(_valid(twin) for twin in variant_numbers(e164)):
        return e164
    return None


def search_keys(e164: str) -> list[str]:
    """Keys for Leads.GetByQuickSearch: the national digits, then the national number as
    commonly written (e.g. '98765 43210'), for leads stored in forms no lookup matches."""
    number = _parse(e164)
    if number is None:
        return []
    digits = phonenumbers.national_significant_number(number)
    written = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    trunk = _trunk_prefix(number)
    if trunk and written.startswith(trunk):
        written = written[len(trunk):]
    written = written.strip()
    return [digits] + ([written] if written != digits and written else [])


def same_number(stored: object, e164: str) -> bool:
    """True when a stored Phone/Mobile value, in any punctuation, is this number: its digits
    are the national number, maybe after the trunk prefix, the country code, or 00/+."""
    number = _parse(e164)
    if number is None or not isinstance(stored, str):
        return False
    digits = re.sub(r"\D", "", stored)
    code = str(number.country_code)
    prefixes = {"", code, "00" + code, _trunk_prefix(number) or ""}
    for national in _variants(code, phonenumbers.national_significant_number(number)):
        if digits.endswith(national) and digits[: len(digits) - len(national)] in prefixes:
            return True
    return False


def storage_format(e164: str) -> str:
    """The form written to Phone/Mobile when creating a lead: '+CC-national'."""
    # Inferred, not documented: LeadSquared's own examples store "+91-8556010497"
    # (reference §4, practical approach); confirm against the target account.
    number = _parse(e164)
    if number is None:
        raise ValueError(f"{e164!r} is not a phone number")
    return f"+{number.country_code}-{phonenumbers.national_significant_number(number)}"


def _parse(text: str) -> phonenumbers.PhoneNumber | None:
    """A possible phone number from E.164 text (the '+' may be missing, as in WhatsApp wa_ids).
    A Mexican mobile in its pre-2019 form (+52 1 + ten digits, as WhatsApp's wa_id still
    writes it) is read as the ten-digit number it dials today."""
    text = text.strip()
    if not _PHONE_CHARS.match(text):
        return None
    digits = re.sub(r"\D", "", text)
    if len(digits) == len(MEXICO_OLD_MOBILE) + 10 and digits.startswith(MEXICO_OLD_MOBILE):
        text = "+52" + digits[len(MEXICO_OLD_MOBILE):]
    try:
        number = phonenumbers.parse(text if text.startswith("+") else "+" + text, None)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None


def _valid(e164: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return False


def _trunk_prefix(number: phonenumbers.PhoneNumber) -> str | None:
    """The national trunk prefix of the number's plan ('0' in India), if it has one."""
    region = phonenumbers.region_code_for_number(number)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region) if region else None
    return getattr(metadata, "national_prefix", None) or None


def _variants(code: str, national: str) -> list[str]:
    """The national number, then its twin: the 9th digit for BR (+55) and the 9 for AR
    (+54) mobiles, the old mobile 1 for MX (+52)."""
    if code == "55":
        return [national, *_brazil_twin(national)]
    if code == "54":
        return [national, *_argentina_twin(national)]
    if code == "52" and len(national) == 10:
        return [national, "1" + national]
    return [national]


def _brazil_twin(national: str) -> list[str]:
    """DD 9XXXXXXXX <-> DD XXXXXXXX; 8-digit mobiles began with 6-9, landlines with 2-5."""
    area, subscriber = national[:2], national[2:]
    if len(subscriber) == 9 and subscriber[0] == "9":
        return [area + subscriber[1:]]
    if len(subscriber) == 8 and subscriber[0] in "6789":
        return [area + "9" + subscriber]
    return []


def _argentina_twin(national: str) -> list[str]:
    """Mobiles are '+54 9 <area><number>' in E.164 but often stored without the 9."""
    if len(national) == 11 and national[0] == "9":
        return [national[1:]]
    if len(national) == 10 and national[0] != "9":
        return ["9" + national]
    return []
