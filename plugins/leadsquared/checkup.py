"""`bridge leadsquared check`: read-only checks of an account, in plain words.

Nothing is written: only reads are called (the POST ones too are reads: Leads.Get-style
searches and lists). `--probe` adds, for each guess the sink depends on, which reading
this account shows (plugins/leadsquared/probe.py).
"""

from __future__ import annotations

from collections.abc import Callable

from plugins.leadsquared.account import owner_email
from plugins.leadsquared.activity_type import FIELD_DEFINITIONS, FIELDS
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.config import SIMULATOR, LeadSquaredConfig
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.leads import find_lead
from plugins.leadsquared.opportunities import NONE_FOUND, opportunity_types, rule_of
from plugins.leadsquared.owners import Owners
from plugins.leadsquared.phones import lookup_candidates
from plugins.leadsquared.probe import probe_account, sample_lead
from plugins.leadsquared.ratelimit import RateLimiter, parse_rate

Say = Callable[[str], None]
HINTS = {
    "auth": " (copy both keys from LeadSquared: My Account > Settings > API and Webhooks >"
            " API Access Keys, into plugins.leadsquared.access_key and secret_key)",
    "transient": " (the host did not answer properly: check plugins.leadsquared.host)",
}
# Digits only (as the lookup wants), a valid length, and no real subscriber: +91 00000 00000.
NEGATIVE_CONTROL = "910000000000"


async def run_check(cfg: LeadSquaredConfig, say: Say, phone: str | None = None,
                    probe: bool = False) -> bool:
    """Print one line per check; True when a sync could start. Changes nothing."""
    if cfg.host == SIMULATOR:
        say("info host is 'simulator': chats go to the bundled simulator, not to LeadSquared;"
            " set plugins.leadsquared.host, access_key and secret_key for a real account")
        return True
    base = cfg.host if cfg.host != "auto" else cfg.discovery_url
    client = LeadSquaredClient(base, cfg.access_key, cfg.secret_key, timeout=cfg.timeout,
                               max_retries=1, limiter=RateLimiter(*parse_rate(cfg.rate_limit)))
    try:
        user = await client.users.by_access_key()
        _check_host(cfg, say, user)
        types = await client.activities.types()
        code, ok = await _check_type(client, cfg, say, types)
        await _check_owner(client, cfg, say, user)
        ok = await _check_reps(client, cfg, say) and ok
        lead = await find_lead(client, phone) if phone and lookup_candidates(phone) else None
        await _check_opportunities(client, cfg, say, types, lead)
        ok = await _check_phones(client, say, phone, lead) and ok
        if probe:
            await probe_account(client, say, user, types, code, lead)
        return ok
    except LeadSquaredError as exc:
        say(f"FAIL {exc.kind}: {exc.message}" + HINTS.get(exc.kind, ""))
        return False
    finally:
        await client.close()


def _check_host(cfg: LeadSquaredConfig, say: Say, user: dict) -> None:
    say(f"ok   keys accepted (user {user.get('Name') or user.get('Id')}, "
        f"role {user.get('Role', '?')}, timezone {user.get('TimeZone', '?')})")
    api = (user.get("LSQCommonServiceURLs") or {}).get("api")
    if cfg.host == "auto":
        say(f"ok   host auto: API host is {api}")
    elif api and api not in cfg.host:
        say(f"warn host {cfg.host} differs from the account's API host {api}")
    else:
        say(f"ok   host {cfg.host}")


async def _check_type(client: LeadSquaredClient, cfg: LeadSquaredConfig, say: Say,
                      rows: list[dict]) -> tuple[int | None, bool]:
    """(the chat type's code if it exists, whether a sync could start)."""
    types = {str(t.get("ActivityEvent")): t.get("ActivityEventName") for t in rows}
    if cfg.activity_event is not None:
        if str(cfg.activity_event) not in types:
            say(f"FAIL activity_event {cfg.activity_event} does not exist in this account")
            return None, False
        say(f"ok   activity event {cfg.activity_event} ({types[str(cfg.activity_event)]})")
        await _type_settings(client, int(cfg.activity_event), say)
        return int(cfg.activity_event), True
    match = [code for code, name in types.items()
             if (name or "").lower() == cfg.activity_type.lower()]
    if match:
        say(f"ok   activity type {cfg.activity_type!r} exists (event {match[0]})")
        await _type_settings(client, int(match[0]), say)
    else:
        fields = ", ".join(f"{f['SchemaName']} {f['DisplayName']}" for f in FIELD_DEFINITIONS)
        say(f"info activity type {cfg.activity_type!r} not found: the first sync would create "
            f"it with fields {fields} (all String), attachments allowed")
    say("info unknown numbers: " + ("a lead is created (create_leads: true)" if cfg.create_leads
                                    else "held until a lead exists (create_leads: false)"))
    return (int(match[0]) if match else None), True


async def _type_settings(client: LeadSquaredClient, code: int, say: Say) -> None:
    """The type's fields and whether it allows attachments (GetActivitySetting)."""
    try:
        setting = await client.activities.setting(code)
    except LeadSquaredError as exc:
        say(f"warn could not read the settings of activity event {code}: {exc.message}")
        return
    fields = {f.get("SchemaName"): f for f in setting.get("Fields") or []}
    listed = ", ".join(f"{name} {f.get('DisplayName', '')} ({f.get('DataType', '?')})"
                       for name, f in fields.items())
    say(f"info fields: {listed or 'none'}")
    missing = [name for name in FIELDS.values() if name not in fields]
    if missing:
        say(f"warn the type lacks {', '.join(missing)}: add them as String fields (the "
            f"idempotency key is {FIELDS['key']}; without it a retry can post twice)")
    allowed = setting.get("AllowAttachments")
    if allowed is None:
        say("info attachments: the account did not say whether this type allows them (the "
            "documented answer has no such setting): files are attached, and a refusal is "
            "the file's own dead letter")
    elif str(allowed) in ("1", "True", "true"):
        say("ok   attachments allowed on this type")
    else:
        say("warn attachments are not allowed on this type: media files are held in the "
            "bridge (the transcript says so); turn on Allow Attachments in LeadSquared's "
            "activity type settings to attach them")


async def _check_owner(client: LeadSquaredClient, cfg: LeadSquaredConfig, say: Say,
                       user: dict) -> None:
    """Who bulk opportunity posts would be owned by (ByOpportunityId needs an email)."""
    if cfg.opportunities is False or not cfg.bulk:
        return
    email = await owner_email(client, cfg, user)
    source = "owner_email" if cfg.owner_email else "the key's user, looked up by id"
    say(f"ok   bulk opportunity posts are owned by {email} ({source})" if email else
        "info no owner email found (User/Retrieve/ByUserId gave none): opportunity "
        "activities are posted one by one; set plugins.leadsquared.owner_email to bulk them")


async def _check_reps(client: LeadSquaredClient, cfg: LeadSquaredConfig, say: Say) -> bool:
    """Which business number maps to whom (owners); every mapped user must exist and be
    active (Users.Get's StatusCode), else that number's chats follow owner_fallback."""
    if cfg.owners is None:
        say("info owners: not set: activities are owned by the API user (map each business "
            "number to its rep's email under plugins.leadsquared.owners, or owners: auto)")
        return True
    lines = await Owners(client, cfg).start()
    for fine, line in lines:
        say(f"{'ok  ' if fine else 'FAIL'} owners: {line}")
    say(f"info owners: numbers mapped to nobody follow owner_fallback {cfg.owner_fallback} "
        f"({'the lead owner' if cfg.owner_fallback == 'lead_owner' else 'the API user'})")
    return all(fine for fine, _ in lines)


async def _check_opportunities(client: LeadSquaredClient, cfg: LeadSquaredConfig, say: Say,
                               rows: list[dict], lead: str | None) -> None:
    """Which opportunity types the sink would ask for, and which deals get the chat."""
    rule = rule_of(cfg.opportunities)
    if rule is None:
        say("info opportunities: off (opportunities: false)")
        return
    names = {int(t["ActivityEvent"]): t.get("ActivityEventName") for t in rows
             if str(t.get("ActivityEvent", "")).isdigit()}
    found = opportunity_types(rows)
    shown = ", ".join(f"{c} ({names.get(c, '?')})" for c in rule.types or found)
    statuses = ", ".join(rule.status) if rule.status else "any status"
    say(f"info opportunity posts go to deals with status {statuses} (opportunities.status)")
    if rule.types:
        say(f"ok   opportunity types from config: {shown}")
        if unknown := [c for c in rule.types if c not in names]:
            say(f"warn opportunity type(s) {unknown} are not among this account's activity "
                "types: check plugins.leadsquared.opportunities.types")
    elif found:
        say(f"ok   opportunity types found: {shown} (each asked for per lead)")
    elif await _any_type_answers(client, lead):
        say("ok   opportunity types: none listed, but GetOpportunitiesOfLead answers without "
            "a type: every type is asked for at once")
    else:
        say(f"warn {NONE_FOUND}")


async def _any_type_answers(client: LeadSquaredClient, lead: str | None) -> bool:
    """Whether GetOpportunitiesOfLead answers without a type (asked about a real lead)."""
    try:
        lead = lead or await sample_lead(client)
        if lead is None:
            return False
        await client.opportunities.of_lead(lead, None, page_size=1)
    except LeadSquaredError:
        return False
    return True


async def _check_phones(client: LeadSquaredClient, say: Say, phone: str | None,
                        lead: str | None) -> bool:
    """A lookup of `phone` (if given) and of a number that must match nothing."""
    ok = True
    if phone:
        if not lookup_candidates(phone):
            say(f"FAIL --phone {phone!r} is not a phone number in E.164 (e.g. +919876543210)")
            return False
        say(f"ok   phone lookup: {phone} is lead {lead}" if lead else
            f"info phone lookup: no lead has {phone} (tried "
            f"{', '.join(lookup_candidates(phone))}, then a quick search)")
    else:
        say("info phone lookup: pass --phone <a lead's number> to test it")
    found = await client.leads.by_phone(NEGATIVE_CONTROL)
    if found:
        say(f"FAIL phone lookup of {NEGATIVE_CONTROL}, a number no lead can have, answered "
            f"{len(found)} lead(s): the lookup is not filtering by phone")
        ok = False
    else:
        say(f"ok   negative control: {NEGATIVE_CONTROL} matches no lead")
    return ok
