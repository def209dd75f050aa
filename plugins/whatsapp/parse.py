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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import phonenumbers

from bridge import GROUP_PREFIX, UPGRADE_SUFFIX, Direction, Identity, Message, StatusUpdate
from plugins.whatsapp.content import read_content, unsupported
from plugins.whatsapp.readers import dicts, error_list, items, text_or_none

OBJECT = "whatsapp_business_account"
HISTORY_DECLINED = 2593109  # "History sync is turned off by the business"
BUSINESS_APP_ONLY = 131060  # coexistence: the message exists only in the Business app [M-UNS]
BUSINESS_APP_HINT = "open the WhatsApp Business app to read it"
LATEST = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime can hold

_DIGITS = re.compile(r"[0-9]+")
_WRITTEN_NUMBER = re.compile(r"\+?[0-9 ().\-]+")  # no letters: phonenumbers reads them as vanity
_FIELD_NAME = re.compile(r"[a-z0-9_]{1,64}")
# keys of a change's value that only WhatsApp's notifications carry (what any of its
# fields holds, or its metadata)
_WHATSAPP_KEYS = frozenset({"messaging_product", "metadata", "messages", "statuses",
                            "message_echoes", "history", "state_sync", "contacts", "errors"})


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
    history: list[HistoryChunk] = field(default_factory=list)
    contact_syncs: list[str] = field(default_factory=list)  # accounts whose book arrived
    other_object: str | None = None  # a well-formed notification of another Meta object

    def add(self, message: Message | None) -> None:
        """Keep a message; None stands for an item that was not an object."""
        if message is None:
            self.ignored_fields["malformed"] += 1
        else:
            self.messages.append(message)


@dataclass(frozen=True, slots=True)
class HistoryChunk:
    """What one `history` chunk says of the sync's progress [M-HIST]: phase 0-2,
    chunk_order, progress 0-100 (100: done); declined when the business turned sharing off
    (error 2593109). account: the business number's phone_number_id."""

    account: str
    phase: int | None = None
    chunk_order: int | None = None
    progress: int | None = None
    declined: bool = False


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
    entries = _entries(payload)
    if payload.get("object") != OBJECT:  # _entries let it through: not WhatsApp's at all
        parsed.other_object = _label(payload.get("object"))
        return parsed
    for entry in entries:
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
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise PayloadError('"entry" is missing or not a list')
    name = payload.get("object")
    if name != OBJECT and not _other_object(name, entries):
        raise PayloadError(f'"object" is not "{OBJECT}" (only WhatsApp webhooks are accepted)')
    return entries


def _other_object(name: object, entries: list[Any]) -> bool:
    """A notification of another Meta object (page, instagram, permissions ...) that an
    app subscribed to more than WhatsApp sends to the same callback: acknowledged, never
    stored. Whatever might be WhatsApp's (an object naming it, a change of one of its
    fields or with its keys) is not one: it stays a 400, as before, so Meta keeps it."""
    if not isinstance(name, str) or not name or "whatsapp" in name.lower():
        return False
    return not any(_whatsapp_like(change) for entry in entries if isinstance(entry, dict)
                   for change in items(entry.get("changes")))


def _whatsapp_like(change: object) -> bool:
    """A change that a WhatsApp notification could hold."""
    if not isinstance(change, dict):
        return False
    value, field = change.get("value"), change.get("field")
    return (isinstance(field, str) and field in _FIELDS) or (
        isinstance(value, dict) and not _WHATSAPP_KEYS.isdisjoint(value))


def _label(name: object) -> str:
    """An object's name as a bounded metric label."""
    return name if isinstance(name, str) and _FIELD_NAME.fullmatch(name) else "unknown"


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
    """Backfilled chats [M-HIST]. Inside a chunk's threads, `messages[]` go either way
    (`from` says) and `message_echoes[]` are the business's; a top-level `messages[]` or
    `message_echoes[]` is media of earlier placeholders (follow-ups, same message id)."""
    _remember_contacts(ctx, parsed)
    keys = _thread_keys(value.get("history"), ctx)
    for chunk in items(value.get("history")):
        if not isinstance(chunk, dict):
            parsed.add(None)
            continue
        declined = _count_errors(chunk.get("errors"), parsed)
        parsed.history.append(_chunk_of(chunk, ctx, declined))
        for thread in items(chunk.get("threads")):
            if not isinstance(thread, dict):
                parsed.add(None)
                continue
            key = keys.get(id(thread))
            for obj in items(thread.get("messages")):
                parsed.add(_historical(obj, ctx, key))
            for obj in items(thread.get("message_echoes")):
                parsed.add(_historical(obj, ctx, key, echo=True))
    for name, echo in (("messages", False), ("message_echoes", True)):
        for obj in items(value.get(name)):
            parsed.add(_follow_up(_historical(obj, ctx, None, echo=echo)))
    # Doubt: M-HIST shows the "declined" chunk as a bare value; value-level errors are
    # classified the same way in case Meta sends them there.
    if _count_errors(value.get("errors"), parsed):
        parsed.history.append(HistoryChunk(ctx.account, declined=True))


def _chunk_of(chunk: dict[str, Any], ctx: _Change, declined: bool) -> HistoryChunk:
    """phase, chunk_order and progress of a chunk's metadata, where they are integers."""
    meta = chunk.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return HistoryChunk(ctx.account, _small_int(meta.get("phase")),
                        _small_int(meta.get("chunk_order")), _small_int(meta.get("progress")),
                        declined)


def _small_int(value: object) -> int | None:
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 10:
        value = int(value.strip())
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 <= value < 10 ** 9 else None


def _thread_keys(chunks: object, ctx: _Change) -> dict[int, str | None]:
    """id(thread) -> the customer each thread of the change is with (_thread_key). A
    thread nothing of its own names (the business's messages alone) falls back on the
    change's one contacts[] entry only when it is the one such thread and that contact is
    no other thread's customer; else on its username, else nobody."""
    threads = [t for chunk in dicts(chunks) for t in dicts(chunk.get("threads"))]
    keys = {id(t): _thread_key(t, ctx) for t in threads}
    unnamed = [t for t in threads if keys[id(t)] is None]
    taken = set(keys.values())
    for thread in unnamed:
        keys[id(thread)] = _fallback_key(thread, ctx, taken, alone=len(unnamed) == 1)
    return keys


def _fallback_key(thread: dict[str, Any], ctx: _Change, taken: set[str | None], *,
                  alone: bool) -> str | None:
    if alone and len(ctx.contacts) == 1:  # the user's only trace: their contacts[] entry
        contact = ctx.contacts[0]
        found = contact.key or contact.username
        if found not in taken:
            return found
    return username(thread.get("username"))


def _thread_key(thread: dict[str, Any], ctx: _Change) -> str | None:
    """The customer a history thread is with: its id (their number); for a username
    thread (`id: ""`), the business-scoped id its messages name, so that both sides of it
    are filed under that person and never under an empty key (None: nothing of the
    thread's own names them)."""
    raw = text_or_none(thread.get("id"))
    if raw:
        return normalise_number(raw, ctx.region) or raw
    for obj in dicts(thread.get("messages")) + dicts(thread.get("message_echoes")):
        outgoing = _is_business(obj, ctx) or "to" in obj or "to_user_id" in obj
        for key in (("to_user_id", "to") if outgoing else ("from_user_id", "from")):
            value = text_or_none(obj.get(key))
            found = (normalise_number(value, ctx.region) or value) if key in ("to", "from") \
                else value
            if found and found != ctx.business:
                return found
    return text_or_none(thread.get("user_id"))


def _follow_up(message: Message | None) -> Message | None:
    """A history media follow-up reuses its placeholder's id (reference §14): stored under
    `<id>#media`, naming the placeholder in extra["upgrades"], so that it is kept once, is
    never dropped as the placeholder's duplicate, and a transcript can show it in its place."""
    if message is None or message.kind == "media_placeholder":
        return message
    original = message.provider_id
    return replace(message, provider_id=original + UPGRADE_SUFFIX,
                   extra={**message.extra, "upgrades": original})


def _standby_field(value: dict[str, Any], ctx: _Change, parsed: Parsed) -> None:
    """Chats Meta's Business Agent handles [SBY]: the customer's messages, the agent's
    replies (message_echoes) and statuses, as under `messages` and `smb_message_echoes`;
    each message is marked extra["standby"]."""
    first = len(parsed.messages)
    _messages_field(value, ctx, parsed)
    for obj in items(value.get("message_echoes")):
        message = _echo(obj, ctx)
        parsed.add(message)
        if message is not None:
            _learn(parsed, _sender(obj, ctx, "to", "to_user_id", "to_parent_user_id"))
    for message in parsed.messages[first:]:
        message.extra["standby"] = True


def _state_sync_field(value: dict[str, Any], ctx: _Change, parsed: Parsed) -> None:
    """Address-book names; `add` also covers edits, `remove` carries no name."""
    parsed.contact_syncs.append(ctx.account)
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
    "standby": _standby_field,
}


def _count_errors(errors: object, parsed: Parsed) -> bool:
    """Error objects are acknowledged, never stored; a declined history sync is told apart
    (True when one was among them)."""
    seen = False
    for error in items(errors):
        code = error.get("code") if isinstance(error, dict) else None
        declined = code in (HISTORY_DECLINED, str(HISTORY_DECLINED))
        seen = seen or declined
        parsed.ignored_fields["history_declined" if declined else "errors"] += 1
    return seen


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
        found = _e164("+" + text, None) or _mexican(text)
        if found:
            return found
    if text.startswith("+") and _DIGITS.fullmatch(text[1:]):
        found = _mexican(text[1:])
        if found:
            return found
    region = default_region.upper() if default_region and not text.startswith("+") else None
    return _e164(text, region)


def _mexican(digits: str) -> str | None:
    """WhatsApp ids of Mexican mobiles keep the mobile `1` Mexico dropped in 2019
    (`521` + 10 digits, reference §14): the number is +52 and the 10 digits."""
    if len(digits) == 13 and digits.startswith("521"):
        return _e164("+52" + digits[3:], None)
    return None


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
                    username(profile.get("username")))


def username(value: object) -> str | None:
    """A WhatsApp username as `@name`, one `@` whether or not Meta sent it (it does:
    reference §14), so that it renders once."""
    if not isinstance(value, str):
        return None
    if value[:1] == "@" and value[1:2].isalnum() and not value[-1].isspace():
        return value  # as Meta sends it (every webhook with a username passes here)
    name = value.strip().lstrip("@").strip()
    return "@" + name if name else None


def _match(contacts: tuple[_Contact, ...], number: str | None,
           user_id: str | None) -> _Contact | None:
    """The contacts[] entry of this customer; the only entry when none matches only if its
    number is another spelling of this one (Brazil's ninth digit: the last 8 digits
    agree). System messages have no entry [M-SYS]: batched beside another customer's
    text, they must not take that customer's name and business-scoped id."""
    for contact in contacts:
        if (number and contact.number == number) or (user_id and contact.user_id == user_id):
            return contact
    if len(contacts) != 1:
        return None
    only = contacts[0]
    if user_id and only.user_id:  # business-scoped ids are exact: another person
        return None
    if not (number or user_id or only.number or only.user_id):
        return only  # neither names anyone readable (a wa_id no phone number library knows)
    return only if number and only.number and number[-8:] == only.number[-8:] else None


def _remember_contacts(ctx: _Change, parsed: Parsed) -> None:
    for contact in ctx.contacts:
        if contact.key and contact.name:
            parsed.contact_names[contact.key] = contact.name
        if _links(contact.number, contact.user_id, contact.parent_user_id, contact.username):
            parsed.identities.append(Identity(contact.number, contact.user_id,
                                              contact.parent_user_id, contact.username,
                                              contact.name))


# -- who is who: phone <-> BSUID <-> parent BSUID <-> username ------------------------------

def _learn(parsed: Parsed, identity: Identity | None) -> None:
    """Keep an identity that links something: two keys, or a key and a username (a name
    alone reaches the conversation through contact_names)."""
    if identity is None:
        return
    if identity.previous:
        keys = identity.keys
        if keys and (len(keys) > 1 or identity.username):
            parsed.identities.append(identity)
    elif _links(identity.phone, identity.user_id, identity.parent_user_id, identity.username):
        parsed.identities.append(identity)


def _links(phone: str | None, user_id: str | None, parent: str | None,
           username: str | None) -> bool:
    """_learn's test for an identity without previous keys, on its parts: two keys, or a
    key and a username. Most webhooks name their customer by number alone, two or three
    times: this skips building an Identity (and its keys, twice) only to drop it."""
    count = bool(phone) + bool(user_id) + bool(parent)
    return count > 1 or (count == 1 and bool(username))


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
    username = contact.username if contact else None
    if not _links(number, user_id, parent, username):
        return None  # links nothing: _learn would drop it
    return Identity(number, user_id, parent, username, contact.name if contact else None)


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
    old, new = user_id_change(system, from_user)
    keys = tuple(k for k in (old, previous[1]) if k and k != new)
    return Identity(sender, new, previous=keys) if sender or new else None


def user_id_change(system: dict[str, Any], from_user: str | None
                   ) -> tuple[str | None, str | None]:
    """(old, new) business-scoped ids of a user_changed_user_id message [M-SYS, §14]: the new
    id is system.user_id, the old system.previous_user_id. from_user_id is not documented
    for it and is seen holding either; it fills in whichever of the two is missing."""
    old = text_or_none(system.get("previous_user_id"))
    new = text_or_none(system.get("user_id"))
    if from_user and from_user not in (old, new):
        if new is None:
            new = from_user
        elif old is None:
            old = from_user
    return old, new


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


def _is_business(obj: dict[str, Any], ctx: _Change) -> bool:
    return bool(ctx.business) and normalise_number(obj.get("from"), ctx.region) == ctx.business


def _historical(obj: object, ctx: _Change, thread: str | None, *,
                echo: bool = False) -> Message | None:
    """History item: outgoing when it is an echo or `from` is the business number, else
    incoming; `thread` (the thread's customer) files it when given."""
    if not isinstance(obj, dict):
        return None
    if echo or _is_business(obj, ctx):
        return _message(obj, ctx, Direction.OUT, obj.get("to"), text_or_none(obj.get("to_user_id")),
                        history=True, thread=thread)
    return _message(obj, ctx, Direction.IN, obj.get("from"), text_or_none(obj.get("from_user_id")),
                    history=True, thread=thread)


def _message(obj: dict[str, Any], ctx: _Change, direction: Direction, number: object,
             user_id: str | None, *, history: bool = False, thread: str | None = None) -> Message:
    """One message; `number`/`user_id` name the customer, `thread` overrides them."""
    content = read_content(obj)
    e164 = normalise_number(number, ctx.region)
    conversation = thread or _customer(number, user_id, e164)
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
    elif isinstance(system, dict) and system.get("type") == "user_changed_user_id":
        old, new = user_id_change(system, text_or_none(obj.get("from_user_id")))
        extra["user_id_change"] = {"old": old, "new": new}
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
        if any(e.get("code") in (BUSINESS_APP_ONLY, str(BUSINESS_APP_ONLY)) for e in errors):
            extra["hint"] = BUSINESS_APP_HINT  # a first contact only the Business app holds
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
