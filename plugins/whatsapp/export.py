"""WhatsApp "Export chat" text into provider-neutral messages: pure functions, no I/O.

Android writes `31/12/23, 23:59 - Asha: text`, iOS `[31/12/23, 23:59:59] Asha: text`.
Dates come as d/m/y, m/d/y or y-m-d (4-digit year first) with `/`, `.` or `-` and 2- or
4-digit years; times as 24 h or 12 h (am/pm, AM/PM, a.m., "p. m.", a narrow no-break space
before the marker), with or without seconds. A line that does not start with a date and
time continues the message before it. Direction marks (LRM, RLM, embeddings, isolates,
BOM) are removed; iOS puts an LRM before the text of system and media lines, which is how
those are told apart from what people typed.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import unicodedata
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import NamedTuple

from bridge import Direction, Media, Message

ORDERS = ("dmy", "mdy", "ymd")
ORDER_LABEL = {"dmy": "d/m/y", "mdy": "m/d/y", "ymd": "y-m-d"}
ID_PREFIX = "import:"
MAX_SENDER = 80  # longer "names" before ": " are system lines that happen to hold a colon
# Times a message can have: none before phones kept time this way (a reset clock shows
# 1970 at worst), none later than tomorrow (a day covers every time zone's lead on UTC).
EARLIEST = datetime(1970, 1, 1)
AHEAD = timedelta(days=1)

LRM = "\u200e"
MARKS = LRM + "\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
_MARK = re.compile(f"[{MARKS}]")
_SP = "[ \u00a0\u202f]"  # space, no-break space, narrow no-break space (recent iOS)

_DATE = r"(?P<a>\d{4}|\d{1,2})(?P<sep>[/.\-])(?P<b>\d{1,2})(?P=sep)(?P<c>\d{4}|\d{2})\.?"
_TIME = (r"(?P<h>\d{1,2})[:.](?P<mi>\d{2})(?:[:.](?P<s>\d{2}))?"
         rf"(?:{_SP}?(?P<ap>[aApP])\.?{_SP}?[mM]\.?)?")
_ANDROID = re.compile(rf"(?P<stamp>{_DATE},?{_SP}+{_TIME}){_SP}?[-\u2013]{_SP}(?P<rest>.*)")
_IOS = re.compile(rf"\[(?P<stamp>{_DATE},?{_SP}*{_TIME})\]{_SP}?(?P<rest>.*)")

# Group events whose text holds a colon, so "name: text" would cut them in two.
_GROUP_EVENT = re.compile(r"[\"“”]| changed the subject| created group| changed the group")
_SYSTEM_TEXT = re.compile(
    r"Messages and calls are end-to-end encrypted|Messages to this group are now secured"
    r"|Your security code with .+ changed|This chat is with a business account")
_OMITTED = frozenset({"<Media omitted>", "<Medien ausgeschlossen>", "<Multimedia omitido>",
                      "<Mídia oculta>", "<Médias omis>"})
_FILE_ATTACHED = re.compile(
    r"(?P<file>.+?\.[A-Za-z0-9]{1,5}) \((?:file attached|Datei angehängt|archivo adjunto"
    r"|arquivo anexado|fichier joint)\)")
_IOS_ATTACHED = re.compile(r"<(?:attached|Anhang|adjunto|anexado|pièce jointe): (?P<file>[^<>]+)>")
_IOS_OMITTED = re.compile(r"(?:(?P<file>[^•]+?)\s*•.*\s)?"
                          r"(?P<what>image|video|audio|sticker|GIF|document|Contact card) omitted",
                          re.IGNORECASE)
_EDITED = re.compile(r"\s*<This message was edited>$")
_DELETED = frozenset({"This message was deleted", "This message was deleted.",
                      "You deleted this message", "You deleted this message."})
_NAME_TAG = re.compile(r"(?:\d+-)?(?P<tag>[A-Z]+)-")
_TAG_KIND = {"IMG": "image", "PHOTO": "image", "VID": "video", "VIDEO": "video", "GIF": "video",
             "AUD": "audio", "PTT": "audio", "AUDIO": "audio", "STK": "sticker",
             "STICKER": "sticker", "DOC": "document"}
_EXT_KIND = {**dict.fromkeys(("jpg", "jpeg", "png", "heic", "heif", "gif", "bmp"), "image"),
             **dict.fromkeys(("mp4", "3gp", "mov", "m4v", "mkv", "webm"), "video"),
             **dict.fromkeys(("opus", "ogg", "m4a", "mp3", "aac", "amr", "wav"), "audio"),
             "webp": "sticker"}
_OMITTED_KIND = {"image": "image", "video": "video", "gif": "video", "audio": "audio",
                 "sticker": "sticker", "document": "document", "contact card": "contacts"}


# -- records ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Header:
    """The date-and-time start of a message line, split from what follows it.

    fields: the three date numbers as written; stamp: date and time as written;
    sender: None for a system line; marked: the text began with an LRM (iOS system/media).
    """

    fields: tuple[str, str, str]
    sep: str
    hour: int
    minute: int
    second: int | None
    meridiem: str | None
    stamp: str
    sender: str | None
    text: str
    marked: bool
    ios: bool

    @property
    def date_text(self) -> str:
        """The date as written, e.g. 31/01/24."""
        return self.sep.join(self.fields)


@dataclass(frozen=True, slots=True)
class Record:
    """One message of the export, with its wall-clock time as written (naive)."""

    line: int
    local: datetime
    sender: str | None
    body: str
    kind: str
    text: str
    raw: str
    filename: str | None = None
    media_type: str | None = None
    voice: bool = False
    edited: bool = False


@dataclass(slots=True)
class Problem:
    """A line that could not be read; `lines` counts it and the lines skipped with it."""

    line: int
    reason: str
    lines: int = 1

    def __str__(self) -> str:
        after = self.lines - 1
        tail = "; skipped"
        if after:
            tail += f" with the {after} line{'s' * (after != 1)} after it"
        return f"line {self.line}: {self.reason}{tail}"


@dataclass(frozen=True, slots=True)
class OrderChoice:
    """The date order used, why, and a note when a --date-order was overruled."""

    order: str
    reason: str
    overruled: str | None = None

    @property
    def label(self) -> str:
        return ORDER_LABEL[self.order]


@dataclass
class Export:
    """A parsed export: its messages, unreadable lines, date order and style."""

    records: list[Record]
    problems: list[Problem]
    order: OrderChoice
    style: str
    lines: int

    @property
    def skipped_lines(self) -> int:
        """Lines left out: malformed headers, their continuations and stray text."""
        return sum(p.lines for p in self.problems)

    def senders(self) -> Counter[str]:
        """Named senders (system lines left out), with their message counts."""
        return Counter(r.sender for r in self.records if r.sender and r.kind != "system")


# -- lines and headers --------------------------------------------------------------------

def split_lines(text: str) -> list[str]:
    """Lines on \\n only (U+2028 and friends stay inside messages); a final newline ends one."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def strip_marks(line: str) -> tuple[str, frozenset[int]]:
    """The line without direction marks, and the positions (in it) that followed an LRM."""
    if not _MARK.search(line):
        return line, frozenset()
    after_lrm: set[int] = set()
    removed = 0
    for found in _MARK.finditer(line):
        if found.group() == LRM:
            after_lrm.add(found.start() - removed)
        removed += 1
    return _MARK.sub("", line), frozenset(after_lrm)


def match_header(line: str) -> Header | None:
    """The header of a line that starts a message; None for a continuation line."""
    clean, after_lrm = strip_marks(line)
    found = _IOS.fullmatch(clean) or _ANDROID.fullmatch(clean)
    if found is None:
        return None
    rest, start = found.group("rest"), found.start("rest")
    sender, text, offset = split_sender(rest)
    meridiem = found.group("ap")
    return Header(
        fields=(found.group("a"), found.group("b"), found.group("c")), sep=found.group("sep"),
        hour=int(found.group("h")), minute=int(found.group("mi")),
        second=int(found.group("s")) if found.group("s") else None,
        meridiem=meridiem.lower() + "m" if meridiem else None,
        stamp=found.group("stamp"), sender=sender, text=text,
        marked=start + offset in after_lrm, ios=clean.startswith("["),
    )


def split_sender(rest: str) -> tuple[str | None, str, int]:
    """(sender, text, offset of text in rest); sender None for a system line."""
    name, sep, text = rest.partition(": ")
    if not sep or len(name) > MAX_SENDER or _GROUP_EVENT.search(name) or not name.strip():
        return None, rest, 0
    if _SYSTEM_TEXT.match(rest):  # e.g. "Your security code with Asha: ..." on one line
        return None, rest, 0
    return name.strip(), text, len(name) + len(sep)


# -- date order ---------------------------------------------------------------------------

class Dated(NamedTuple):
    """A header's date as found: line number, the three fields, and how it was written."""

    line: int
    fields: tuple[str, str, str]
    text: str


def ymd(fields: tuple[str, str, str], order: str) -> tuple[int, int, int]:
    """(year, month, day) numbers of the date fields read in `order`."""
    a, b, c = (int(f) for f in fields)
    if order == "ymd":
        return a, b, c
    return (c, b, a) if order == "dmy" else (c, a, b)


def plausible(fields: tuple[str, str, str], order: str) -> bool:
    """Whether the fields can be a date in `order` (ranges only, not the calendar)."""
    if (len(fields[0]) == 4) != (order == "ymd"):
        return False
    _, month, day = ymd(fields, order)
    return 1 <= month <= 12 and 1 <= day <= 31


def detect_order(dated: Iterable[Dated], requested: str | None = None) -> OrderChoice:
    """The date order that reads most header dates; `requested` decides only between ties."""
    tally = OrderTally()
    for d in dated:
        tally.add(d)
    return tally.choose(requested)


_GROUPS = [frozenset(g) for g in (("dmy", "mdy"), ("dmy", "ymd"), ("mdy", "ymd"), ORDERS)]


class OrderTally:
    """What the date order is chosen from, gathered one header date at a time (a file is
    read once for it, and nothing per line is kept)."""

    def __init__(self) -> None:
        self.dates = 0
        self.counts = dict.fromkeys(ORDERS, 0)
        self.evidence: dict[str, Dated] = {}  # the first date that reads only one way
        # per group of orders a tie can leave: each order's last date and backward steps
        self.sequences = {g: {o: [None, 0] for o in g} for g in _GROUPS}
        self._seen: dict[tuple[str, str, str], frozenset[str]] = {}

    def add(self, dated: Dated) -> None:
        readings = self._seen.get(dated.fields)
        if readings is None:
            readings = frozenset(o for o in ORDERS if plausible(dated.fields, o))
            self._seen[dated.fields] = readings
        self.dates += 1
        for order in readings:
            self.counts[order] += 1
        if len(readings) == 1:
            self.evidence.setdefault(next(iter(readings)), dated)
        for group, steps in self.sequences.items():
            if group <= readings:
                for order, step in steps.items():
                    date = ymd(dated.fields, order)
                    if step[0] is not None and date < step[0]:
                        step[1] += 1
                    step[0] = date

    def choose(self, requested: str | None = None) -> OrderChoice:
        """The order that reads most dates; `requested` decides only between ties."""
        if not self.dates:
            return OrderChoice(requested or "dmy", "no dated lines")
        best = max(self.counts.values())
        candidates = [o for o in ORDERS if self.counts[o] == best]
        if len(candidates) == 1:
            (order,) = candidates
            evidence = self._evidence(order)
            overruled = None
            if requested and requested != order:
                overruled = f"--date-order {requested} ignored: {evidence}"
            return OrderChoice(order, f"detected: {evidence}", overruled)
        if requested in candidates:
            return OrderChoice(requested, "from --date-order (the dates read either way)")
        by_sequence = self._by_sequence(candidates)
        if by_sequence:
            return OrderChoice(by_sequence, "detected from the order of the messages "
                                            "(each date reads either way)")
        order = "dmy" if "dmy" in candidates else candidates[0]
        others = " or ".join(f"--date-order {o}" for o in candidates if o != order)
        overruled = (f"--date-order {requested} ignored: no date reads that way"
                     if requested else None)
        return OrderChoice(order, f"assumed: the dates read either way (pass {others} if "
                                  "wrong)", overruled)

    def _evidence(self, order: str) -> str:
        """`line 12 reads 31/01/24 only as d/m/y` for the first date that settles it."""
        d = self.evidence.get(order)
        if d is not None:
            return f"line {d.line} reads {d.text} only as {ORDER_LABEL[order]}"
        return f"most dates read only as {ORDER_LABEL[order]}"

    def _by_sequence(self, candidates: list[str]) -> str | None:
        """The one order under which the dates go backwards least often, if there is one."""
        backwards = {o: n for o, (_, n) in self.sequences[frozenset(candidates)].items()}
        fewest = min(backwards.values())
        winners = [o for o in candidates if backwards[o] == fewest]
        return winners[0] if len(winners) == 1 else None


def local_time(header: Header, order: str) -> datetime:
    """The naive wall-clock time of a header; ValueError says what is wrong with it."""
    year, month, day = ymd(header.fields, order)
    if year < 100:
        year += 2000
    hour = header.hour
    if header.meridiem:
        if not 1 <= hour <= 12:
            raise ValueError(f"hour {hour} does not exist on a 12-hour clock")
        hour = hour % 12 + (12 if header.meridiem == "pm" else 0)
    return datetime(year, month, day, hour, header.minute, header.second or 0)


# -- message bodies -----------------------------------------------------------------------

@dataclass(slots=True)
class Content:
    """Kind, display text and media details of one message body."""

    kind: str
    text: str
    filename: str | None = None
    media_type: str | None = None
    voice: bool = False
    edited: bool = False


def classify(sender: str | None, body: str, marked: bool) -> Content:
    """What a message body is: text, media, a deleted message or a system notice."""
    if sender is None:
        return Content("system", body.strip())
    edited = bool(_EDITED.search(body))
    body = _EDITED.sub("", body)
    content = _media(body)
    if content is None:
        if body.strip() in _DELETED:
            content = Content("revoke", "")
        elif marked or _SYSTEM_TEXT.match(body):
            content = Content("system", body.strip())
        else:
            content = Content("text", body)
    content.edited = edited
    return content


def _media(body: str) -> Content | None:
    """A media line of any of the export styles, with the caption that follows it."""
    first, _, caption = body.partition("\n")
    if first.strip() in _OMITTED:
        return Content("media_placeholder", caption.strip())
    attached = _FILE_ATTACHED.fullmatch(first.strip())
    if attached:
        return _attached(attached.group("file").strip(), caption.strip())
    attached = _IOS_ATTACHED.search(body)
    if attached:
        rest = (body[:attached.start()] + body[attached.end():]).strip()
        return _attached(attached.group("file").strip(), rest)
    omitted = _IOS_OMITTED.fullmatch(body.strip())
    if omitted:
        what = omitted.group("what").lower()
        name = omitted.group("file")
        return Content("media_placeholder", "", filename=name.strip() if name else None,
                       media_type=_OMITTED_KIND[what])
    return None


def _attached(filename: str, caption: str) -> Content:
    kind = media_kind(filename)
    voice = filename.startswith("PTT-") or "-PTT-" in filename
    return Content(kind, caption, filename=filename, media_type=kind, voice=voice)


def media_kind(filename: str) -> str:
    """image, video, audio, sticker or document, from WhatsApp's name tag or the extension."""
    tag = _NAME_TAG.match(filename)
    if tag and tag.group("tag") in _TAG_KIND:
        return _TAG_KIND[tag.group("tag")]
    extension = filename.rpartition(".")[2].lower() if "." in filename else ""
    return _EXT_KIND.get(extension, "document")


# -- the whole file -----------------------------------------------------------------------

@dataclass(slots=True)
class _Draft:
    line: int
    local: datetime
    header: Header
    raw: list[str]
    body: list[str] = field(default_factory=list)

    def finish(self) -> Record:
        body = "\n".join([self.header.text, *self.body])
        content = classify(self.header.sender, body, self.header.marked)
        return Record(line=self.line, local=self.local, sender=self.header.sender, body=body,
                      kind=content.kind, text=content.text, raw="\n".join(self.raw),
                      filename=content.filename, media_type=content.media_type,
                      voice=content.voice, edited=content.edited)


def parse_export(text: str, date_order: str | None = None,
                 now: datetime | None = None) -> Export:
    """Records and problems of a whole export; the date order is read from all its dates.

    `now` (default: the current time) sets the latest message time taken as real. The
    importer streams a file through `scan`, `Assembler` and `Messages` instead.
    """
    lines = split_lines(text)
    found = scan(lines, date_order)
    assembler = Assembler(found.order.order, latest(now), keep=None)
    records = list(assembler.records(lines))
    return Export(records, assembler.problems, found.order, found.style, found.lines)


@dataclass
class Scan:
    """A first read of an export: the date order, the style and the number of lines."""

    order: OrderChoice
    style: str
    lines: int


def scan(lines: Iterable[str], date_order: str | None = None) -> Scan:
    """Read every header's date (keeping none of them) to choose the date order."""
    tally = OrderTally()
    styles: set[bool] = set()
    count = 0
    for count, line in enumerate(lines, 1):
        header = match_header(line)
        if header is not None:
            tally.add(Dated(count, header.fields, header.date_text))
            styles.add(header.ios)
    style = {frozenset({True}): "iOS", frozenset({False}): "Android"}.get(
        frozenset(styles), "mixed Android and iOS" if styles else "unknown")
    return Scan(tally.choose(date_order), style, count)


def latest(now: datetime | None = None) -> datetime:
    """The latest wall-clock time a message can show: tomorrow at this time, in UTC."""
    return (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None) + AHEAD


def unreal(local: datetime, last: datetime) -> str | None:
    """Why a wall-clock time cannot be a message's, or None when it can be."""
    if local > last:
        return f"later than {last:%Y-%m-%d}: no message is sent in the future"
    if local < EARLIEST:
        return f"before {EARLIEST:%Y}: no phone dates a message that early"
    return None


class Assembler:
    """Groups lines into records as they stream past; a bad header is reported and skipped
    with its continuations.

    A header whose time is not a valid date in `order`, is later than `last` or is before
    1970 is bad. `problems` keeps the first `keep` of them (None: all); `problem_count`
    and `skipped_lines` count every one.
    """

    def __init__(self, order: str, last: datetime, keep: int | None = 1000) -> None:
        self.order, self.last, self.keep = order, last, keep
        self.problems: list[Problem] = []
        self.problem_count = 0
        self.skipped_lines = 0

    def records(self, lines: Iterable[str]) -> Iterator[Record]:
        draft: _Draft | None = None
        skipping: Problem | None = None
        for number, line in enumerate(lines, 1):
            header = match_header(line)
            if header is not None:
                if draft is not None:
                    yield draft.finish()
                draft = skipping = None
                local, reason = self._time(header)
                if local is not None:
                    draft = _Draft(number, local, header, [line])
                    continue
                skipping = self._problem(number, reason)
            elif draft is not None:
                draft.raw.append(line)
                draft.body.append(strip_marks(line)[0])
            elif skipping is not None:
                skipping.lines += 1
                self.skipped_lines += 1
            elif strip_marks(line)[0].strip():
                skipping = self._problem(number, "not part of a message (no date and time at "
                                                 "its start, and no message before it)")
        if draft is not None:
            yield draft.finish()

    def _time(self, header: Header) -> tuple[datetime | None, str]:
        """(the header's wall-clock time, "") or (None, why it cannot be a message's)."""
        try:
            local = local_time(header, self.order)
        except ValueError as exc:
            return None, (f'"{header.stamp}" is not a valid date and time as '
                          f"{ORDER_LABEL[self.order]} ({exc})")
        why = unreal(local, self.last)
        if why:
            return None, f'"{header.stamp}" cannot be the time of a message ({why})'
        return local, ""

    def _problem(self, number: int, reason: str) -> Problem:
        problem = Problem(number, reason)
        self.problem_count += 1
        self.skipped_lines += 1
        if self.keep is None or len(self.problems) < self.keep:
            self.problems.append(problem)
        return problem


def assemble(lines: Sequence[str], order: str,
             last: datetime | None = None) -> tuple[list[Record], list[Problem]]:
    """Records and problems of all `lines` (see `Assembler`)."""
    assembler = Assembler(order, last or latest(), keep=None)
    records = list(assembler.records(lines))
    return records, assembler.problems


# -- ids and messages ---------------------------------------------------------------------

def stable_id(conversation: str, local: datetime, sender: str | None, body: str,
              occurrence: int) -> str:
    """`import:<sha256 prefix>` of what identifies a message in any re-export of the chat."""
    key = json.dumps([conversation, local.isoformat(), sender or "", body, occurrence],
                     ensure_ascii=False, separators=(",", ":"))
    return ID_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]


def provider_ids(records: Sequence[Record], conversation: str) -> list[str]:
    """One stable id per record; identical repeats at the same time are numbered in order."""
    occurrences = Occurrences(revisited_times(r.local for r in records))
    return [stable_id(conversation, r.local, r.sender, r.body, occurrences.next(r))
            for r in records]


def revisited_times(times: Iterable[datetime]) -> Revisited:
    """The times a file comes back to after a later one (clock changes, edits): usually
    none. Repeats of any other time follow each other, so only these need remembering."""
    revisited = Revisited()
    last: datetime | None = None
    for time in times:
        if last is not None and time < last:
            revisited.add(time)
        else:
            last = time
    return revisited


class Revisited:
    """Revisited times kept in at most MAX_SPANS spans (first, last), so memory stays flat
    however many there are (an export whose dates run through the year twice revisits every
    time of its second lap). A span may cover times never revisited: their records are then
    counted as revisited ones are (see Occurrences), which gives them the same numbers."""

    MAX_SPANS = 64
    JOIN = timedelta(hours=1)  # a revisited time this close to a span extends it

    def __init__(self) -> None:
        self.starts: list[datetime] = []  # sorted, spans disjoint
        self.ends: list[datetime] = []

    def __contains__(self, time: object) -> bool:
        if not isinstance(time, datetime):
            return False
        i = bisect_right(self.starts, time) - 1
        return i >= 0 and time <= self.ends[i]

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, time: datetime) -> None:
        i = bisect_right(self.starts, time) - 1
        if i >= 0 and time <= self.ends[i] + self.JOIN:
            self.ends[i] = max(self.ends[i], time)
        else:
            i += 1
            self.starts.insert(i, time)
            self.ends.insert(i, time)
        if i + 1 < len(self.starts) and self.starts[i + 1] <= self.ends[i] + self.JOIN:
            self._join(i)
        if len(self.starts) > self.MAX_SPANS:  # join the two spans closest to each other
            self._join(min(range(len(self.starts) - 1),
                           key=lambda k: self.starts[k + 1] - self.ends[k]))

    def _join(self, i: int) -> None:
        """Span i and span i + 1 become one."""
        self.ends[i] = max(self.ends[i], self.ends.pop(i + 1))
        self.starts.pop(i + 1)


class Census:
    """What a first read of the records tells before any is stored: how many there are,
    who sent them, and the times the file comes back to (see `revisited_times`)."""

    def __init__(self) -> None:
        self.count = 0
        self.senders: Counter[str] = Counter()
        self.revisited = Revisited()
        self._last: datetime | None = None

    def add(self, record: Record) -> None:
        self.count += 1
        if record.sender and record.kind != "system":
            self.senders[record.sender] += 1
        if self._last is not None and record.local < self._last:
            self.revisited.add(record.local)
        else:
            self._last = record.local


class Occurrences:
    """Numbers identical records (time, sender, body) in file order, keeping only what a
    later record can still repeat: the latest time so far in memory, and the revisited
    times' counts in a private temporary SQLite file (as many as the file has records at
    revisited times: memory stays flat)."""

    def __init__(self, revisited: Revisited) -> None:
        self.revisited = revisited
        self.latest: datetime | None = None
        self.current: Counter[tuple[str | None, str]] = Counter()
        self._earlier: sqlite3.Connection | None = None  # opened at the first revisited time

    def next(self, record: Record) -> int:
        """How many identical records came before this one."""
        if record.local in self.revisited:
            return self._count_earlier(record)
        if record.local != self.latest:  # a later time: nothing can repeat the one before
            self.latest = record.local
            self.current.clear()
        short = (record.sender, record.body)
        seen, self.current[short] = self.current[short], self.current[short] + 1
        return seen

    def _count_earlier(self, record: Record) -> int:
        if self._earlier is None:
            self._earlier = sqlite3.connect("")  # "": a temporary file, deleted when closed
            self._earlier.executescript(EARLIER)
        key = hashlib.blake2b(json.dumps(
            [record.local.isoformat(), record.sender, record.body]).encode(),
            digest_size=16).digest()
        (seen,) = self._earlier.execute(COUNT_EARLIER, (key,)).fetchone()
        return int(seen)

    def close(self) -> None:
        if self._earlier is not None:
            self._earlier.close()
            self._earlier = None


EARLIER = ("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
           "CREATE TABLE seen (key BLOB PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;")
COUNT_EARLIER = ("INSERT INTO seen VALUES (?, 0) ON CONFLICT (key) DO UPDATE SET n = n + 1 "
                 "RETURNING n")


def same_person(a: str, b: str) -> bool:
    """Names equal after Unicode, case, spacing and a leading "~" (non-contacts) are ignored."""
    return _name_key(a) == _name_key(b)


def _name_key(name: str) -> str:
    text = unicodedata.normalize("NFKC", strip_marks(name)[0]).casefold()
    return " ".join(text.lstrip("~").split())


def to_utc(local: datetime, zone: tzinfo | None) -> datetime:
    """Aware UTC time of a wall-clock time in `zone` (None: this computer's local time)."""
    aware = local.replace(tzinfo=zone) if zone is not None else local.astimezone()
    return aware.astimezone(UTC)


def to_messages(records: Sequence[Record], conversation: str, *, me: str | None,
                zone: tzinfo | None, source: str = "whatsapp") -> list[Message]:
    """Messages of a conversation: `me` is the business (out); everyone else is `in`."""
    named = {r.sender for r in records if r.sender and r.kind != "system"}
    maker = Messages(conversation, me=me, zone=zone, senders=len(named),
                     revisited=revisited_times(r.local for r in records), source=source)
    return [maker.message(r) for r in records]


class Messages:
    """Turns records streaming past into messages, as `to_messages` does for a list.

    senders: how many people sent messages (a first read counts them); revisited: the
    times the file comes back to (`revisited_times` of that read).
    """

    def __init__(self, conversation: str, *, me: str | None, zone: tzinfo | None,
                 senders: int, revisited: Revisited, source: str = "whatsapp") -> None:
        self.conversation, self.me, self.zone, self.source = conversation, me, zone, source
        self.names_known = me is not None or senders <= 1
        self.occurrences = Occurrences(revisited)
        self.last: datetime | None = None  # the previous message's time (UTC)

    def message(self, record: Record) -> Message:
        pid = stable_id(self.conversation, record.local, record.sender, record.body,
                        self.occurrences.next(record))
        self.last = sent_at = self.sent_at(record.local)
        return _message(record, pid, self.conversation, self.me, sent_at, self.source,
                        self.names_known)

    def sent_at(self, local: datetime) -> datetime:
        """The UTC time of a wall-clock time, read in file order: in the hour a DST change
        shows twice (the clocks go back), a time earlier than the message before it is
        the second of its two readings. Read as the first, the messages after the change
        were dated an hour early and went before the ones they answered."""
        first = to_utc(local, self.zone)
        if self.last is not None and first < self.last:
            second = to_utc(local.replace(fold=1), self.zone)
            if second > first:
                return second
        return first


def _message(record: Record, provider_id: str, conversation: str, me: str | None,
             sent_at: datetime, source: str, names_known: bool) -> Message:
    system = record.kind == "system"
    mine = bool(me and record.sender and not system and same_person(record.sender, me))
    media = None
    if record.filename:
        media = Media(filename=record.filename, caption=record.text or None, voice=record.voice)
    extra: dict[str, object] = {"imported": True}
    if record.sender:
        extra["sender"] = record.sender
    if record.media_type:
        extra["media_type"] = record.media_type
    if record.edited:
        extra["edited"] = True
    return Message(
        source=source, provider_id=provider_id, conversation=conversation, account="",
        direction=Direction.OUT if mine else Direction.IN, sent_at=sent_at,
        kind=record.kind, text=record.text, media=media,
        contact_name=record.sender if names_known and not (mine or system) else None,
        history=True, extra=extra, raw={"export_line": record.line, "export_text": record.raw},
    )
