"""`bridge leadsquared check`: read-only checks of an account, in plain words."""

from __future__ import annotations

from collections.abc import Callable

from plugins.leadsquared.activity_type import FIELD_DEFINITIONS, FIELDS
from plugins.leadsquared.client import LeadSquaredClient, LeadSquaredError
from plugins.leadsquared.config import SIMULATOR, LeadSquaredConfig
from plugins.leadsquared.leads import find_lead
from plugins.leadsquared.opportunities import opportunity_types
from plugins.leadsquared.phones import lookup_candidates

HINTS = {
    "auth": " (copy both keys from LeadSquared: My Account > Settings > API and Webhooks >"
            " API Access Keys, into plugins.leadsquared.access_key and secret_key)",
    "transient": " (the host did not answer properly: check plugins.leadsquared.host)",
}


async def run_check(cfg: LeadSquaredConfig, say: Callable[[str], None],
                    phone: str | None = None) -> bool:
    """Print one line per check; True when a sync could start. Changes nothing (reads
    only: the phone probe looks `phone` up, and a number that must match nothing)."""
    if cfg.host == SIMULATOR:
        say("info host is 'simulator': chats go to the bundled simulator, not to LeadSquared;"
            " set plugins.leadsquared.host, access_key and secret_key for a real account")
        return True
    base = cfg.host if cfg.host != "auto" else cfg.discovery_url
    client = LeadSquaredClient(base, cfg.access_key, cfg.secret_key, timeout=cfg.timeout,
                               max_retries=1)
    try:
        user = await client.user_by_access_key()
        say(f"ok   keys accepted (user {user.get('EmailAddress') or user.get('Id')}, "
            f"role {user.get('Role', '?')}, timezone {user.get('TimeZone', '?')})")
        api = (user.get("LSQCommonServiceURLs") or {}).get("api")
        if cfg.host == "auto":
            say(f"ok   host auto: API host is {api}")
        elif api and api not in cfg.host:
            say(f"warn host {cfg.host} differs from the account's API host {api}")
        else:
            say(f"ok   host {cfg.host}")
        types = await client.activity_types()
        ok = await _check_type(client, cfg, say, types)
        _check_opportunities(cfg, say, types)
        return await _probe_phones(client, say, phone) and ok
    except LeadSquaredError as exc:
        say(f"FAIL {exc.kind}: {exc.message}" + HINTS.get(exc.kind, ""))
        return False
    finally:
        await client.close()


async def _check_type(client: LeadSquaredClient, cfg: LeadSquaredConfig,
                      say: Callable[[str], None], rows: list[dict]) -> bool:
    types = {str(t.get("ActivityEvent")): t.get("ActivityEventName") for t in rows}
    if cfg.activity_event is not None:
        if str(cfg.activity_event) not in types:
            say(f"FAIL activity_event {cfg.activity_event} does not exist in this account")
            return False
        say(f"ok   activity event {cfg.activity_event} ({types[str(cfg.activity_event)]})")
        await _type_settings(client, int(cfg.activity_event), say)
        return True
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
    return True


async def _type_settings(client: LeadSquaredClient, code: int, say: Callable[[str], None]) -> None:
    """The type's fields and whether it allows attachments (GetActivitySetting)."""
    try:
        setting = await client.activity_setting(code)
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
        say("info attachments: the account did not say whether this type allows them")
    elif str(allowed) in ("1", "True", "true"):
        say("ok   attachments allowed on this type")
    else:
        say("warn attachments are not allowed on this type: media files are held in the "
            "bridge (the transcript says so); turn on Allow Attachments in LeadSquared's "
            "activity type settings to attach them")


def _check_opportunities(cfg: LeadSquaredConfig, say: Callable[[str], None],
                         rows: list[dict]) -> None:
    """Which opportunity types the sink would ask for (config, or found in the account)."""
    if cfg.opportunities is False:
        say("info opportunities: off (opportunities: false)")
        return
    names = {int(t["ActivityEvent"]): t.get("ActivityEventName") for t in rows
             if str(t.get("ActivityEvent", "")).isdigit()}
    found = opportunity_types(rows)
    configured = None if cfg.opportunities is True else cfg.opportunities.types
    shown = ", ".join(f"{c} ({names.get(c, '?')})" for c in configured or found)
    if configured:
        unknown = [c for c in configured if c not in names]
        say(f"ok   opportunity types from config: {shown}")
        if unknown:
            say(f"warn opportunity type(s) {unknown} are not among this account's activity "
                "types: check plugins.leadsquared.opportunities.types")
    elif found:
        say(f"ok   opportunity types found: {shown} (each asked for per lead)")
    else:
        say("info no opportunity types found: activities go on leads only")


async def _probe_phones(client: LeadSquaredClient, say: Callable[[str], None],
                        phone: str | None) -> bool:
    """A lookup of `phone` (if given) and of a number that must match nothing."""
    ok = True
    if phone:
        if not lookup_candidates(phone):
            say(f"FAIL --phone {phone!r} is not a phone number in E.164 (e.g. +919876543210)")
            return False
        lead = await find_lead(client, phone)
        say(f"ok   phone lookup: {phone} is lead {lead}" if lead else
            f"info phone lookup: no lead has {phone} (tried "
            f"{', '.join(lookup_candidates(phone))}, then a quick search)")
    else:
        say("info phone lookup: pass --phone <a lead's number> to test it")
    control = NEGATIVE_CONTROL
    found = await client.leads_by_phone(control)
    if found:
        say(f"FAIL phone lookup of {control}, a number no lead can have, answered "
            f"{len(found)} lead(s): the lookup is not filtering by phone")
        ok = False
    else:
        say(f"ok   negative control: {control} matches no lead")
    return ok


# Digits only (as the lookup wants), a valid length, and no real subscriber: +91 00000 00000.
NEGATIVE_CONTROL = "+910000000000"
