"""A batch as readable activity notes: one line per message, split to fit, never cut."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from bridge import Direction, Message, clean, joined, lead_in, quote, render_line, visible

HEADER_BUDGET = 160  # reserved in every note, so part boundaries do not depend on the header
NAME_LIMIT = 80  # characters of a contact's or the business's name in a line
CONTINUED = "… "  # starts each later piece of a long line, so none can pass for a line
NAME_CUT = "…: "  # ends a label whose name was shortened to leave a note room for text
TEXT_CUT = "t"  # a piece keyed by the text after its label (an ad or reply lead-in included)
BODY_CUT = "b"  # a piece keyed by the message's own text, after label and lead-in: `…:b0-656`
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
    piece: tuple[int, int] | None = None  # a long message's piece: (its number, how many)
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
    quotes = _quotes(messages)
    return [_line_or_reason(m, tz, contact, (senders or {}).get(m.id, business), quotes)
            for m in messages]


def _quotes(messages: list[Message]) -> dict[str, str]:
    """Provider id -> the short text a reply to it quotes (the batch's messages only)."""
    quotes: dict[str, str] = {}
    for m in messages:
        try:
            quotes[m.provider_id] = quote(render_line(m))
        except Exception:  # its own line says why
            continue
    return quotes


def lead_lengths(messages: list[Message], lines: Sequence[str | Unrendered],
                 labels: Sequence[int]) -> list[int]:
    """How many characters of each line (transcript_lines) after its label (label_lengths)
    are its lead-in (ad referral, reply prefix): a reply's quote is there only while the
    replied-to message is in the batch, so the pieces of a long line never count it."""
    quotes = _quotes(messages)
    lengths = []
    for m, line, label in zip(messages, lines, labels, strict=True):
        try:
            lead = lead_in(m, quotes)
        except Exception:  # its line is Unrendered: never cut
            lead = ""
        whole = isinstance(line, str) and line.startswith(lead, label)
        lengths.append(len(lead) if whole else 0)
    return lengths


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
    return line_label(message, tz, contact, business) + render_line(message, quotes, tz)


def line_label(message: Message, tz: tzinfo, contact: str, business: str) -> str:
    """`[2026-11-24 14:05] ⬅️ Asha: `: a line's time and sender, before its text."""
    when = message.sent_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    arrow, who = (("⬅️", _name(contact, "customer")) if message.direction == Direction.IN
                  else ("➡️", _name(business, "business")))
    return f"[{when}] {arrow} {who}: "


def _name(name: str, otherwise: str) -> str:
    """`name` as a line or header shows it; `otherwise` for a name of nothing visible (a
    profile name of a Hangul filler, U+3164, set to look nameless): `⬅️ <U+3164>: hi` read
    as a line with no sender."""
    shown = clean(name, NAME_LIMIT)
    return shown if visible(shown) else otherwise


def label_lengths(messages: list[Message], tz: tzinfo, contact: str, business: str,
                  senders: Mapping[Any, str] | None = None) -> list[int]:
    """How many characters of each message's line (transcript_lines) are its label; 0 for
    one that has none (cannot be rendered)."""
    return [_label_length(m, tz, contact, (senders or {}).get(m.id, business))
            for m in messages]


def _label_length(message: Message, tz: tzinfo, contact: str, business: str) -> int:
    try:
        return len(line_label(message, tz, contact, business))
    except Exception:  # its line is Unrendered: never cut
        return 0


def split(batch_key: str, messages: list[Message], lines: list[str | Unrendered],
          limit: int, starts: frozenset[str] | set[str] = frozenset(),
          landed: frozenset[str] | set[str] = frozenset(), single: bool = False,
          sizes: Mapping[str, int] | None = None,
          labels: Sequence[int] | None = None,
          leads: Sequence[int] | None = None,
          bodies: Mapping[str, str] | None = None) -> list[Part]:
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
    `labels`: how many characters of each line are its label (label_lengths); `leads`:
    how many after it are its lead-in (lead_lengths). A long line's pieces are keyed by the
    span of the message's own text each holds (`b0-656`, `b656-1494`), never counting its
    label or lead-in: a retry makes those an earlier try posted or recorded again, each
    holding the same text whatever the label is now (a rep's or contact's new name) or the
    lead-in (a reply's quote is gone once the replied-to message was delivered), and cuts
    the rest anew, so every character goes once. A message an earlier bridge cut by
    `t` spans (its lead-in counted as text) keeps that reading. Without `labels`, lines are
    taken as text alone. `bodies`: the text after the header of notes found on the lead,
    by key: where a line cut by line offsets ends its last landed piece (_chunks).
    """
    budget = limit - HEADER_BUDGET
    parts: list[Part] = []
    current: Part | None = None
    size = 0
    cuts, spans, lined = _cuts(batch_key, starts)
    heads = labels if labels is not None else [0] * len(messages)
    extra = leads if leads is not None else [0] * len(messages)
    for message, line, head, lead in zip(messages, lines, heads, extra, strict=True):
        if isinstance(line, Unrendered):
            parts.append(Part(f"{batch_key}:{message.provider_id}:unrendered", [], [message],
                              failed=line.reason))
            continue
        pid = message.provider_id
        own = f"{batch_key}:{pid}:0"
        full = current is not None and len(current.messages) >= (sizes or {}).get(
            current.key, len(messages) + 1)
        joins = current is not None and current.key in landed and own not in starts \
            and not full
        if pid in cuts or pid in spans or (u16(line) > budget and not joins
                                           and own not in landed):
            current = None
            if pid in spans or (pid not in cuts and own not in (sizes or {})):
                marker = TEXT_CUT if leads is None or pid in lined else BODY_CUT
                parts.extend(_pieces(batch_key, message, line,
                                     head + (lead if marker == BODY_CUT else 0), budget,
                                     spans.get(pid, {}), marker))
            else:  # cut by a bridge before TEXT_CUT, or its first piece may be on the lead
                parts.extend(_chunks(batch_key, message, line, budget, cuts.get(pid),
                                     bodies or {}))
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


def _cuts(batch_key: str, starts: frozenset[str] | set[str]
          ) -> tuple[dict[str, list[int]], dict[str, dict[int, int]], set[str]]:
    """Provider id -> the offsets into its whole line (label included) a bridge before
    TEXT_CUT cut its long line at (chunk keys past 0), and -> the spans of its text
    (start -> end) of the pieces an earlier try cut it into; and the ids whose spans are
    TEXT_CUT's (lead-in counted as text)."""
    found: dict[str, set[int]] = {}
    spans: dict[str, dict[int, int]] = {}
    lined: set[str] = set()
    for key in starts:
        pid, _, tail = key.removeprefix(f"{batch_key}:").rpartition(":")
        if not key.startswith(f"{batch_key}:"):
            continue
        if tail.isascii() and tail.isdigit():
            found.setdefault(pid, set()).add(int(tail))
        elif span := piece_span(tail):
            spans.setdefault(pid, {})[span[0]] = span[1]
            if tail.startswith(TEXT_CUT):
                lined.add(pid)
    return ({pid: sorted(offsets | {0}) for pid, offsets in found.items() if any(offsets)},
            spans, lined)


def piece_span(tail: str) -> tuple[int, int] | None:
    """(start, end) of the text a long message's piece holds, from its key's last field
    (`b656-1494`, or `t656-1494`); None when it is not a piece's."""
    start, dash, end = tail[1:].partition("-")
    if tail[:1] in (TEXT_CUT, BODY_CUT) and dash and all(n.isascii() and n.isdigit()
                                                         for n in (start, end)) \
            and int(start) < int(end):
        return int(start), int(end)
    return None


def part_tail(tail: str) -> bool:
    """Whether a key's last field is a part's: an offset (`0`; `750`, a piece cut by a
    bridge before TEXT_CUT) or a piece's span (`b656-1494`, `t656-1494`)."""
    return (tail.isascii() and tail.isdigit()) or piece_span(tail) is not None


def _chunks(batch_key: str, message: Message, line: str, budget: int,
            cuts: list[int] | None = None, bodies: Mapping[str, str] | None = None
            ) -> list[Part]:
    """A line longer than a note goes out in consecutive parts, each marked continued;
    every piece after the first starts with `…`, so no piece can pass for a line. With
    `cuts` (an earlier try's offsets), it is cut there again, whatever its length now: a
    piece at a new offset would be a new key, posted again where the old pieces landed.
    Keys by offsets into the whole line: only for lines a bridge before TEXT_CUT cut, or
    whose first piece may be on the lead under the line's own key (split).
    The piece at the last of `cuts` ends where its note on the lead (`bodies`) ends, and the
    rest is cut anew: a bridge killed after posting some pieces recorded only their starts.
    """
    parts, start = [], 0
    while start < len(line):
        lead = CONTINUED if start else ""
        end = start
        if cuts is not None:
            end = next((c for c in cuts if c > start), None) or _landed_end(
                line, start, (bodies or {}).get(f"{batch_key}:{message.provider_id}:{start}"))
            if end < len(line) and not any(c > start for c in cuts):
                cuts = None  # past the pieces an earlier try made: cut the rest anew
        else:
            while end < len(line) and u16(lead + line[start:end + 1]) <= budget:
                end += 1
        parts.append(Part(f"{batch_key}:{message.provider_id}:{start}",
                          [lead + line[start:end]], [message],
                          continued=start > 0 or end < len(line)))
        start = end
    return _numbered(parts)


def _numbered(parts: list[Part]) -> list[Part]:
    """The pieces of one long message, each told its number and how many there are: they
    share one activity time, so nothing else tells a rep in which order to read them."""
    if len(parts) > 1:
        for number, part in enumerate(parts, 1):
            part.piece = (number, len(parts))
    return parts


def _landed_end(line: str, start: int, body: str | None) -> int:
    """Where the piece of `line` at `start` a note on the lead holds (`body`, its text after
    the header) ends; the line's end when the note is unknown or holds other text."""
    for held in (body, body.removeprefix(CONTINUED) if body and start else None):
        if held and line.startswith(held, start):
            return start + len(held)
    return len(line)


def _pieces(batch_key: str, message: Message, line: str, head: int, budget: int,
            known: dict[int, int], marker: str = BODY_CUT) -> list[Part]:
    """A line longer than a note goes out in consecutive parts, each marked continued: the
    first holds the label and lead-in (`head` characters) and the text that fits, every
    later one `…` (so no piece can pass for a line) and the text that fits. Each is keyed
    by the span of text it holds; `known` (start -> end, an earlier try's pieces) are made
    again as they were, whatever the label's length or the limit now, and only the text
    between them is cut anew. A label that would leave no room for text (a long name
    under a small note_limit) has its name shortened with `…` in that piece."""
    label, text = _fitted(line[:head], budget - 2), line[head:]  # 2: one character of text
    parts, start = [], 0
    while True:
        end = known.get(start) or min([
            _fit(text, start, budget - u16(label if not parts else CONTINUED)),
            *(s for s in known if s > start)])
        parts.append(Part(f"{batch_key}:{message.provider_id}:{marker}{start}-{end}",
                          [(CONTINUED if parts else label) + text[start:end]], [message],
                          continued=bool(parts) or end < len(text)))
        if end >= len(text):
            return _numbered(parts)
        start = end


def _fitted(label: str, room: int) -> str:
    """The label in `room` UTF-16 units: its end (the name's) cut and marked `…: `."""
    if u16(label) <= room:
        return label
    return label[:_fit(label, 0, room - len(NAME_CUT))] + NAME_CUT


def _fit(text: str, start: int, room: int) -> int:
    """Where the longest run of `text` from `start` in `room` UTF-16 units ends (one
    character at least), never inside what a reader sees as one character (bridge.joined):
    a flag cut between its two letters read as another country's flags in the next note
    (🇮🇳🇮🇳 → 🇮 | 🇳🇮🇳: Nicaragua's), a family emoji as its members."""
    end, used = start, 0
    while end < len(text):
        used += 2 if ord(text[end]) > 0xFFFF else 1
        if used > room and end > start:
            break
        end += 1
    back = end
    while back > start + 1 and back < len(text) and joined(text, back):
        back -= 1
    return end if back < len(text) and joined(text, back) else back


def note(part: Part, contact: str, number: str, index_hint: str = "",
         business: str | None = None) -> str:
    """Header plus lines; the header is trimmed to its reserved budget. `business` names
    the business number and rep the chat is with ("Priya Rao (+9198…)")."""
    count = len(part.messages)
    tail = f", {count} message{'s' * (count != 1)}"
    if part.continued:
        which = f"part {part.piece[0]} of {part.piece[1]}, " if part.piece else ""
        tail += f" (long message, {which}continued across notes)"
    tail += index_hint
    for limit in range(NAME_LIMIT, 9, -10):  # long names give way, not the part's number
        rep = f" and {clean(business, limit)}" if business else ""
        header = (f"WhatsApp chat with {clean(_name(contact, 'customer'), limit)} "
                  f"({clean(number, NAME_LIMIT)}){rep}{tail}")
        if u16(header) <= HEADER_BUDGET - 2:
            break
    while u16(header) > HEADER_BUDGET - 2:
        header = header[:-2] + "…"
    return header + "\n" + "\n".join(part.lines)
