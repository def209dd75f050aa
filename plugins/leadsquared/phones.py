"""Phone formats for LeadSquared: lookup candidates and the stored form of a WhatsApp number."""

from __future__ import annotations

import re

import phonenumbers

# Digits and punctuation only: a key with letters (e.g. a business-scoped "US.1349...") is no phone.
_PHONE_CHARS = re.compile(r"^\+?[\d\s().-]+$")


def lookup_candidates(e164: str) -> list[str]:
    """Forms to try with RetrieveLeadByPhoneNumber, most likely first, without duplicates.

    Per variant: +CCnational, national number, +CC-national, CCnational. Brazil and
    Argentina also get the mobile number with and without the extra 9.
    """
    # +CCnational first: leads stored as LeadSquared writes them ("+91-98...") match it
    # with hyphens removed, as do "+9198..."; real clients try it first too (reference §4).
    # An account that stores bare national numbers pays one extra lookup per new chat.
    number = _parse(e164)
    if number is None:
        return []
    code = str(number.country_code)
    candidates: list[str] = []
    for national in _variants(code, phonenumbers.national_significant_number(number)):
        for form in (f"+{code}{national}", national, f"+{code}-{national}", f"{code}{national}"):
            if form not in candidates:
                candidates.append(form)
    return candidates


def storage_format(e164: str) -> str:
    """The form written to Phone/Mobile when creating a lead: '+CC-national'."""
    # Inferred, not documented: LeadSquared's own examples store "+91-8556010497"
    # (reference §4, practical approach); confirm against the target account.
    number = _parse(e164)
    if number is None:
        raise ValueError(f"{e164!r} is not a phone number")
    return f"+{number.country_code}-{phonenumbers.national_significant_number(number)}"


def _parse(text: str) -> phonenumbers.PhoneNumber | None:
    """A possible phone number from E.164 text (the '+' may be missing, as in WhatsApp wa_ids)."""
    text = text.strip()
    if not _PHONE_CHARS.match(text):
        return None
    try:
        number = phonenumbers.parse(text if text.startswith("+") else "+" + text, None)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None


def _variants(code: str, national: str) -> list[str]:
    """The national number, then its 9th-digit twin for BR (+55) and AR (+54) mobiles."""
    if code == "55":
        return [national, *_brazil_twin(national)]
    if code == "54":
        return [national, *_argentina_twin(national)]
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
