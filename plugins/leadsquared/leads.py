"""Find the lead behind a WhatsApp number, or create it when configured to."""

from __future__ import annotations

import logging

from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.phones import (
    lookup_candidates,
    same_number,
    search_keys,
    storage_format,
)

logger = logging.getLogger(__name__)

DUPLICATE = "MXDuplicateEntryException"


async def find_lead(client: LeadSquaredClient, number: str) -> str | None:
    """The lead with this number: by phone lookup, else by quick search; the first wins.

    RetrieveLeadByPhoneNumber takes digits only, with or without the country code, "no
    spaces, hyphens or any other character" (reference §2a, §9), and may match the stored
    value literally, so one query per digits form. A lead stored in another form (+CC-…,
    spaces, 00-prefix ...) is found with Leads.GetByQuickSearch. Every hit must really be
    this number in Phone or Mobile (a national-digits query can match another country's
    lead; a search matches parts of names and other numbers too).
    """
    if lead := await first_match(client, number, lookup_candidates(number)):
        return lead
    for key in search_keys(number):
        if lead := _same(await client.leads.quick_search(key), number):
            return lead
    return None


async def first_match(client: LeadSquaredClient, number: str,
                      candidates: list[str]) -> str | None:
    """The first lead a phone lookup of one of `candidates` finds that is this number."""
    for candidate in candidates:
        if lead := _same(await client.leads.by_phone(candidate), number):
            return lead
    return None


async def create_lead(client: LeadSquaredClient, number: str, name: str | None,
                      source: str, extra: dict[str, str] | None = None) -> str:
    """Create a lead for an unknown number; a race with another creator finds that lead.

    The number goes to Mobile (a WhatsApp number is a mobile) and to Phone: by default
    only EmailAddress and Phone are unique in LeadSquared (reference §9), so of two
    processes creating a lead for one new number at once, the second is refused with
    MXDuplicateEntryException and takes the first's lead. extra: more schema-name
    attributes (e.g. the BSUID and username fields)."""
    first, _, last = (name or "").strip().partition(" ")
    # "+CC-national" is how LeadSquared's own examples store numbers (an inference, see
    # shared/reference/leadsquared-api.md §4); lookups try the other forms too.
    stored = storage_format(number)
    attributes = {"FirstName": first or "WhatsApp", "Phone": stored, "Mobile": stored,
                  "Source": source}
    if last:
        attributes["LastName"] = last
    attributes.update(extra or {})
    try:
        return await client.leads.create(attributes)
    except LeadSquaredError as exc:
        if exc.exception_type != DUPLICATE:
            raise
        found = await find_lead(client, number) or await _by_stored(client, number, stored)
        if found is None:
            raise
        logger.info("lead for this number appeared meanwhile; using it")
        return found


async def _by_stored(client: LeadSquaredClient, number: str, stored: str) -> str | None:
    """The lead holding exactly the value we tried to write (Leads.Get on each field)."""
    for name in ("Phone", "Mobile"):
        if lead := _same(await client.leads.by_field(name, stored), number):
            return lead
    return None


def _same(leads: list[dict], number: str) -> str | None:
    for lead in leads:
        if same_number(lead.get("Phone"), number) or same_number(lead.get("Mobile"), number):
            return str(lead["ProspectID"])
    return None
