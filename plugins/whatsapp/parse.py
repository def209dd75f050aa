"""WhatsApp Cloud API webhook payloads into provider-neutral messages, statuses and names.

Pure functions, no I/O. Only the envelope is checked strictly (PayloadError, a 400).
Everything inside it degrades instead of raising: odd changes and items are counted in
`ignored_fields["malformed"]`, and a message whose known fields have the wrong shape is
kept as kind "unsupported" with its own object in `raw`, so nothing Meta sent is lost.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import phonenumbers

from bridge import GROUP_PREFIX, Direction, Identity, Message, StatusUpdate
from plugins.whatsapp.content import read_content, unsupported
from plugins.whatsapp.readers import dicts, error_list, items, text_or_none

OBJECT = "whatsapp_business_account"
HISTORY_DECLINED = 2593109  # "History sync is turned off by the business"
LATEST = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime can hold

_DIGITS = re.compile(r"[0-9]+")
_WRITTEN_NUMBER = re.compile(r"\+?[0-9 ().\-]+")  # no letters: phonenumbers reads them as vanity
_FIELD_NAME = re.compile(r"[a-z0-9_]{1,64}")


class Tally(dict[str, int]):
    """Counts by name; a missing name reads 0. A Counter without its Python-level
    __init__, which cost more than the rest of an empty Parsed on every webhook."""

    def __missing__(self, key: str) -> int:
        return 0


@dataclass
class Parsed:
    """What one notification holds.

    messages, statuses: to store. contact_names: conversation key -> profile name
    (contacts[]) or address-book name (smb_app_state_sync). ignored_fields: counts of what
    was acknowledged but not stored, by change field, plus "malformed", "errors" and
    "history_declined". skipped_numbers: messages and statuses of business numbers
    outside the allow-list. identities: who is who (phone, BSUID, username), from
    contacts[], senders, recipients of echoes and statuses, and number or id changes.
    """

    messages: list[Message] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    contact_names: dict[str, str] = field(default_factory=dict)
    identities: list[Identity] = field(default_factory=list)
    ignored_fields: Tally = field(default_factory=Tally)
    skipped_numbers: int = 0

    def add(self, message: Message | None) -> None:
        """Keep a message; None stands for an item that was not an object."""
        if message is None:
            self.ignored_fields["malformed"] += 1
        else:
            self.messages.append(message)


class PayloadError(ValueError):
    """The body is not a WhatsApp Business Account notification; str(e) is the 400 reason."""




class _Contact(NamedTuple):  # tuples: built for every message, and cheaper than dataclasses
    number: str | None
    user_id: str | None
    name: str | None
    parent_user_id: str | None = None
    username: str | None = None

    @property
    def key(self) -> str | None:
        return self.number or self.user_id


class _Change(NamedTuple):
    """What every item of one change shares."""

    source: str
    region: str | None
    account: str
    business: str | None  # display_phone_number, normalised
    entry_time: datetime | None
    contacts: tuple[_Contact, ...] = ()


# -- envelope and routing ----------------------------------------------------------------

def parse_payload(payload: object, *, source: str = "whatsapp", default_region: str | None = None,
                  phone_number_ids: frozenset[str] | None = None) -> Parsed:
    """Messages, statuses and contact names of one webhook notification."""
    parsed = Parsed()
    for entry in _entries(payload):
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            parsed.ignored_fields["malformed"] += 1
            continue
        for change in changes:
            _route(change, entry, parsed, source, default_region, phone_number_ids)
    return parsed


def _entries(payload: object) -> list[Any]:
    if not isinstance(payload, dict):
        raise PayloadError("body is not a JSON object")
    if payload.get("object") != OBJECT:
        raise PayloadError(f'"object" is not "{OBJECT}" (only WhatsApp webhooks are accepted)')
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise PayloadError('"entry" is missing or not a list')
    return entries


def _route(change: object, entry: dict[str, Any], parsed: Parsed, source: str,
           region: str | None, allowed: frozenset[str] | None) -> None:
    """Dispatch on `field` first: the same arrays mean different things under each field."""
    name = change.get("field") if isinstance(change, dict) else None
    if not isinstance(name, str):
        parsed.ignored_fields["malformed"] += 1
        return
    handler = _FIELDS.get(name)
    if handler is None:
        parsed.ignored_fields[name if _FIELD_NAME.fullmatch(name) else "unknown"] += 1
        return
    value = change.get("value")
    if not isinstance(value, dict):
        parsed.ignored_fields["malformed"] += 1
        return
    ctx = _context(value, entry, source, region)
    if allowed is not None and ctx.account not in allowed:
        parsed.skipped_numbers += _item_count(value)
        return
    handler(value, ctx, parsed)


def _context(value: dict[str, Any], entry: dict[str, Any], source: str,
             region: str | None) -> _Change:
    metadata = value.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    account = metadata.get("phone_number_id")
    return _Change(
        source=source, region=region,
        account=account if isinstance(account, str) else "",
        business=normalise_number(metadata.get("display_phone_number"), region),
        entry_time=_time(entry.get("time")),
        contacts=tuple([_contact(c, region) for c in dicts(value.get("contacts"))]),
    )


def _item_count(value: dict[str, Any]) -> int:
    """Messages and statuses a change carries, wherever its field puts them."""
    count = sum(len(items(value.get(k))) for k in ("messages", "statuses", "message_echoes"))
    for chunk in dicts(value.get("history")):
        for thread in dicts(chunk.get("threads")):
            count += len(items(thread.get("messages")))
    return count


# -- change fields -------------------------------------------------------------------------

def _messages_field(value: dict[str, Any], ctx: _Change, parsed: Parsed) -> None:
    """Inbound messages, statuses of our outbound ones, and value-level errors."""
    _remember_contacts(ctx, parsed)
    for obj in items(value.get("messages")):
        message = _inbound(obj, ctx)
        parsed.add(message)
        if message is not None:
            _learn(parsed, _sender(obj, ctx, "from", "from_user_id", "from_parent_user_id"))
            _learn(parsed, _change_of(obj, ctx))
    for obj in items(value.get("statuses")):
        status = _status(obj, ctx)
        if status is None:
            parsed.ignored_fields["malformed"] += 1
        else:
            parsed.statuses.append(status)
            _learn(parsed, _status_person(obj, ctx))
    # Doubt: Meta's fixtures show value-level errors beside a messages[] item; the error
    # objects are counted, never stored, while the messages beside them are still kept.
    _count_errors(value.get("errors"), parsed)


def _echoes_field(value: dict[str, Any], ctx: _Change, parsed: Parsed) -> None:
    """Messages the business sent from the WhatsApp Business app or a linked device."""
    _remember_contacts(ctx, parsed)
    for obj in items(value.get("message_echoes")):
        message = _echo(obj, ctx)
        parsed.add(message)
        if message is not None:
            _learn(parsed, _sender(obj, ctx, "to", "to_user_id", "to_parent_user_id"))


def _history_field(value: dict[str, Any], ctx: _Change, parsed: Parsed) -> None:
    """Backfilled chats; a top-level messages[] here is media of earlier placeholders."""
    for chunk in items(value.get("history")):
        if not isinstance(chunk, dict):
            parsed.add(None)
            continue
        _count_errors(chunk.get("errors"), parsed)
        for thread in items(chunk.get("threads")):
            if not isinstance(thread, dict):
                parsed.add(None)
                continue
            for obj in items(thread.get("messages")):
                parsed.add(_historical(obj, ctx, thread.get("id")))
    # Doubt: M-HIST does not say whether a media follow-up reuses its placeholder's id; if
    # it does, a buffer that dedupes on provider_id keeps the placeholder and drops the media.
    for obj in items(value.get("messages")):
        parsed.add(_historical(obj, ctx, None))
    # Doubt: M-HIST shows the "declined" chunk as a bare value; value-level errors are
    # classified the same way in case Meta sends them there.
    _count_errors(value.get("errors"), parsed)


def _state_sync_field(value: dict[str, Any], ctx: _Change, parsed: Parsed) -> None:
    """Address-book names; `add` also covers edits, `remove` carries no name."""
    for item in items(value.get("state_sync")):
        if not isinstance(item, dict):
            parsed.ignored_fields["malformed"] += 1
            continue
        if item.get("type") != "contact" or item.get("action") != "add":
            continue
        contact = item.get("contact")
        if not isinstance(contact, dict):
            parsed.ignored_fields["malformed"] += 1
            continue
        key = normalise_number(contact.get("phone_number"), ctx.region)
        name = text_or_none(contact.get("full_name")) or text_or_none(contact.get("first_name"))
        if key and name:
            parsed.contact_names[key] = name


_FIELDS: dict[str, Callable[[dict[str, Any], _Change, Parsed], None]] = {
    "messages": _messages_field,
    "smb_message_echoes": _echoes_field,
    "history": _history_field,
    "smb_app_state_sync": _state_sync_field,
}


def _count_errors(errors: object, parsed: Parsed) -> None:
    """Error objects are acknowledged, never stored; a declined history sync is told apart."""
    for error in items(errors):
        code = error.get("code") if isinstance(error, dict) else None
        declined = code in (HISTORY_DECLINED, str(HISTORY_DECLINED))
        parsed.ignored_fields["history_declined" if declined else "errors"] += 1


# -- contacts and numbers ------------------------------------------------------------------

def normalise_number(raw: str, default_region: str | None) -> str | None:
    """E.164 like "+919876543210", or None when `raw` is not a phone number.

    Bare digits are WhatsApp's own international form and are tried as such first; other
    spellings (and bare digits that fail) are read as national numbers of default_region.
    """
    return _normalised(raw, default_region) if isinstance(raw, str) else None


@functools.lru_cache(maxsize=65536)
def _normalised(raw: str, default_region: str | None) -> str | None:
    """normalise_number's work, cached: customers write again and again (~60 us a parse),
    and one message names its customer up to five times."""
    text = raw.strip()
    if not _WRITTEN_NUMBER.fullmatch(text):
        return None
    if _DIGITS.fullmatch(text) and not text.startswith("0"):
        found = _e164("+" + text, None)
        if found:
            return found
    region = default_region.upper() if default_region and not text.startswith("+") else None
    return _e164(text, region)


def _e164(text: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _customer(number: object, user_id: str | None, e164: str | None) -> str | None:
    """Conversation key: `e164` (the number normalised), else the business-scoped user id,
    else the number as given."""
    raw = number.strip() if isinstance(number, str) else ""
    return e164 or user_id or raw or None


def _contact(obj: dict[str, Any], region: str | None) -> _Contact:
    profile = obj.get("profile")
    profile = profile if isinstance(profile, dict) else {}
    number = normalise_number(obj.get("wa_id"), region)
    return _Contact(number, text_or_none(obj.get("user_id")), text_or_none(profile.get("name")),
                    text_or_none(obj.get("parent_user_id")),
                    text_or_none(profile.get("username")))


def _match(contacts: tuple[_Contact, ...], number: str | None,
           user_id: str | None) -> _Contact | None:
    """The contacts[] entry of this customer; the only entry when none matches."""
    for contact in contacts:
        if (number and contact.number == number) or (user_id and contact.user_id == user_id):
            return contact
    return contacts[0] if len(contacts) == 1 else None


def _remember_contacts(ctx: _Change, parsed: Parsed) -> None:
    for contact in ctx.contacts:
        if contact.key and contact.name:
            parsed.contact_names[contact.key] = contact.name
        _learn(parsed, Identity(contact.number, contact.user_id, contact.parent_user_id,
                                contact.username, contact.name))


# -- who is who: phone <-> BSUID <-> parent BSUID <-> username ------------------------------

def _learn(parsed: Parsed, identity: Identity | None) -> None:
    """Keep an identity that links something: two keys, or a key and a username (a name
    alone reaches the conversation through contact_names)."""
    if identity is None or not identity.keys:
        return
    if len(identity.keys) > 1 or identity.username:
        parsed.identities.append(identity)


def _sender(obj: dict[str, Any], ctx: _Change, number_key: str, user_key: str,
            parent_key: str) -> Identity | None:
    """The customer a message is from (or an echo is to), with its contacts[] entry."""
    number = normalise_number(obj.get(number_key), ctx.region)
    user_id = text_or_none(obj.get(user_key))
    parent = text_or_none(obj.get(parent_key))
    if not (number or user_id or parent):
        return None
    contact = _match(ctx.contacts, number, user_id)
    if contact is not None:
        number = number or contact.number
        user_id = user_id or contact.user_id
        parent = parent or contact.parent_user_id
    return Identity(number, user_id, parent, contact.username if contact else None,
                    contact.name if contact else None)


def _change_of(obj: dict[str, Any], ctx: _Change) -> Identity | None:
    """user_changed_number / user_changed_user_id: the old keys and the new are one person.

    M-SYS/M-CHG: `from` (and from_user_id) name the sender as the message was sent;
    system.wa_id is the new number; system.previous_user_id / previous_parent_user_id
    the ids before the change. A number change also gives a new BSUID (system.user_id
    when Meta sends it).
    """
    system = obj.get("system") if obj.get("type") == "system" else None
    if not isinstance(system, dict):
        return None
    kind = system.get("type")
    if kind not in ("user_changed_number", "user_changed_user_id"):
        return None
    sender = normalise_number(obj.get("from"), ctx.region)
    from_user = text_or_none(obj.get("from_user_id"))
    previous = [text_or_none(system.get("previous_user_id")),
                text_or_none(system.get("previous_parent_user_id"))]
    if kind == "user_changed_number":
        new = normalise_number(system.get("wa_id"), ctx.region)
        user_id = text_or_none(system.get("user_id")) or from_user
        keys = tuple(k for k in (sender, *previous) if k and k not in (new, user_id))
        return Identity(new or sender, user_id, previous=keys) if new or sender else None
    user_id = from_user or text_or_none(system.get("user_id"))
    keys = tuple(k for k in previous if k and k != user_id)
    return Identity(sender, user_id, previous=keys)


def _status_person(obj: dict[str, Any], ctx: _Change) -> Identity | None:
    """The recipient of our message: phone and BSUID (M-ST, SAMPLE); group statuses name
    the participant (recipient_participant_*), whose keys are linked instead."""
    if obj.get("recipient_type") == "group":
        number = normalise_number(obj.get("recipient_participant_id"), ctx.region)
        user_id = text_or_none(obj.get("recipient_participant_user_id"))
        parent = text_or_none(obj.get("recipient_participant_parent_user_id"))
    else:
        number = normalise_number(obj.get("recipient_id"), ctx.region)
        user_id = text_or_none(obj.get("recipient_user_id"))
        parent = text_or_none(obj.get("parent_recipient_user_id"))
    return Identity(number, user_id, parent) if number or user_id or parent else None


# -- messages ------------------------------------------------------------------------------

def _inbound(obj: object, ctx: _Change) -> Message | None:
    if not isinstance(obj, dict):
        return None
    return _message(obj, ctx, Direction.IN, obj.get("from"), text_or_none(obj.get("from_user_id")))


def _echo(obj: object, ctx: _Change) -> Message | None:
    """`to` is the customer; the docs warn it may not match wa_id (e.g. a leading '+')."""
    if not isinstance(obj, dict):
        return None
    return _message(obj, ctx, Direction.OUT, obj.get("to"), text_or_none(obj.get("to_user_id")))


def _historical(obj: object, ctx: _Change, thread: object) -> Message | None:
    """History item: outgoing when `from` is the business number, else incoming."""
    if not isinstance(obj, dict):
        return None
    if ctx.business and normalise_number(obj.get("from"), ctx.region) == ctx.business:
        return _message(obj, ctx, Direction.OUT, obj.get("to"), text_or_none(obj.get("to_user_id")),
                        history=True, thread=thread)
    return _message(obj, ctx, Direction.IN, obj.get("from"), text_or_none(obj.get("from_user_id")),
                    history=True, thread=thread)


def _message(obj: dict[str, Any], ctx: _Change, direction: Direction, number: object,
             user_id: str | None, *, history: bool = False, thread: object = None) -> Message:
    """One message; `number`/`user_id` name the customer, `thread` overrides them."""
    content = read_content(obj)
    e164 = normalise_number(number, ctx.region)
    conversation = (thread is not None
                    and _customer(thread, None, normalise_number(thread, ctx.region))) \
        or _customer(number, user_id, e164)
    if conversation is None:  # nobody to file it under: keep it, visibly odd
        content, conversation = unsupported(obj, malformed=True), ""
    contact = _match(ctx.contacts, e164, user_id)
    user_id = user_id or (contact.user_id if contact else None)
    extra = {**content.extra, **_common_extra(obj, user_id)}
    if ctx.business:  # the business number (E.164) the chat is on: the sink names it
        extra["business_number"] = ctx.business
    system = extra.get("system")
    if isinstance(system, dict) and system.get("type") == "user_changed_number":
        extra["new_number"] = normalise_number(system.get("wa_id"), ctx.region)
    group = text_or_none(obj.get("group_id"))
    if group and conversation:  # a group chat: never filed under its sender
        extra["group_id"] = group
        extra["sender"] = conversation
        conversation = GROUP_PREFIX + group
    sent_at = _time(obj.get("timestamp"))
    if sent_at is None:
        sent_at = ctx.entry_time or datetime.now(UTC)
        extra["timestamp_missing"] = True
    return Message(
        source=ctx.source, provider_id=_provider_id(obj), conversation=conversation,
        account=ctx.account, direction=direction, sent_at=sent_at, kind=content.kind,
        text=content.text, media=content.media, contact_name=contact.name if contact else None,
        reply_to=content.reply_to, history=history, extra=extra, raw=obj,
    )


def _common_extra(obj: dict[str, Any], user_id: str | None) -> dict[str, Any]:
    """Keys any type may carry; read leniently, since `raw` keeps the original anyway."""
    extra: dict[str, Any] = {}
    errors = error_list(obj.get("errors"))
    if errors:
        extra["errors"] = errors
    if isinstance(obj.get("referral"), dict):
        extra["referral"] = obj["referral"]
    history_context = obj.get("history_context")
    if isinstance(history_context, dict) and text_or_none(history_context.get("status")):
        extra["history_status"] = history_context["status"]
    if user_id:
        extra["user_id"] = user_id
    return extra


def _provider_id(obj: dict[str, Any]) -> str:
    """The message id; without one, a digest of the object, so that retries still dedupe."""
    value = obj.get("id")
    if isinstance(value, str) and value.strip():
        return value
    try:
        canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError, RecursionError):  # only objects not made by json.loads
        canonical = repr(sorted(map(str, obj)))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _time(value: object) -> datetime | None:
    """Aware UTC datetime of unix seconds given as int or digit string; None if unusable."""
    if isinstance(value, str):
        digits = value.strip()
        if digits.isascii() and digits.isdigit() and len(digits) < 13:
            value = int(digits)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= LATEST:
        return None
    return datetime.fromtimestamp(value, UTC)


# -- statuses ------------------------------------------------------------------------------

def _status(obj: object, ctx: _Change) -> StatusUpdate | None:
    """A delivery status of our outbound message; None without an id or a status."""
    if not isinstance(obj, dict) or not (text_or_none(obj.get("id"))
                                         and text_or_none(obj.get("status"))):
        return None
    return StatusUpdate(
        source=ctx.source, provider_id=obj["id"], status=obj["status"],
        at=_time(obj.get("timestamp")) or ctx.entry_time or datetime.now(UTC),
        recipient=_recipient(obj, ctx.region), errors=error_list(obj.get("errors")),
    )


def _recipient(obj: dict[str, Any], region: str | None) -> str | None:
    """E.164 of the recipient; a group id or an unreadable value as given; else the BSUID."""
    raw = text_or_none(obj.get("recipient_id"))
    if raw is None:
        return text_or_none(obj.get("recipient_user_id"))
    if obj.get("recipient_type") == "group":
        return raw
    return normalise_number(raw, region) or raw
