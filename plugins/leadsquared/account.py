"""What the sink learns about the account once per start: host, activity type, owner."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from bridge import Metrics
from plugins.leadsquared.activity_type import resolve_event
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.config import SIMULATOR, LeadSquaredConfig, files_base
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.ratelimit import RateLimiter, parse_rate

logger = logging.getLogger(__name__)


class Endpoint(Protocol):
    """Something that serves the API for the sink: the bundled simulator (its own package,
    started by the plugin's wiring for `host: simulator`, never imported by the sink)."""

    name: str

    async def open(self) -> str:
        """Start it; its base URL."""

    async def close(self) -> None: ...


@dataclass
class Account:
    """The account as one start of the sink found it.

    client: the API; event: the chat activity type's code; tz: the account's time zone
    (transcript times); app_url: the web app's base URL (lead links), if known;
    files_base: where File Upload goes; allow_attachments: the type's Allow Attachments
    (unknown counts as allowed); owner_email: the user ByOpportunityId rows are owned by
    (None: opportunity posts go singly); business_field: the type's field naming the
    business number and rep, None when the type has no such field (or it is off).
    """

    client: LeadSquaredClient
    event: int
    tz: tzinfo
    app_url: str | None
    files_base: str
    allow_attachments: bool
    owner_email: str | None
    business_field: str | None = None


async def open_account(client: LeadSquaredClient, settings: LeadSquaredConfig,
                       base_url: str) -> Account:
    """Read the keys' user, find (or create) the activity type, read its settings."""
    user = await client.users.by_access_key()
    event = await resolve_event(client, settings.activity_type, settings.activity_event,
                                settings.business_field)
    app = (user.get("LSQCommonServiceURLs") or {}).get("app")
    scheme = base_url.split("://", 1)[0]
    setting = await type_setting(client, event)
    return Account(client, event, zone(user.get("TimeZone")),
                   f"{scheme}://{app}" if app else None,
                   files_base(base_url, settings.files_host),
                   allows_attachments(setting),
                   await owner_email(client, settings, user),
                   has_field(setting, settings.business_field))


def client_factory(settings: LeadSquaredConfig, limiter: RateLimiter,
                   bulk_limiter: RateLimiter, metrics: Metrics | None,
                   sink: str) -> Callable[[str], LeadSquaredClient]:
    """base URL -> a client of the account on the sink's budgets."""
    _, per = parse_rate(settings.rate_limit)

    def make(base: str) -> LeadSquaredClient:
        # Back off in step with the account's rate window: a refused call waits one window
        # (5 s at the default 10/5s), other transient failures a fifth of it, then doubling.
        return LeadSquaredClient(base, settings.access_key, settings.secret_key,
                                 limiter=limiter, timeout=settings.timeout,
                                 backoff_base=per / 5, metrics=metrics, sink=sink,
                                 bulk_limiter=bulk_limiter)
    return make


async def base_url(settings: LeadSquaredConfig, endpoint: Endpoint | None,
                   client: Callable[[str], LeadSquaredClient]) -> str:
    """The API base URL: the endpoint's, the configured host, or discovered (host: auto)."""
    if endpoint is not None:
        return await endpoint.open()
    if settings.host == SIMULATOR:
        raise RuntimeError("plugins.leadsquared.host is 'simulator' but nothing runs it: "
                           "the plugin's wiring starts it (bridge run, bridge demo)")
    if settings.host != "auto":
        return settings.host
    probe = client(settings.discovery_url)
    try:
        return await discover_host(probe, settings.discovery_url)
    finally:
        await probe.close()


async def discover_host(probe: LeadSquaredClient, discovery_url: str) -> str:
    """The account's API host, as UserByAccessKey.Get names it (works on any region)."""
    user = await probe.users.by_access_key()
    api = (user.get("LSQCommonServiceURLs") or {}).get("api")
    if not api:
        raise RuntimeError("UserByAccessKey.Get returned no API host; set host explicitly")
    return f"{discovery_url.split('://', 1)[0]}://{api}"


async def owner_email(client: LeadSquaredClient, settings: LeadSquaredConfig,
                      user: dict) -> str | None:
    """ActivityOwnerEmail for ByOpportunityId rows: configured, else the keys' user looked
    up by id (User/Retrieve/ByUserId's EmailAddress). Never UserByAccessKey.Get's own
    EmailAddress: its documented sample has it null [DOC:user-authentication]."""
    if settings.owner_email:
        return settings.owner_email
    if not user.get("Id") or settings.opportunities is False or not settings.bulk:
        return None  # none needed: no bulk posts on opportunities
    try:
        found = await client.users.by_id(str(user["Id"]))
    except LeadSquaredError as exc:
        logger.warning("could not look up the access key's user (%s): opportunity posts go "
                       "one by one; set plugins.leadsquared.owner_email to post them in bulk",
                       exc)
        return None
    email = (found or {}).get("EmailAddress")
    return email if isinstance(email, str) and "@" in email else None


async def type_setting(client: LeadSquaredClient, event: int) -> dict | None:
    """The type's settings (GetActivitySetting), None when they cannot be read."""
    try:
        return await client.activities.setting(event)
    except LeadSquaredError as exc:
        logger.warning("could not read the activity type's settings: %s", exc)
        return None


def allows_attachments(setting: dict | None) -> bool:
    """The type's AllowAttachments; unknown (not said, or unreadable) counts as allowed,
    and Attachment/Add's refusal is then the attachment's dead letter, with the reason."""
    allowed = (setting or {}).get("AllowAttachments")
    if allowed is not None and str(allowed) not in ("1", "True", "true"):
        logger.warning("the activity type does not allow attachments: media files stay in "
                       "the bridge (turn on Allow Attachments in LeadSquared)")
        return False
    return True


def has_field(setting: dict | None, field: str | None) -> str | None:
    """`field` when the type defines it; else None, said once (a post naming a field the
    type lacks is refused, so the activity names number and rep in its header only)."""
    if not field:
        return None
    names = {str(f.get("SchemaName")) for f in (setting or {}).get("Fields") or []
             if isinstance(f, dict)}
    if field in names:
        return field
    logger.warning("the activity type has no field %s: the business number and rep are named "
                   "in each note's header only (add a String field %s to the type, or set "
                   "plugins.leadsquared.business_field)", field, field)
    return None


def zone(name: object) -> tzinfo:
    """The keys' user's TimeZone (an IANA name, reference §1), read liberally: spaces and
    letter case aside; any other answer (none, a number, a name this machine does not
    know) is UTC, said in a warning, never a sink that cannot start."""
    if isinstance(name, str) and name.strip():
        text = name.strip()
        try:
            return ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
        folded = {key.casefold(): key for key in available_timezones()}.get(text.casefold())
        if folded:
            return ZoneInfo(folded)
    logger.warning("LeadSquared names the user's time zone %r, which is no time zone this "
                   "machine knows: transcript lines show UTC times (set the user's time "
                   "zone in LeadSquared, e.g. Asia/Kolkata)", name)
    return UTC
