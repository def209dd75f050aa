"""`bridge leadsquared check`: read-only checks of an account, in plain words."""

from __future__ import annotations

from collections.abc import Callable

from plugins.leadsquared.activity_type import FIELD_DEFINITIONS
from plugins.leadsquared.client import LeadSquaredClient, LeadSquaredError
from plugins.leadsquared.config import SIMULATOR, LeadSquaredConfig

HINTS = {
    "auth": " (copy both keys from LeadSquared: My Account > Settings > API and Webhooks >"
            " API Access Keys, into plugins.leadsquared.access_key and secret_key)",
    "transient": " (the host did not answer properly: check plugins.leadsquared.host)",
}


async def run_check(cfg: LeadSquaredConfig, say: Callable[[str], None]) -> bool:
    """Print one line per check; True when a sync could start. Changes nothing."""
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
        return await _check_type(client, cfg, say)
    except LeadSquaredError as exc:
        say(f"FAIL {exc.kind}: {exc.message}" + HINTS.get(exc.kind, ""))
        return False
    finally:
        await client.close()


async def _check_type(client: LeadSquaredClient, cfg: LeadSquaredConfig,
                      say: Callable[[str], None]) -> bool:
    types = {str(t.get("ActivityEvent")): t.get("ActivityEventName")
             for t in await client.activity_types()}
    if cfg.activity_event is not None:
        if str(cfg.activity_event) not in types:
            say(f"FAIL activity_event {cfg.activity_event} does not exist in this account")
            return False
        say(f"ok   activity event {cfg.activity_event} ({types[str(cfg.activity_event)]})")
        return True
    match = [code for code, name in types.items()
             if (name or "").lower() == cfg.activity_type.lower()]
    if match:
        say(f"ok   activity type {cfg.activity_type!r} exists (event {match[0]})")
    else:
        fields = ", ".join(f"{f['SchemaName']} {f['DisplayName']}" for f in FIELD_DEFINITIONS)
        say(f"info activity type {cfg.activity_type!r} not found: the first sync would create "
            f"it with fields {fields}")
    say("info unknown numbers: " + ("a lead is created (create_leads: true)" if cfg.create_leads
                                    else "held until a lead exists (create_leads: false)"))
    return True
