"""`plugins.leadsquared`: validated settings of the LeadSquared sink."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge import Duration, Limits, SinkSettings

DISCOVERY_URL = "https://api.leadsquared.com"  # UserByAccessKey.Get answers on any region
SIMULATOR = "simulator"  # host value: run the bundled simulator in-process
FILTER_HINTS = {
    "types": " (types are opportunity type codes, e.g. types: [12000, 12001])",
    "status": " (statuses are Open, Won, Lost, e.g. status: [Open]; `any` for every one)",
    "latest": " (latest is a count, e.g. latest: 1)",
}


class OpportunityFilter(BaseModel):
    """Which of a lead's opportunities also get the chat activity."""

    model_config = ConfigDict(extra="forbid")

    status: list[str] | None = Field(["Open"], min_length=1,
                                     description="statuses that get the chat: [Open] unless "
                                                 "set (LeadSquared's are Open, Won and Lost); "
                                                 "`any` for every status")
    types: list[int] | None = Field(None, min_length=1,
                                    description="opportunity type codes, e.g. [12000]; "
                                                "left out: looked up from the account")
    latest: int | None = Field(None, ge=1, description="only the N most recently modified")

    @field_validator("status", mode="before")
    @classmethod
    def _any_status(cls, value: Any) -> Any:
        """`any` (or null) posts on every status; a single status may be written bare."""
        if value is None or (isinstance(value, str) and value.strip().lower() == "any"):
            return None
        return [value] if isinstance(value, str) else value


class LeadSquaredConfig(SinkSettings):
    """Keys of plugins.leadsquared; sync_interval, backfill_days ... come from SinkSettings."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("auto", description="API base URL, auto (found from the keys), or "
                                          "simulator (the bundled one, for trying it out)")
    access_key: str = Field(min_length=1)
    secret_key: str = Field(min_length=1)
    discovery_url: str = DISCOVERY_URL
    files_host: str | None = Field(
        None, description="where File Upload goes (URL); default: the files host of the API "
                          "host's region (api-in21.leadsquared.com -> files-in21.leadsquared.com),"
                          " or the API host itself for any other host (simulator, proxy)")
    activity_type: str = "WhatsApp Chats"
    activity_event: int | None = Field(None, ge=1, description="fixed event code; skips lookup")
    owner_email: str | None = Field(
        None, pattern=r"^[^@\s]+@[^@\s]+$",
        description="the LeadSquared user (email) opportunity activities posted in bulk are "
                    "owned by (ByOpportunityId's mandatory ActivityOwnerEmail); default: the "
                    "access key's user, looked up by id. Without one they go one by one")
    create_leads: bool = False
    lead_source: str = "WhatsApp"
    user_id_field: str | None = Field(
        None, pattern=r"^mx_[A-Za-z0-9_]{1,60}$",
        description="lead field (schema name, e.g. mx_WhatsApp_User_ID) holding the "
                    "WhatsApp business-scoped user id: finds leads of users without a phone "
                    "number, and is filled on leads the bridge creates")
    username_field: str | None = Field(
        None, pattern=r"^mx_[A-Za-z0-9_]{1,60}$",
        description="lead field (schema name) filled with the WhatsApp username on leads "
                    "the bridge creates")
    update_lead_phone: bool = Field(
        False, description="after a WhatsApp number change, write the new number to the "
                           "lead's Mobile (Lead.Update)")
    opportunities: bool | OpportunityFilter = True
    opportunity_cache: Annotated[Duration, Limits(
        0, 86400.0, why_high="an opportunity opened since would miss chats that long",
        example="10m")] = Field(600.0, description="how long a lead's opportunities are "
                                                   "reused before a new lookup")
    granularity: Literal["window", "message"] = "window"
    rate_limit: str = "10/5s"
    bulk: bool = Field(True, description="post lead activities in bulk calls (≤ 25 a call, "
                                         "own budget); false: one call per activity")
    bulk_rate_limit: str | None = Field(
        None, description="bulk call budget; left out: the docs' value for the plan tier "
                          "rate_limit implies (under 10/5s: 1/5s, under 20/5s: 5/5s, else "
                          "10/5s)")
    lead_directory: Literal["auto", "on", "off"] = Field(
        "auto", description="keep a local phone -> lead directory in the buffer (auto: on "
                            "while the account holds at most lead_directory_max leads)")
    lead_directory_max: int = Field(200_000, ge=1, description="largest account (leads) "
                                                                "lead_directory: auto copies")
    lead_directory_refresh: Annotated[Duration, Limits(
        10.0, 86400.0, why_low="every chat would first spend an API call on a refresh",
        why_high="leads created since would be missed that long", example="5m")] = Field(
        300.0, description="how often the directory asks for changed leads")
    unknown_recheck: Annotated[Duration, Limits(
        0, 86400.0, why_high="a chat would wait that long for a lead created since",
        example="10m")] = Field(600.0, description="how long a number that matched no lead "
                                                   "waits before a new search (0: always)")
    note_limit: int = Field(1800, ge=200, le=100_000)
    timeout: Annotated[Duration, Limits(
        1.0, 300.0, why_low="LeadSquared answers take longer: every call would time out",
        why_high="a hung call would hold the drain that long", example="30s")] = 30.0
    business_name: str = Field("Business", description="sender label for outgoing messages "
                                                       "of a number no rep is mapped to")
    owners: dict[str, str] | Literal["auto"] | None = Field(
        None, description="business number (phone_number_id, or E.164 display number) -> "
                          "LeadSquared user email owning that number's chat activities; "
                          "auto: match the numbers to the users' phone numbers")
    owner_fallback: Literal["lead_owner", "api_user"] = Field(
        "lead_owner", description="owner of activities of a number `owners` does not map: "
                                  "the lead's owner, or the API user")
    business_field: str | None = Field(
        "mx_Custom_6", pattern=r"^mx_[A-Za-z0-9_]{1,60}$",
        description="activity field (schema name) naming the business number and rep; "
                    "null: none")

    @field_validator("owners", mode="before")
    @classmethod
    def _owners(cls, value: Any) -> Any:
        """`auto`, or a map whose keys are phone_number_ids (digits) or E.164 numbers (+…),
        each to an email; a bad entry names its own key and the fix."""
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None if value is None else "auto"
        if not isinstance(value, dict):
            raise ValueError(f"{value!r} is not valid: use auto, or a map of business number "
                             "(phone_number_id or +E.164) to user email, e.g. "
                             "{\"+919812345678\": priya@example.com}")
        owners: dict[str, str] = {}
        given: dict[str, tuple[str, str]] = {}  # each form of a number -> (key, email)
        for key, email in value.items():
            number, email = owner_key(str(key)), owner_email_of(str(key), email)
            for form in owner_forms(number):
                first, other = given.setdefault(form, (str(key), email))
                if other.casefold() != email.casefold():
                    raise ValueError(f"{first} and {key} are the same number, mapped "
                                     "to two users: keep one of them")
            owners[number] = email
        return owners

    @field_validator("access_key", "secret_key")
    @classmethod
    def _key(cls, value: str) -> str:
        """A key of only spaces is none at all (HTTP headers drop them): refused here,
        naming the key, not later as an unreadable header error on the first call."""
        if not value.strip():
            raise ValueError("is only spaces (paste the key from LeadSquared: Settings > "
                             "API and Webhooks)")
        if value != value.strip():
            raise ValueError("has spaces around it: HTTP drops them from a header, so "
                             "LeadSquared would never see this key (remove them)")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value in ("auto", SIMULATOR):
            return value
        if not value.startswith(("http://", "https://")):
            value = "https://" + value
        return value.rstrip("/")

    @field_validator("files_host")
    @classmethod
    def _files_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            value = "https://" + value
        return value.rstrip("/")

    @field_validator("opportunities", mode="before")
    @classmethod
    def _opportunities(cls, value: Any) -> Any:
        """true, false, or a filter; a bad filter names its own key and the fix."""
        if isinstance(value, bool) or value is None:
            return True if value is None else value
        if not isinstance(value, dict):
            raise ValueError(f"{value!r} is not valid: use true, false, or "
                             "{types: [12000, ...], status: [Open], latest: N}")
        try:
            return OpportunityFilter.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                raise ValueError(f"{key}: unknown key (allowed: latest, status, types)") from None
            hint = FILTER_HINTS.get(key.split(".", 1)[0], "")
            raise ValueError(f"{key}: {err.get('input')!r} is not valid: {err['msg']}{hint}"
                             ) from None

    @field_validator("rate_limit", "bulk_rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        from plugins.leadsquared.ratelimit import parse_rate

        if value is not None:
            parse_rate(value)  # raises ValueError with the accepted forms
        return value


def owner_key(key: str) -> str:
    """An owners key as the sink looks it up: E.164 for a display number (with `+`, or
    the international prefix `00`), the phone_number_id's digits as given. Digits with a
    leading 0 are a phone number, never an id: taken as one, they would match no chat and
    the rep's chats would silently go to owner_fallback."""
    text = key.strip()
    digits = re.sub(r"[\s().-]", "", text)
    if digits.startswith("00") and digits[2:].isdigit():
        text = "+" + digits[2:]  # the international prefix (0091 98…): never an id
    elif text.isdigit() and text.startswith("0"):
        raise ValueError(f"{key}: a number with a trunk 0 (no phone_number_id starts with "
                         "0): write the display number in E.164 (+ then country code and "
                         "number), or use its phone_number_id")
    elif text.isdigit():
        return text  # a phone_number_id (WhatsApp's metadata.phone_number_id)
    from plugins.leadsquared.phones import stored_e164

    e164 = stored_e164(text, international=True) if text.startswith("+") else None
    if e164 is None:
        raise ValueError(f"{key}: not a business number: use its phone_number_id (digits) "
                         "or its display number in E.164 (+ then country code and number)")
    return e164


def owner_forms(key: str) -> list[str]:
    """The forms a business number of the owners map may take: the E.164 number and its
    twins (Mexico's 1, Brazil's ninth digit...), each also without its '+' (YAML reads an
    unquoted +91... as an integer; a phone_number_id's digits are left as they are)."""
    from plugins.leadsquared.phones import variant_numbers

    numbers = variant_numbers(key if key.startswith("+") else "+" + key)
    if not key.startswith("+") and key not in [n[1:] for n in numbers]:
        return [key]  # digits that are no phone number: a phone_number_id only
    return [key, *numbers, *(n[1:] for n in numbers)]


def owner_email_of(key: str, email: Any) -> str:
    if not isinstance(email, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+",
                                                     email.strip()):
        raise ValueError(f"{key}: {email!r} is not an email address (the LeadSquared user "
                         "who owns this number's chats, e.g. priya@example.com)")
    return email.strip()


def files_base(api_base: str, override: str | None = None) -> str:
    """The File Upload base URL: `override`, else the API host's regional files host
    (reference §8: files, files-us11, files-in21, files-ir31), else the API host itself."""
    if override:
        return override
    scheme, _, rest = api_base.partition("://")
    host, sep, tail = rest.partition("/")
    name, colon, port = host.partition(":")
    if name == "api.leadsquared.com":
        name = "files.leadsquared.com"
    elif re.fullmatch(r"api-[a-z]+[0-9]+\.leadsquared\.com", name):
        name = "files-" + name[len("api-"):]
    else:
        return api_base.rstrip("/")
    return f"{scheme}://{name}{colon}{port}"


def bulk_rate(config: LeadSquaredConfig) -> str:
    """The bulk budget: configured, or the docs' bulk limit for the plan tier the ordinary
    limit implies (reference §3: older table 1 bulk call / 5 s on every plan; newer table
    Pro 10/5s -> bulk 5/5s, Super 20/5s -> bulk 10/5s)."""
    if config.bulk_rate_limit is not None:
        return config.bulk_rate_limit
    from plugins.leadsquared.ratelimit import parse_rate

    calls, per = parse_rate(config.rate_limit)
    per_five = calls * 5 / per
    return "1/5s" if per_five < 10 else "5/5s" if per_five < 20 else "10/5s"
