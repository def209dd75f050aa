"""Provider-neutral records that flow from sources through the buffer to sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Direction(StrEnum):
    """Who sent a message: the customer (IN) or the business (OUT)."""

    IN = "in"
    OUT = "out"


KINDS = frozenset(
    {
        "text", "image", "audio", "video", "document", "sticker", "location", "contacts",
        "interactive", "button", "reaction", "order", "system", "edit", "revoke",
        "media_placeholder", "unsupported", "status", "template",
    }
)

# Delivery statuses of outbound messages, in the order they may advance.
STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3, "played": 4}
STATUS_FAILED = "failed"
STATUS_KINDS = frozenset({*STATUS_RANK, STATUS_FAILED})


@dataclass(frozen=True, slots=True)
class Media:
    """A media attachment as the provider describes it; nothing is downloaded.

    id: provider media id (WhatsApp media ids expire after 7 days); url: a short-lived
    link when the provider sends one; caption/filename: as sent; voice/animated: audio
    voice note and animated sticker flags.
    """

    id: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    url: str | None = None
    filename: str | None = None
    caption: str | None = None
    voice: bool = False
    animated: bool = False


MEDIA_STATES = ("pending", "fetched", "dead", "held")


@dataclass(frozen=True, slots=True)
class MediaFile:
    """What the bridge holds of a message's media: its fetch job and, once fetched, the file.

    state: pending (not fetched yet; it follows on its own), fetched (path holds it),
    dead (the provider says it is gone, or it failed for good: reason says why) or held
    (the bridge will not fetch it: reason says why). path: the stored file (absolute,
    content-addressed by sha256); mime_type, filename (as sent, if any), size in bytes,
    sha256 (hex of the stored bytes).
    """

    state: str
    path: str | None = None
    mime_type: str | None = None
    filename: str | None = None
    size: int | None = None
    sha256: str | None = None
    reason: str | None = None

    @property
    def fetched(self) -> bool:
        return self.state == "fetched"


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message, whichever provider it came from.

    Set by sources: source (plugin name), provider_id (unique per source), conversation
    (the customer: E.164 like "+919876543210", or a business-scoped user id when the
    provider sends no number), account (the business number or its provider id),
    direction, sent_at (aware UTC), kind (one of KINDS), text (body or caption),
    media, contact_name (customer's profile name), reply_to (provider id quoted),
    history (recovered from a history sync, not live), extra (kind-specific details:
    location, reaction target, forwarded, referral, errors ...), raw (the provider's own
    object for this message).
    Set by the buffer: id (row id), stored_at, file (the media's fetch state and stored
    file, for a source that fetches media; None otherwise).
    """

    source: str
    provider_id: str
    conversation: str
    account: str
    direction: Direction
    sent_at: datetime
    kind: str
    text: str = ""
    media: Media | None = None
    contact_name: str | None = None
    reply_to: str | None = None
    history: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    stored_at: datetime | None = None
    file: MediaFile | None = None


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A delivery status of an outbound message: sent, delivered, read, played or failed.

    provider_id is the id of the message the status is about; it may be one the bridge
    never stored (sent by another tool), which is kept all the same.
    """

    source: str
    provider_id: str
    status: str
    at: datetime
    recipient: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Identity:
    """Keys a webhook shows to belong to one person, and what it says about them.

    phone: E.164 ("+919876543210"); user_id / parent_user_id: business-scoped user ids
    (BSUIDs, "US.1349…" / "US.ENT.…"); previous: earlier phone numbers or BSUIDs of the
    same person (a user_changed_number / user_changed_user_id system message); username
    and name: the WhatsApp username and profile name. Phones and BSUIDs link people;
    usernames and names never do (they can change hands).
    """

    phone: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    username: str | None = None
    name: str | None = None
    previous: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Every linking key, current ones first."""
        found = [k for k in (self.phone, self.user_id, self.parent_user_id) if k]
        return (*found, *(k for k in self.previous if k and k not in found))


GROUP_PREFIX = "group:"  # conversation keys of group chats: "group:<provider group id>"
# A message that completes an earlier one (a history sync's media sent after its
# placeholder under the same id) is stored as "<earlier id>" + UPGRADE_SUFFIX, with
# extra["upgrades"] = the earlier id: kept once, and the earlier one, if no sink has taken
# it yet, is settled as skipped, so that transcripts show the file once, not a placeholder.
UPGRADE_SUFFIX = "#media"


def is_group(key: str) -> bool:
    """Whether a conversation key names a group chat, not a person."""
    return key.startswith(GROUP_PREFIX)


@dataclass(frozen=True, slots=True)
class Conversation:
    """A customer's chat as one sink sees it.

    key: the message conversation key; contact_name: latest known profile name;
    record_id: the CRM record this sink mapped it to (e.g. a lead id), if any;
    last_synced_at: when this sink last delivered something of it; phone, user_id,
    parent_user_id, username: what the buffer's contact map knows of the person (phone is
    the latest number, after a change); group_id: set for a group chat.
    """

    key: str
    contact_name: str | None = None
    account: str | None = None
    record_id: str | None = None
    last_synced_at: datetime | None = None
    phone: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    username: str | None = None
    group_id: str | None = None
