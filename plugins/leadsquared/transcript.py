"""A batch as readable activity notes: one line per message, split to fit, never cut."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from bridge import Direction, Message, clean, quote, render_line

HEADER_BUDGET = 160  # reserved in every note, so part boundaries do not depend on the header
NAME_LIMIT = 80  # characters of a contact's or the business's name in a line
CONTINUED = "… "  # starts each later piece of a long line, so none can pass for a line
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # LeadSquared API datetimes, always UTC

logger = logging.getLogger(__name__)


def u16(text: str) -> int:
    """Length as LeadSquared (.NET) counts it: UTF-16 code units (an emoji may be 2)."""
    return len(text.encode("utf-16-le")) // 2


def lsq_time(value: datetime) -> str:
    """`YYYY-MM-DD HH:MM:SS` in UTC, the API's only datetime format."""
    from datetime import UTC

    return value.astimezone(UTC).strftime(TIME_FORMAT)


@dataclass
class Part:
    """One activity note: the messages it covers and its idempotency key."""

    key: str
    lines: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    continued: bool = False
    failed: str | None = None  # why its one message cannot be rendered: never posted
    rep: Any = None  # owners.Rep of its last message: owner, and how the note names them

    @property
    def first_at(self) -> datetime:
        return self.messages[0].sent_at

    @property
    def last_at(self) -> datetime:
        return self.messages[-1].sent_at


@dataclass(frozen=True, slots=True)
class Unrendered:
    """A message that cannot be written as a line: it fails alone, its neighbours still go."""

    reason: str


def transcript_lines(messages: list[Message], tz: tzinfo, contact: str, business: str,
                     senders: Mapping[Any, str] | None = None) -> list[str | Unrendered]:
    """One line per message (or why it has none); replies and reactions quote their target
    when it is here. `senders`: how an outbound message's line names its sender (the rep),
    by message id; else `business`."""
    quotes: dict[str, str] = {}
    for m in messages:
        try:
            quotes[m.provider_id] = quote(render_line(m))
        except Exception:  # its own line below says why
            continue
    return [_line_or_reason(m, tz, contact, (senders or {}).get(m.id, business), quotes)
            for m in messages]


def _line_or_reason(message: Message, tz: tzinfo, contact: str, business: str,
                    quotes: Mapping[str, str]) -> str | Unrendered:
    try:
        return transcript_line(message, tz, contact, business, quotes)
    except Exception as exc:  # any failure stays with this one message
        if isinstance(exc, OverflowError | ValueError) and not _has_local_time(message, tz):
            what = (f"its time {message.sent_at.isoformat()} does not exist in the account's "
                    f"time zone {tz}")
        else:
            what = "rendering it failed"
        logger.warning("message %s %s: %s: %s", message.provider_id, what,
                       type(exc).__name__, exc)
        return Unrendered(f"cannot be written as a transcript line: {what} "
                          f"({type(exc).__name__}: {exc})")


def _has_local_time(message: Message, tz: tzinfo) -> bool:
    try:
        message.sent_at.astimezone(tz).strftime("%Y")
    except (OverflowError, ValueError, AttributeError, TypeError):
        return False
    return True


def transcript_line(message: Message, tz: tzinfo, contact: str, business: str,
                    quotes: Mapping[str, str] | None = None) -> str:
    """`[2026-11-24 14:05] ⬅️ Asha: Hello` in the account's local time.

    Names are folded to one bounded line and the rendered message is one line, so nothing
    a customer controls (a profile name, a caption, a body) can start a line of its own.
    """
    when = message.sent_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    arrow, who = ("⬅️", contact) if message.direction == Direction.IN else ("➡️", business)
    return f"[{when}] {arrow} {clean(who, NAME_LIMIT)}: {render_line(message, quotes, tz)}"


def split(batch_key: str, messages: list[Message], lines: list[str | Unrendered],
          limit: int, starts: frozenset[str] | set[str] = frozenset(),
          landed: frozenset[str] | set[str] = frozenset(), single: bool = False,
          sizes: Mapping[str, int] | None = None) -> list[Part]:
    """Greedy parts of at most `limit` UTF-16 units (header included).

    Keys are `<batch key>:<first provider id>:<offset>`: a retry over the messages not yet
    delivered re-splits into the same parts with the same keys, so none is posted twice.
    `starts` holds the part keys an earlier try used: a message whose own key is one of
    them begins a part again, so messages on either side of a delivered one are never
    joined into one part (the later one's posts would be skipped as the earlier's).
    `landed` holds those posted somewhere: such a part is never cut by the limit, as its
    lines may have grown since (a contact's new name, a lower note_limit): a message cut
    off it would get a key of its own and be posted again where the part landed. Its
    messages are those up to the next start (a retry's parts are whole: a part's messages
    share their outcome, and each one not delivered had its start recorded).
    `single` (granularity "message"): a part per message, but for those of a landed part
    (an earlier try in "window", before the setting changed). `sizes`: how many messages
    a part an earlier try posted holds, where known (its activity's count): it ends
    there, so a retry's lines grown or shrunk since cannot move a message into or out of it.
    An unrendered message gets a part of its own, marked failed, and is left out of the
    note around it.
    """
    budget = limit - HEADER_BUDGET
    parts: list[Part] = []
    current: Part | None = None
    size = 0
    cuts = _cuts(batch_key, starts)
    for message, line in zip(messages, lines, strict=True):
        if isinstance(line, Unrendered):
            parts.append(Part(f"{batch_key}:{message.provider_id}:unrendered", [], [message],
                              failed=line.reason))
            continue
        own = f"{batch_key}:{message.provider_id}:0"
        full = current is not None and len(current.messages) >= (sizes or {}).get(
            current.key, len(messages) + 1)
        joins = current is not None and current.key in landed and own not in starts \
            and not full
        if message.provider_id in cuts or (u16(line) > budget and not joins
                                           and own not in landed):
            current = None
            parts.extend(_chunks(batch_key, message, line, budget,
                                 cuts.get(message.provider_id)))
            continue
        if current is not None and (own in starts or full or (
                (single or size + 1 + u16(line) > budget) and current.key not in landed)):
            current = None
        if current is None:
            current = Part(f"{batch_key}:{message.provider_id}:0")
            parts.append(current)
            size = -1
        current.lines.append(line)
        current.messages.append(message)
        size += 1 + u16(line)
    return parts


def _cuts(batch_key: str, starts: frozenset[str] | set[str]) -> dict[str, list[int]]:
    """Provider id -> the offsets an earlier try cut its long line at (chunk keys past 0)."""
    found: dict[str, set[int]] = {}
    for key in starts:
        pid, _, offset = key.removeprefix(f"{batch_key}:").rpartition(":")
        if key.startswith(f"{batch_key}:") and offset.isdigit():
            found.setdefault(pid, set()).add(int(offset))
    return {pid: sorted(offsets | {0}) for pid, offsets in found.items()
            if any(offsets)}


def _chunks(batch_key: str, message: Message, line: str, budget: int,
            cuts: list[int] | None = None) -> list[Part]:
    """A line longer than a note goes out in consecutive parts, each marked continued;
    every piece after the first starts with `…`, so no piece can pass for a line. With
    `cuts` (an earlier try's offsets), it is cut there again, whatever its length now: a
    piece at a new offset would be a new key, posted again where the old pieces landed."""
    parts, start = [], 0
    while start < len(line):
        lead = CONTINUED if start else ""
        end = start
        if cuts is not None:
            end = next((c for c in cuts if c > start), len(line))
        while cuts is None and end < len(line) and u16(lead + line[start:end + 1]) <= budget:
            end += 1
        parts.append(Part(f"{batch_key}:{message.provider_id}:{start}",
                          [lead + line[start:end]], [message],
                          continued=start > 0 or end < len(line)))
        start = end
    return parts


def note(part: Part, contact: str, number: str, index_hint: str = "",
         business: str | None = None) -> str:
    """Header plus lines; the header is trimmed to its reserved budget. `business` names
    the business number and rep the chat is with ("Priya Rao (+9198…)")."""
    count = len(part.messages)
    rep = f" and {clean(business, NAME_LIMIT)}" if business else ""
    header = (f"WhatsApp chat with {clean(contact, NAME_LIMIT)} ({clean(number, NAME_LIMIT)})"
              f"{rep}, {count} message{'s' * (count != 1)}")
    if part.continued:
        header += " (long message, continued across notes)"
    header = header + index_hint
    while u16(header) > HEADER_BUDGET - 2:
        header = header[:-2] + "…"
    return header + "\n" + "\n".join(part.lines)
