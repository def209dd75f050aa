"""One short human line per message, for transcripts (the sink adds time and sender).

Provider-neutral: it reads only Message fields and the `extra` keys sources agree on
(location, contacts, interactive, button, reaction, order, system, edit, template,
unsupported_type, hint, forwarded, frequently_forwarded, referral, referred_product,
failed, target). Odd `extra` contents never raise; they render as less detail.

A message this one is about (a reply's quote, a reaction's, an edit's or a deletion's
target) that the buffer looked up and does not hold (`target: {"found": False}`: it
predates the install, or came on a number the bridge does not serve) reads as "an earlier
message": its id names nothing a reader of a transcript can find. Without the look-up
(the status page) the short id stays, for an operator to search the raw payloads.

A line is safe to put in a transcript: every field (names, captions, file names, titles,
addresses ...) has control characters and line breaks folded to a space, direction
overrides removed and a bounded length; a text body keeps its line breaks as " ⏎ ", so no
part of a message can start a line of its own.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from bridge.model import Message

NEWLINE = " ⏎ "
EARLIER = "an earlier message"  # a target the buffer looked up and does not hold
TARGET_KINDS = frozenset({"reaction", "edit", "revoke"})  # their reply_to is a target, not a quote
FORM_LIMIT = 300  # characters of a form reply's fields
FIELD_LIMIT = 200  # characters of one field: a name, a title, an address, a file name
CAPTION_LIMIT = 1024  # the longest caption the chat apps allow
_PATH_PARTS = re.compile(r"[/\\]")  # folder separators in a sent file name (POSIX, Windows)
_EXT_LIMIT = 16  # characters of a file name's extension kept whole when the name is cut
# Bidirectional controls (embeddings, overrides, isolates, marks) can make text display in
# an order other than the one it is stored in; none is needed to read a transcript.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_BREAK = "\x00-\x1f\x7f-\x9f\u2028\u2029"  # controls and line breaks
_BREAKS = re.compile(f" *[{_BREAK}][ {_BREAK}]*")  # a run of them, with the spaces around
_CONTROLS = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]")  # not line breaks
# A lone surrogate (JSON's "\ud800" escape carries one) has no UTF-8 form: a CRM gets the
# replacement character, as any UTF-8 encoder's "replace" would write it.
_SURROGATES = re.compile("[\ud800-\udfff]")


def render_line(message: Message, quotes: Mapping[str, str] | None = None,
                tz: tzinfo = UTC) -> str:
    """The message as one line: its text, or an emoji-tagged summary of what it carries.

    `quotes` maps provider ids to short texts: a reply or reaction to one of them shows
    that text instead of the bare id. An ad referral comes first ("📣 from ad: ..."); a
    failed send ends the line ("❌ not delivered: ..."); an edit, a deletion or a failure
    notice names the message it is about by its time (in `tz`) and first words.
    """
    if message.kind == "reaction":
        line = _reaction(message, quotes, tz)
    elif message.kind in ("edit", "revoke", "status"):
        line = _changed(message, tz)
    else:
        line = _RENDERERS.get(message.kind, _unknown)(message)
    if message.kind not in TARGET_KINDS:
        line = _prefix(message, quotes) + line
    return _one_line(_referral(message) + line + _failure(message))


def lead_in(message: Message, quotes: Mapping[str, str] | None = None) -> str:
    """What render_line puts before the message's own content: its ad referral and its
    reply or forward prefix (which quotes the replied-to message when `quotes` has it)."""
    prefix = "" if message.kind in TARGET_KINDS else _prefix(message, quotes)
    return _one_line(_referral(message) + prefix)


def _one_line(line: str) -> str:
    """Without bidi controls, other controls or lone surrogates; line breaks shown as ⏎."""
    line = _SURROGATES.sub("\ufffd", _CONTROLS.sub(" ", _BIDI.sub("", line)))
    return NEWLINE.join(line.splitlines())


def _referral(message: Message) -> str:
    """`📣 from ad: <headline> <source URL> ⏎ ` for a message that came through an ad."""
    ref = _info(message, "referral")
    if not ref:
        return ""
    words = " ".join(p for p in (clean(ref.get("headline")), clean(ref.get("source_url"))) if p)
    return f"📣 from ad: {words or clean(ref.get('source_type')) or 'an ad'}{NEWLINE}"


def failure_text(failed: Mapping[str, Any]) -> str:
    """`❌ not delivered: <Meta's title> (<code>)`."""
    title = clean(failed.get("title")) or "failed"
    code = _scalar(failed.get("code"))
    return f"❌ not delivered: {title}" + (f" ({code})" if code else "")


def _failure(message: Message) -> str:
    failed = _info(message, "failed")
    return f" · {failure_text(failed)}" if failed else ""


def first_words(text: object, words: int = 6, limit: int = 40) -> str:
    """The start of a message for naming it: a few words, cut to `limit` characters."""
    full = clean(text)
    head = " ".join(full.split()[:words])
    return quote(head if head == full else head + "…", limit)


def in_zone(when: datetime, tz: tzinfo | None, fmt: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
    """`when` formatted in `tz` (None: this machine's zone); in UTC when it has no local
    time there: a stamp from a wrong clock late in year 9999 is year 10000 in a zone ahead
    of UTC, which no datetime holds (one such message made the status page answer 500)."""
    try:
        return when.astimezone(tz).strftime(fmt)
    except (OverflowError, ValueError):
        return when.astimezone(UTC).strftime(fmt)


def _named(message: Message, tz: tzinfo) -> str:
    """The message an edit, deletion, reaction or failure notice is about: time and first
    words, or what it is when it has no words (a photo without caption, a location)."""
    target = _info(message, "target")
    at = target.get("at")
    if not isinstance(at, int | float):
        if _missing(message):
            return EARLIER
        target_id = message.reply_to or _extra(message).get("failed_of")
        return f"message {short_id(target_id)}" if target_id else "a message"
    when = in_zone(datetime.fromtimestamp(at, UTC), tz, "%Y-%m-%d %H:%M")
    words, what = first_words(target.get("text")), _kind_name(target)
    return f"the message of {when}" + (f" “{words}”" if words else f" ({what})" if what else "")


# What a message with no words of its own is, for naming it (`target.kind`).
_KIND_NAMES = {"image": "📷 Photo", "video": "🎥 Video", "audio": "🎵 Audio",
               "document": "📄 Document", "sticker": "🏷️ Sticker", "location": "📍 Location",
               "contacts": "👤 Contact", "interactive": "🔘 Reply", "button": "🔘 Button",
               "order": "🛒 Order", "media_placeholder": "📎 Media",
               "template": "📋 Template"}


def _kind_name(target: Mapping[str, Any]) -> str | None:
    """What a message without words is (`target.kind`), a template with its name."""
    what = _KIND_NAMES.get(_scalar(target.get("kind")))
    name = _s(target.get("name"))
    return f"{what} {name}" if what and name else what


def _known(message: Message) -> bool:
    """Whether the buffer told when the message this one is about was sent (`target`)."""
    return isinstance(_info(message, "target").get("at"), int | float)


def _missing(message: Message) -> bool:
    """Whether the buffer looked the message this one is about up and does not hold it."""
    return _info(message, "target").get("found") is False


def _changed(message: Message, tz: tzinfo) -> str:
    named = _named(message, tz)
    if message.kind == "revoke":
        return f"🗑️ Deleted {named}"
    if message.kind == "status":
        return f"{failure_text(_info(message, 'failed'))}: {named}"
    if message.text:
        return f"✏️ Edited {named}: {message.text}"
    kind = _s(_info(message, "edit").get("kind"))
    return f"✏️ Edited {named}" + (f" ({kind})" if kind else "")


def displayable(text: str) -> str:
    """`text` safe to show on one line of a page or a terminal: direction controls
    removed, control characters (ESC starts a terminal escape sequence) and line breaks
    folded to a space; nothing cut."""
    return _BREAKS.sub(" ", _BIDI.sub("", text))


def clean(value: object, limit: int = FIELD_LIMIT) -> str:
    """A field as safe one-line text: controls and line breaks folded to one space,
    direction controls removed, cut to `limit` characters with an ellipsis."""
    text = _SURROGATES.sub("\ufffd", _BREAKS.sub(" ", _BIDI.sub("", _scalar(value)))).strip()
    return cut(text, limit)


def quote(line: str, limit: int = 40) -> str:
    """A rendered line cut to `limit` characters, for `quotes`."""
    return cut(line, limit)


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, ending in '…' when cut, and never cut inside
    what a reader sees as one character: an accent and its letter, an emoji with its skin
    tone or ZWJ partners (👨‍👩‍👧), the two halves of a flag (🇮🇳)."""
    if len(text) <= limit:
        return text
    end = max(0, limit - 1)
    while end > 0 and _joined(text, end):
        end -= 1
    return text[:end].rstrip() + "…"


# Code points that extend the one before them: ZWJ, variation selectors, skin tones, tags.
_EXTENDERS = re.compile("[\u200d\ufe00-\ufe0f\U0001f3fb-\U0001f3ff"
                        "\U000e0020-\U000e007f\U000e0100-\U000e01ef]")


def joined(text: str, i: int) -> bool:
    """Whether text[i] belongs to the same visible character as text[i - 1] (0 < i <
    len(text)): a cut before it would split what a reader sees as one character."""
    return _joined(text, i)


def _joined(text: str, i: int) -> bool:
    """Whether text[i] belongs to the same visible character as text[i - 1]."""
    char, before = text[i], text[i - 1]
    if before == "\u200d" or _EXTENDERS.match(char) or unicodedata.category(char) in MARKS:
        return True
    if _regional(char) and _regional(before):  # flags pair regional indicators
        run = len(text[:i]) - len(text[:i].rstrip(REGIONAL))
        return run % 2 == 1
    return _conjunct(text, i)


# Unicode 15.1's Indic conjunct break (UAX #29 GB9c): a consonant, a virama (InCB=Linker)
# and the consonant after it are one cluster ("स्त" in "नमस्ते"); cut between them, a note
# ends on a dangling halant. The linkers and consonants are DerivedCoreProperties 15.1's
# InCB values (Devanagari, Bengali, Gujarati, Oriya, Telugu, Malayalam); Python's own
# unicodedata (Unicode 14/15.0) has no InCB. UNSURE: later Unicode versions add linkers of
# other scripts; those are cut as before (never inside a mark, as any script).
LINKERS = "्্્୍్്"
_CONSONANTS = ((0x915, 0x939), (0x958, 0x95F), (0x978, 0x97F), (0x995, 0x9A8),
               (0x9AA, 0x9B0), (0x9B2, 0x9B2), (0x9B6, 0x9B9), (0x9DC, 0x9DD),
               (0x9DF, 0x9DF), (0x9F0, 0x9F1), (0xA95, 0xAA8), (0xAAA, 0xAB0),
               (0xAB2, 0xAB3), (0xAB5, 0xAB9), (0xAF9, 0xAF9), (0xB15, 0xB28),
               (0xB2A, 0xB30), (0xB32, 0xB33), (0xB35, 0xB39), (0xB5C, 0xB5D),
               (0xB5F, 0xB5F), (0xB71, 0xB71), (0xC15, 0xC28), (0xC2A, 0xC39),
               (0xC58, 0xC5A), (0xD15, 0xD3A))


def _consonant(char: str) -> bool:
    code = ord(char)
    return 0x900 <= code <= 0xD7F and any(lo <= code <= hi for lo, hi in _CONSONANTS)


def _conjunct(text: str, i: int) -> bool:
    """Whether text[i] is a consonant joined to the one before it by a virama (GB9c):
    consonant, then marks and ZWJs holding at least one linker, then text[i]."""
    if not _consonant(text[i]):
        return False
    j, linked = i - 1, False
    while j >= 0 and (text[j] == "\u200d" or unicodedata.category(text[j]) in ("Mn", "Me")):
        linked = linked or text[j] in LINKERS
        j -= 1
    return linked and j >= 0 and _consonant(text[j])


MARKS = ("Mn", "Mc", "Me")  # combining marks: accents, vowel signs
REGIONAL = "".join(chr(c) for c in range(0x1F1E6, 0x1F200))


def _regional(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def _target(message: Message, quotes: Mapping[str, str] | None) -> str:
    """The replied-to or reacted-to message as its line in the batch quotes it, else
    "an earlier message" when the buffer does not hold it, else its short id."""
    provider_id = message.reply_to
    if quotes and provider_id in quotes:
        return f"“{quotes[provider_id]}”"
    return EARLIER if _missing(message) else short_id(provider_id)


def _replied(message: Message, quotes: Mapping[str, str] | None) -> str:
    """What a reply quotes: the replied-to line when it is in `quotes`, else its first words
    (or what it is) when the buffer knows it (`target`: synced in an earlier activity),
    else "an earlier message" when the buffer does not hold it, else its id."""
    if (quotes and message.reply_to in quotes) or not _known(message):
        return _target(message, quotes)
    target = _info(message, "target")
    words = first_words(target.get("text")) or _kind_name(target)
    return f"“{words}”" if words else short_id(message.reply_to)


def _prefix(message: Message, quotes: Mapping[str, str] | None = None) -> str:
    extra = _extra(message)
    prefix = f"↩️ reply to {_replied(message, quotes)}: " if message.reply_to else ""
    prefix += _product(message)
    if extra.get("frequently_forwarded") is True:
        return "↪️ Forwarded many times: " + prefix
    if extra.get("forwarded") is True:
        return "↪️ Forwarded: " + prefix
    return prefix


def _product(message: Message) -> str:
    """`🛍️ about product SKU-9: ` for a product inquiry (context.referred_product): the
    product the customer asked from is what the rep needs to answer."""
    sku = _s(_info(message, "referred_product").get("product_retailer_id"))
    return f"🛍️ about product {sku}: " if sku else ""


def short_id(provider_id: object) -> str:
    """A message id short enough to read: long ids keep their last 8 characters."""
    text = _s(provider_id).rstrip("=")
    return text if len(text) <= 12 else "…" + text[-8:]


# -- safe readers --------------------------------------------------------------------------

def _extra(message: Message) -> Mapping[str, Any]:
    return message.extra if isinstance(message.extra, Mapping) else {}


def _info(message: Message, key: str) -> Mapping[str, Any]:
    value = _extra(message).get(key)
    return value if isinstance(value, Mapping) else {}


def _scalar(value: object) -> str:
    """Text of a scalar; "" for None and containers."""
    if value is None or isinstance(value, Mapping | list | tuple | set):
        return ""
    return str(value)


def _s(value: object) -> str:
    """Display text of a scalar field: one line, bounded (see `clean`)."""
    return clean(value)


def _items(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _number(value: object) -> float | None:
    """A finite number, also from a numeric string; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _quoted(text: str) -> str:
    return f'"{text}"' if text else ""


# -- one function per kind -----------------------------------------------------------------

def _text(message: Message) -> str:
    """The body; "(empty message)" when nothing of it would show (blanks, marks, breaks,
    the invisible characters chat app users send as a "blank message")."""
    text = _scalar(message.text)
    return text if visible(text) else "(empty message)"


# Characters that show nothing in a line of text: format characters (zero-width space,
# joiners, BOM), spaces and controls by category; and by name the blanks chat apps are
# used to send a "blank message" with (Hangul fillers, braille blank), the combining
# grapheme joiner and variation selectors.
_UNSEEN = frozenset("\u034f\u115f\u1160\u2800\u3164\uffa0") | frozenset(
    chr(c) for c in (*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)))


def visible(text: str) -> bool:
    """Whether any character of `text` shows as something a reader can see."""
    return any(c not in _UNSEEN and unicodedata.category(c) not in ("Cf", "Cc", "Zs", "Zl",
                                                                    "Zp") for c in text)


def _media_line(label: str, message: Message, name: str = "") -> str:
    """`label: name "caption" (mime, media id)`, leaving out what is unknown."""
    media = message.media
    caption = (clean(getattr(media, "caption", None), CAPTION_LIMIT)
               or clean(message.text, CAPTION_LIMIT))
    caption = caption if visible(caption) else ""
    head = " ".join(p for p in (name, _quoted(caption)) if p)
    media_id = _s(getattr(media, "id", None))
    details = [d for d in (_s(getattr(media, "mime_type", None)),
                           f"media {media_id}" if media_id else "") if d]
    line = label + (f": {head}" if head else "") + (f" ({', '.join(details)})" if details else "")
    note = file_note(message)
    return f"{line} {note}" if note else line


def file_name(message: Message) -> str:
    """The name a fetched file goes by: as sent, else kind + sha256 prefix + extension."""
    import mimetypes

    file = message.file
    sent = _sent_name(getattr(message.media, "filename", None))
    if sent:
        return sent
    # named by the message, not the bytes: the line names it the same before the fetch,
    # so the webhook's type first (the lookup may state another: the text posted before the
    # fetch named '.jpg', the attachment came as '.png'); the file's when the webhook had none
    mime = _s(getattr(message.media, "mime_type", None)) or (file.mime_type if file else None)
    ext = mimetypes.guess_extension((mime or "").split(";")[0].strip()) or ""
    tag = "".join(c for c in message.provider_id if c.isalnum())[-12:] or "file"
    return f"{message.kind}-{tag}{ext}"


def _sent_name(value: object) -> str:
    """The sender's file name as a file name: its last path part ('../x/a.pdf' and
    'C:\\x\\a.pdf' are 'a.pdf': the CRM took the folders as part of the name), cut to
    FIELD_LIMIT keeping its extension (a 300-character name reached LeadSquared as
    'aaa…', a file no one could open by its type); '' when nothing is left."""
    name = _PATH_PARTS.split(clean(value, 10**6))[-1].strip()
    if name in (".", ".."):
        return ""
    stem, dot, ext = name.rpartition(".")
    if len(name) <= FIELD_LIMIT or not (dot and stem.strip() and len(ext) <= _EXT_LIMIT):
        return cut(name, FIELD_LIMIT)
    return cut(stem, FIELD_LIMIT - len(ext) - 1) + "." + ext


def file_note(message: Message) -> str:
    """What the bridge did with the media's file, in brackets ('' when it fetches none)."""
    file = message.file
    if file is None:
        return ""
    if file.state == "fetched":
        return f"[file {file_name(message)}, {_size(file.size or 0)}]"
    if file.state == "pending":
        return f"[file {file_name(message)} follows]"
    reason = clean((file.reason or "").split(" (")[0], CAPTION_LIMIT)
    if file.state == "held":
        return f"[file {reason}]" if reason else "[file not fetched]"
    return f"[file not available: {reason}]" if reason else "[file not available]"


def _size(size: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"


def _image(message: Message) -> str:
    return _media_line("📷 Photo", message)


def _video(message: Message) -> str:
    return _media_line("🎥 Video", message)


def _audio(message: Message) -> str:
    voice = getattr(message.media, "voice", False) is True
    return _media_line("🎤 Voice message" if voice else "🎵 Audio", message)


def _document(message: Message) -> str:
    return _media_line("📄 Document", message, _s(getattr(message.media, "filename", None)))


def _sticker(message: Message) -> str:
    animated = getattr(message.media, "animated", False) is True
    return _media_line("🏷️ Animated sticker" if animated else "🏷️ Sticker", message)


def _location(message: Message) -> str:
    place = _info(message, "location")
    where = ", ".join(p for p in (_s(place.get("name")), _s(place.get("address"))) if p)
    lat, lon = _number(place.get("latitude")), _number(place.get("longitude"))
    coords = (f" ({_degrees(lat)}, {_degrees(lon)})" if lat is not None and lon is not None
              else "")
    url = _s(place.get("url"))
    return "📍 Location" + (f": {where}" if where else "") + coords + (f" {url}" if url else "")


def _degrees(value: float) -> str:
    """A coordinate as sent, to 7 decimals (about a centimetre): `g`'s six significant
    digits moved a pin at longitude 151.2092955 by some 30 metres."""
    text = f"{value:.7f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _contacts(message: Message) -> str:
    cards = [_card(c) for c in _items(_extra(message).get("contacts"))]
    label = "👤 Contacts" if len(cards) > 1 else "👤 Contact"
    return f"{label}: {'; '.join(cards)}" if cards else label


def _card(card: Mapping[str, Any]) -> str:
    """`Name +91..., a@b.example`."""
    details = [_s(v) for key in ("phones", "emails") for v in _list(card.get(key))]
    reach = ", ".join(d for d in details if d)
    return " ".join(p for p in (_s(card.get("name")), reach) if p) or "(no details)"


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _interactive(message: Message) -> str:
    """A chosen button or list row, a submitted form, or another interactive reply; or
    the buttons, list or link the business sent (`sent`)."""
    info = _info(message, "interactive")
    if info.get("sent") is True:
        return _sent_interactive(message, info)
    response = info.get("response")
    if isinstance(response, Mapping):
        fields = _fields(response)
        return "📝 Form reply" + (f": {fields}" if fields else _text_suffix(message))
    title = _s(info.get("title"))
    if title:  # a list row's description tells rows of one title apart ("10:00", Dr. Rao)
        about = _s(info.get("description"))
        return f"🔘 Chose {_quoted(title)}" + (f" ({about})" if about else "")
    if _s(response):
        return f"🔘 Replied {_quoted(_s(response))}"
    kind = _s(info.get("type"))
    return "🔘 Interactive reply" + (f" ({kind})" if kind else "") + _text_suffix(message)


def _fields(response: Mapping[str, Any]) -> str:
    """`name: Asha, products: sofa / lamp, address city: Pune, agree: yes`: a Flow's
    answers, nested ones under their parent's name, lists joined with " / "."""
    text = ", ".join(f"{name}: {value}" for name, value in _answers(response, "", 0))
    return text if len(text) <= FORM_LIMIT else text[:FORM_LIMIT - 1] + "…"


def _answers(response: Mapping[str, Any], parent: str, depth: int) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for key, value in response.items():
        name = " ".join(p for p in (parent, _s(key)) if p)
        if isinstance(value, Mapping) and depth < 3:
            found.extend(_answers(value, name, depth + 1))
        elif shown := _answer(value):
            found.append((name, shown))
    return found


def _answer(value: object) -> str:
    """A Flow answer as text: yes/no for a checkbox, a list's items joined with " / "."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return " / ".join(p for p in (_answer(v) for v in value[:50]) if p)
    if isinstance(value, Mapping):
        return " / ".join(f"{_s(k)}: {a}" for k, v in value.items() if (a := _answer(v)))
    return _s(value)


# What the business sent, by the send request's interactive type.
_SENT = {"button": "buttons", "list": "a list", "cta_url": "a link", "flow": "a form",
         "product": "a product", "product_list": "products", "catalog_message": "the catalog",
         "location_request_message": "a location request", "address_message": "an address form",
         "call_permission_request": "a call permission request", "carousel": "a carousel",
         "voice_call": "a call button"}


def _sent_interactive(message: Message, info: Mapping[str, Any]) -> str:
    """`🔘 Sent buttons: "Which day suits you?" [Tuesday | Wednesday]`; a list's button
    label after its name (`🔘 Sent a list "See slots": ...`); a media header in words."""
    kind = _s(info.get("type"))
    what = _SENT.get(kind) or "an interactive message" + (f" ({kind})" if kind else "")
    body = _visible_text(message)
    options = [o for o in (_s(v) for v in _list(info.get("options"))[:20]) if o]
    header = _s(info.get("header"))
    media = _s(info.get("header_kind"))
    line = f"🔘 Sent {what}" + (f" {_quoted(_s(info.get('button')))}"
                                 if _s(info.get("button")) else "")
    if header:
        line += f": {_quoted(header)}"
    if body:
        line += f"{' —' if header else ':'} {_quoted(body)}"
    if options:
        line += f" [{' | '.join(options)}]"
    if media in _HEADER_MEDIA:
        line += f" · {_HEADER_MEDIA[media]} header"
    return line


def _visible_text(message: Message) -> str:
    """The message's text (its line breaks kept, as ⏎), or "" when nothing of it shows."""
    text = _scalar(message.text)
    return text if visible(text) else ""


# -- templates the business sent -------------------------------------------------------------

_HEADER_MEDIA = {"image": "📷 image", "video": "🎥 video", "gif": "🎥 GIF",
                 "document": "📄 document", "location": "📍 location"}


def _template(message: Message) -> str:
    """`📋 Template "order_update" (en_US): "<body>" · 📷 image header · values: Lucy |
    $9.90 · buttons: quick reply, link`: as much of a template the business sent as its
    source knows (a send request names the template and its parameters, not its text)."""
    info = _info(message, "template")
    name, language = _s(info.get("name")), _s(info.get("language"))
    line = "📋 Template" + (f" {_quoted(name)}" if name else "") + (
        f" ({language})" if language else "")
    body = _visible_text(message)
    if body:
        line += f": {_quoted(body)}"
    details = [_template_header(info.get("header")), _template_values(info.get("values")),
               _template_footer(info.get("footer")), _template_buttons(info.get("buttons")),
               _template_cards(info.get("cards")),
               "⏳ limited-time offer" if info.get("offer") is True else ""]
    line += "".join(f" · {d}" for d in details if d)
    return line if line != "📋 Template" else "📋 Template message"


def _template_header(header: object) -> str:
    if not isinstance(header, Mapping):
        return ""
    kind, text = _s(header.get("kind")), _s(header.get("text"))
    if kind in _HEADER_MEDIA:
        name = _s(header.get("filename")) or text
        return f"{_HEADER_MEDIA[kind]} header" + (f" {name}" if name else "")
    return f"header {_quoted(text)}" if text else ""


def _template_values(values: object) -> str:
    """`values: Lucy | order_id: 8812`: the body's parameters, named ones with their name."""
    shown = []
    for pair in _list(values)[:20]:
        if isinstance(pair, list | tuple) and len(pair) == 2 and _s(pair[1]):
            shown.append(f"{_s(pair[0])}: {_s(pair[1])}" if _s(pair[0]) else _s(pair[1]))
    return "values: " + " | ".join(shown) if shown else ""  # a value may hold commas


def _template_footer(footer: object) -> str:
    return f"footer {_quoted(_s(footer))}" if _s(footer) else ""


def _template_buttons(buttons: object) -> str:
    labels = [b for b in (_s(v) for v in _list(buttons)[:10]) if b]
    return "buttons: " + ", ".join(labels) if labels else ""


def _template_cards(cards: object) -> str:
    count = _number(cards)
    if count is None or count < 1 or count != int(count):
        return ""
    return f"carousel of {int(count)} card{'s' * (count != 1)}"


def _text_suffix(message: Message) -> str:
    return f": {message.text}" if message.text else ""


def _button(message: Message) -> str:
    info = _info(message, "button")
    text = _s(info.get("text")) or message.text or _s(info.get("payload"))
    return f"🔘 Pressed {_quoted(text)}" if text else "🔘 Pressed a button"


def _reaction(message: Message, quotes: Mapping[str, str] | None = None,
              tz: tzinfo = UTC) -> str:
    """`👍 reacted to “<its line>”` when the message is in `quotes`, else `to the message of
    <time> “<first words>”` when the buffer knows it (`target`), else `to an earlier
    message` when the buffer does not hold it, else to its id."""
    info = _info(message, "reaction")
    emoji = _s(info.get("emoji")) or message.text
    target = ""
    if message.reply_to:
        in_batch = bool(quotes) and message.reply_to in quotes
        target = (_named(message, tz) if _known(message) and not in_batch
                  else _target(message, quotes))
    if info.get("removed") is True or not emoji:
        return "Removed a reaction" + (f" from {target}" if target else "")
    return f"{emoji} reacted" + (f" to {target}" if target else "")


def _order(message: Message) -> str:
    """`🛒 Order: 2 items (2 × SKU1 @ 100 INR, 1 × SKU2 @ 50 INR; total 250.00 INR) "note"`."""
    items = _items(_info(message, "order").get("items"))
    details = ", ".join(_order_item(i) for i in items)
    total = _order_total(items)
    if total:
        details += f"; total {total}"
    line = f"🛒 Order: {len(items)} item{'s' * (len(items) != 1)}"
    if details:
        line += f" ({details})"
    return f"{line} {_quoted(message.text)}" if message.text else line


def _order_item(item: Mapping[str, Any]) -> str:
    quantity, name = _s(item.get("quantity")) or "?", _s(item.get("product_retailer_id")) or "?"
    price = " ".join(p for p in (_s(item.get("item_price")), _s(item.get("currency"))) if p)
    return f"{quantity} × {name}" + (f" @ {price}" if price else "")


def _order_total(items: list[Mapping[str, Any]]) -> str:
    """Sum of quantity × price when every item has both and all share one currency."""
    currencies = {_s(i.get("currency")) for i in items}
    total = 0.0
    for item in items:
        quantity, price = _number(item.get("quantity")), _number(item.get("item_price"))
        if quantity is None or price is None:
            return ""
        total += quantity * price
    if not items or len(currencies) != 1 or not math.isfinite(total):
        return ""
    return " ".join(p for p in (f"{total:.2f}", currencies.pop()) if p)


def _system(message: Message) -> str:
    if message.text:
        return f"ℹ️ {message.text}"
    kind = _s(_info(message, "system").get("type"))
    return "ℹ️ System message" + (f" ({kind})" if kind else "")


def _placeholder(message: Message) -> str:
    return "📎 Media (not synced)"


def _unsupported(message: Message) -> str:
    """Names the type when known; a source's `hint` (where the text can be read, e.g. a
    coexistence number's first contact that only the Business app holds) follows."""
    kind = _s(_extra(message).get("unsupported_type"))
    hint = clean(_extra(message).get("hint"))
    return "⚠️ Unsupported message" + (f" ({kind})" if kind else "") + (
        f": {hint}" if hint else "")


def _unknown(message: Message) -> str:
    """A kind this renderer does not know (a newer source): name it, keep any text."""
    return f"⚠️ Unsupported message ({_s(message.kind)})" + _text_suffix(message)


_RENDERERS: dict[str, Callable[[Message], str]] = {
    "text": _text, "image": _image, "video": _video, "audio": _audio, "document": _document,
    "sticker": _sticker, "location": _location, "contacts": _contacts,
    "interactive": _interactive, "button": _button, "reaction": _reaction, "order": _order,
    "system": _system, "media_placeholder": _placeholder,
    "unsupported": _unsupported, "template": _template,
}
