"""Find the lead behind a WhatsApp number, or create it when configured to."""

from __future__ import annotations

import logging

from plugins.leadsquared.client import LeadSquaredClient, LeadSquaredError
from plugins.leadsquared.phones import (
    lookup_candidates,
    same_number,
    search_keys,
    storage_format,
)

logger = logging.getLogger(__name__)


async def find_lead(client: LeadSquaredClient, number: str) -> str | None:
    """The lead with this number: by phone lookup, else by quick search; the first wins.

    RetrieveLeadByPhoneNumber takes digits with or without the country code (reference
    §2a), and may match the stored value literally, so one query per documented form. A
    lead stored in another form (spaces, 00-prefix ...) is found with
    Leads.GetByQuickSearch, keeping only leads whose Phone or Mobile really is the number
    (a search matches parts of names and other numbers too).
    """
    for candidate in lookup_candidates(number):
        leads = await client.leads_by_phone(candidate)
        if leads:
            return str(leads[0]["ProspectID"])
    for key in search_keys(number):
        for lead in await client.quick_search(key):
            if same_number(lead.get("Phone"), number) or same_number(lead.get("Mobile"), number):
                return str(lead["ProspectID"])
    return None


async def create_lead(client: LeadSquaredClient, number: str, name: str | None,
                      source: str, extra: dict[str, str] | None = None) -> str:
    """Create a lead for an unknown number; a race with another creator finds that lead.

    extra: more schema-name attributes (e.g. the BSUID and username fields)."""
    first, _, last = (name or "").strip().partition(" ")
    # "+CC-national" is how LeadSquared's own examples store numbers (an inference, see
    # shared/reference/leadsquared-api.md §4); lookups try the other forms too.
    attributes = {"FirstName": first or "WhatsApp", "Mobile": storage_format(number),
                  "Source": source}
    if last:
        attributes["LastName"] = last
    attributes.update(extra or {})
    try:
        return await client.create_lead(attributes)
    except LeadSquaredError as exc:
        if exc.exception_type != "MXDuplicateEntryException":
            raise
        found = await find_lead(client, number)
        if found is None:
            raise
        logger.info("lead for this number appeared meanwhile; using it")
        return found
