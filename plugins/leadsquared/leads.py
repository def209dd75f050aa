"""Find the lead behind a WhatsApp number, or create it when configured to."""

from __future__ import annotations

import logging
from collections.abc import Callable

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
                      source: str, extra: dict[str, str] | None = None,
                      owner: LeadOwner | None = None) -> str:
    """Create a lead for an unknown number; a race with another creator finds that lead.

    The number goes to Mobile (a WhatsApp number is a mobile) and to Phone: by default
    only EmailAddress and Phone are unique in LeadSquared (reference §9), so of two
    processes creating a lead for one new number at once, the second is refused with
    MXDuplicateEntryException and takes the first's lead. extra: more schema-name
    attributes (e.g. the BSUID and username fields). owner: the rep whose number the
    customer wrote to (create_with_owner)."""
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
        return await create_with_owner(client, attributes, owner)
    except LeadSquaredError as exc:
        if exc.exception_type != DUPLICATE:
            raise
        found = await find_lead(client, number) or await _by_stored(client, number, stored)
        if found is None:
            raise
        logger.info("lead for this number appeared meanwhile; using it")
        return found


class LeadOwner:
    """The user a new lead goes to: `user_id` for OwnerId. `told(why)` hears how it went:
    None when the lead took its owner, else why not (refused, or ignored when `check`
    asks to read the new lead back)."""

    def __init__(self, user_id: str, email: str,
                 told: Callable[[str | None], None] = lambda why: None,
                 check: bool = False) -> None:
        self.user_id, self.email, self.told, self.check = user_id, email, told, check


async def create_with_owner(client: LeadSquaredClient, attributes: dict[str, str],
                            owner: LeadOwner | None) -> str:
    """Lead.Create, the lead owned by `owner` when given.

    Neither Lead.Create's nor Lead.CreateOrUpdate's page names an owner attribute ("pass
    as many lead fields as you want") [DOC:create-a-lead] [DOC:create-or-update]; a lead
    names its owner by user id in OwnerId [DOC:get-lead-by-phone], and public clients
    send {"Attribute": "OwnerId", "Value": "<user id>"} to Lead.Create and Lead.Capture.
    UNSURE (no recorded answer): whether an account honours it, ignores it (the keys'
    user owns the lead) or refuses it (simulator switch lead_owner). A refusal never
    loses the lead: it is created again without OwnerId, owned as LeadSquared decides,
    and `owner.told` says why (log, status). A duplicate (MXDuplicateEntryException)
    is the caller's, whichever create met it."""
    if owner is None:
        return await client.leads.create(attributes)
    try:
        lead = await client.leads.create({**attributes, "OwnerId": owner.user_id})
    except LeadSquaredError as exc:
        if exc.kind != "rejected" or exc.exception_type == DUPLICATE:
            raise
        lead = await client.leads.create(attributes)  # refused too: not the owner's fault
        why = (f"LeadSquared refused a new lead's owner {owner.email} ({exc.message}): "
               "new leads are created without it, owned as LeadSquared decides")
        logger.warning("%s", why)
        owner.told(why)
        return lead
    owner.told(await _owner_not_taken(client, lead, owner) if owner.check else None)
    return lead


async def _owner_not_taken(client: LeadSquaredClient, lead: str,
                           owner: LeadOwner) -> str | None:
    """Why the new lead is not owned by `owner` (an account that ignores OwnerId), read
    back once; None when it is, or when it cannot be read (the create stands)."""
    try:
        record = await client.leads.get(lead) or {}
    except LeadSquaredError:
        return None
    found = record.get("OwnerId") or record.get("OwnerID")
    if found is None or str(found) == owner.user_id:
        return None
    why = (f"LeadSquared did not take a new lead's OwnerId ({owner.email}): new leads "
           "are owned as LeadSquared decides (its lead assignment, or the API user)")
    logger.warning("%s", why)
    return why


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
