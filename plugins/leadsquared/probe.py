"""`bridge leadsquared check --probe`: which reading of each open question this account shows.

One line per guess the sink depends on, named after the simulator switch that serves each
reading (docs/leadsquared-simulator.md), so the first real user can confirm our guesses in
a minute. Read-only: a guess that can only be seen by writing (a bulk post, an upload, a
second lead for one number) says so instead of writing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import phonenumbers

from plugins.leadsquared.api import lsq_datetime
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.opportunities import opportunity_types
from plugins.leadsquared.phones import lookup_candidates

Say = Callable[[str], None]
EVERYTHING = ("2000-01-01 00:00:00", "2100-01-01 00:00:00")
SAMPLE_COLUMNS = "ProspectID,Phone,Mobile,ModifiedOn"
WRITES_ONLY = {
    "bulk_answer": "can only be seen by posting (not done): the sink reads ids from the "
                   "documented Response[].ProspectActivityId, from RowNumber/ActivityCreated "
                   "rows and from Message.Count, and settles any row without an id by its key",
    "upload_answer": "can only be seen by uploading a file (not done): the sink attaches the "
                     "S3 URL of s3FilePath; an answer without one leaves each file in the "
                     "bridge with a dead letter saying so",
    "unique_fields": "can only be seen by creating leads (not done): the sink writes new "
                     "numbers to Phone, unique by default, so a second create for one number "
                     "is refused and finds the first lead",
}


async def probe_account(client: LeadSquaredClient, say: Say, user: dict, types: list[dict],
                        event: int | None, lead: str | None) -> None:
    """Print each guess with the reading this account shows."""
    _user_fields(say, user)
    await _user_lookup(client, say, user)
    _opportunity_listing(say, types)
    sample = await _sample(client)
    await _opportunity_type(client, say, lead or (sample or {}).get("ProspectID"))
    await _activity_setting(client, say, event)
    await _phone_matching(client, say, sample, user.get("DefaultCountryCode"))
    await _recent_sort(client, say)
    for switch, why in WRITES_ONLY.items():
        say(f"probe {switch}: not probed: {why}")


async def sample_lead(client: LeadSquaredClient) -> str | None:
    """Some lead's id (the most recently modified), or None in an empty account."""
    return ((await _sample(client)) or {}).get("ProspectID")


def _user_fields(say: Say, user: dict) -> None:
    email = user.get("EmailAddress")
    if email in (None, ""):
        say("probe user_fields: documented: UserByAccessKey.Get has EmailAddress null "
            f"(PassPhrase holds {'a login' if user.get('PassPhrase') else 'nothing'}): the "
            "sink never reads the owner from it")
    else:
        say("probe user_fields: email: UserByAccessKey.Get fills EmailAddress (the sink "
            "still takes the owner from the users lookup or owner_email)")


async def _user_lookup(client: LeadSquaredClient, say: Say, user: dict) -> None:
    try:
        found = await client.users.by_id(str(user.get("Id") or ""))
    except LeadSquaredError as exc:
        say(f"probe user lookup: User/Retrieve/ByUserId failed ({exc.kind}: {exc.message}): "
            "set owner_email, or opportunity activities go one by one")
        return
    email = (found or {}).get("EmailAddress")
    say(f"probe user lookup: User/Retrieve/ByUserId names the key's user {email}" if email
        else "probe user lookup: User/Retrieve/ByUserId names no email for the key's user")


def _opportunity_listing(say: Say, types: list[dict]) -> None:
    codes = opportunity_types(types)
    say(f"probe opportunity_types: listed: ActivityTypes.Get holds {codes}" if codes else
        "probe opportunity_types: absent: ActivityTypes.Get holds no codes 12000-12999")


async def _opportunity_type(client: LeadSquaredClient, say: Say, lead: str | None) -> None:
    if lead is None:
        say("probe opportunity_type: cannot tell: the account has no lead to ask about")
        return
    try:
        rows = await client.opportunities.of_lead(lead, None, page_size=5)
    except LeadSquaredError as exc:
        say(f"probe opportunity_type: required: GetOpportunitiesOfLead without a type was "
            f"refused ({exc.exception_type or exc.kind}: {exc.message})")
        return
    keys = sorted({key for row in rows for key in row})[:12]
    say("probe opportunity_type: optional: GetOpportunitiesOfLead answered without a type"
        + (f" (item keys: {', '.join(keys)})" if keys else ""))


async def _activity_setting(client: LeadSquaredClient, say: Say, event: int | None) -> None:
    if event is None:
        say("probe activity_setting: cannot tell until the chat activity type exists (the "
            "first sync creates it)")
        return
    try:
        setting = await client.activities.setting(event)
    except LeadSquaredError as exc:
        say(f"probe activity_setting: cannot tell: GetActivitySetting failed ({exc.message})")
        return
    keys = ", ".join(sorted(setting))
    say(f"probe activity_setting: attachments_key: AllowAttachments = "
        f"{setting['AllowAttachments']} (keys: {keys})" if "AllowAttachments" in setting else
        f"probe activity_setting: documented: no AllowAttachments key (keys: {keys})")


async def _phone_matching(client: LeadSquaredClient, say: Say, sample: dict | None,
                          country: object) -> None:
    """Look one lead's stored number up in each form: which forms find it."""
    stored = next((sample.get(f) for f in ("Phone", "Mobile") if sample and sample.get(f)),
                  None)
    number = _e164(stored, country)
    if not number:
        say("probe phone_match: cannot tell: no lead with a phone number to look up")
        return
    code_form, national = lookup_candidates(number)[:2]
    hits = {form: await _finds(client, form, sample["ProspectID"])
            for form in (code_form, national, "+" + code_form)}
    squashed = re.sub(r"[\s-]", "", stored)
    if hits[code_form] is True and hits[national] is True:
        match = "normalised: digits with and without the country code both find it"
    elif any(hits[form] is True and form == squashed for form in hits):
        match = "exact: only the form equal to the stored value finds it"
    else:
        match = "unclear: no digits form found it"
    say(f"probe phone_match: {match} (stored {stored!r}; {_shown(hits)})")
    plus = hits["+" + code_form]
    verdict = ("accepted" if plus is True else "refused" if isinstance(plus, str)
               else "no_match")
    say(f"probe phone_plus: {verdict}: a leading '+' "
        + {"accepted": "is accepted", "refused": f"is refused ({plus})",
           "no_match": "finds nothing"}[verdict])


async def _finds(client: LeadSquaredClient, form: str, lead: str) -> bool | str:
    """True when looking `form` up finds the lead; the refusal's text when refused."""
    try:
        return any(str(row.get("ProspectID")) == lead for row in
                   await client.leads.by_phone(form))
    except LeadSquaredError as exc:
        if exc.kind != "rejected":
            raise
        return exc.message


async def _recent_sort(client: LeadSquaredClient, say: Say) -> None:
    """Ask Leads.RecentlyModified for a few leads by ModifiedOn both ways, and by
    ProspectAutoId: sorting as asked shows in the times, unless the leads were modified
    in the order they were created (then the account cannot show it)."""
    newest = await _ordered(client, "ModifiedOn", newest_first=True)
    oldest = await _ordered(client, "ModifiedOn", newest_first=False)
    created = await _ordered(client, "ProspectAutoId", newest_first=True)
    times_desc, times_asc = [t for _, t in newest], [t for _, t in oldest]
    if len(set(times_desc + times_asc)) < 2:
        say("probe recent_sort: cannot tell: fewer than two leads modified at different times")
    elif times_desc != sorted(times_desc, reverse=True) or times_asc != sorted(times_asc):
        say(f"probe recent_sort: ignored: the order does not follow ModifiedOn (newest first "
            f"asked: {times_desc}; oldest first asked: {times_asc})")
    elif [i for i, _ in newest] == [i for i, _ in created]:
        say("probe recent_sort: cannot tell: the newest leads were modified in the order they "
            "were created (the sink reads correctly either way)")
    else:
        say("probe recent_sort: documented: Direction \"1\" gives the most recently "
            "modified first")


async def _ordered(client: LeadSquaredClient, column: str,
                   newest_first: bool) -> list[tuple[str, str]]:
    """(id, ModifiedOn) of a few leads in the order asked."""
    answer = await client.leads.recently_modified(*EVERYTHING, SAMPLE_COLUMNS, page_size=5,
                                                  sort=column, newest_first=newest_first)
    return [(str(p.get("ProspectID")), str(p.get("ModifiedOn") or "")[:19])
            for p in map(_props, answer.get("Leads") or [])]


async def _sample(client: LeadSquaredClient) -> dict | None:
    """The most recently modified lead with a phone number, else any lead, else None."""
    until = lsq_datetime(datetime.now(UTC))
    answer = await client.leads.recently_modified(EVERYTHING[0], until, SAMPLE_COLUMNS,
                                                  page_size=25)
    leads = [_props(lead) for lead in answer.get("Leads") or []]
    return next((lead for lead in leads if lead.get("Phone") or lead.get("Mobile")),
                leads[0] if leads else None)


def _props(lead: dict) -> dict:
    props = lead.get("LeadPropertyList")
    if isinstance(props, list):
        return {p.get("Attribute"): p.get("Value") for p in props if isinstance(p, dict)}
    return lead


def _e164(stored: object, country: object) -> str | None:
    """A stored Phone/Mobile as E.164: with its own country code, else the account's."""
    if not isinstance(stored, str):
        return None
    digits = re.sub(r"\D", "", stored)
    text = stored.strip()
    if text.startswith(("+", "00")):
        forms = ["+" + (digits[2:] if text.startswith("00") else digits)]
    else:  # national (the account's country), or the country code without '+'
        forms = [f"+{country or ''}{digits.lstrip('0')}", "+" + digits]
    valid = [f for f in forms if _valid(f)]
    return next(iter(valid or [f for f in forms if lookup_candidates(f)]), None)


def _valid(text: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, None))
    except phonenumbers.NumberParseException:
        return False


def _shown(hits: dict[str, bool | str]) -> str:
    return ", ".join(f"{form} {'finds it' if hit is True else 'refused' if isinstance(hit, str) else 'nothing'}"  # noqa: E501
                     for form, hit in hits.items())
