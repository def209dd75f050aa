"""Transcripts against the simulator: a message that cannot be rendered fails alone, and no
field of a message can forge a line of the note."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pytest

from plugins.leadsquared.transcript import (
    CONTINUED,
    label_lengths,
    lead_lengths,
    note,
    piece_span,
    split,
    transcript_lines,
    u16,
)
from tests.helpers import message, running, wait_until
from tests.leadsquared.test_sink import NUMBER, chat, settled, sink_for, texts_in


async def test_an_unrenderable_message_is_rejected_alone_and_its_neighbours_delivered(
        sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    good = [chat(n, minutes_ago=60 - n) for n in range(40)]
    # 23:30 UTC on the last day of year 9999 is already year 10000 in the account's zone
    # (the simulator's user is in Asia/Kolkata): no datetime can hold it.
    extreme = dataclasses.replace(chat(999), sent_at=datetime(9999, 12, 31, 23, 30, tzinfo=UTC))
    await buffer.append([*good[:20], extreme, *good[20:]])
    sink = sink_for(sim, opportunities=False)
    async with running(buffer, [sink]):
        await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: settled(buffer))

    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == [f"msg-{n:05d}" for n in range(40)]
    (dead,) = await buffer.dead_letters("leadsquared")
    assert dead["provider_id"] == extreme.provider_id
    assert dead["reason"].startswith("cannot be written as a transcript line")
    assert "out of range" in dead["reason"] or "year" in dead["reason"]
    (state,) = await buffer.sinks()
    assert state["backlog"] == 0


async def test_hostile_fields_cannot_forge_transcript_lines(sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    forged = "\n[2026-01-01 10:00] ➡️ Business: your refund is approved"
    name = message(1, NUMBER, source="whatsapp", minutes_ago=3, text="hi")
    body = message(2, NUMBER, source="whatsapp", minutes_ago=2,
                   text="line one" + forged + "\r\n\u2028[2026-01-01 10:01] ⬅️ Asha: ok\x1b[2J")
    place = dataclasses.replace(
        message(3, NUMBER, source="whatsapp", minutes_ago=1, text=""), kind="location",
        extra={"location": {"name": "Home" + forged, "address": "\u2066Main St\u2069\x85x",
                            "latitude": 1, "longitude": 2}})
    hostile = "Asha" + forged + "\u202e" + "x" * 500  # a WhatsApp profile name
    await buffer.append([dataclasses.replace(m, contact_name=hostile)
                         for m in (name, body, place)])
    sink = sink_for(sim, opportunities=False)
    async with running(buffer, [sink]):
        await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: settled(buffer))

    (activity,) = sim.activities(lead)
    header, *lines = activity["ActivityNote"].split("\n")
    assert header.startswith("WhatsApp chat with Asha [2026-01-01 10:00]")
    assert len(lines) == 3  # one line per message, whatever the fields hold
    assert all(re.match(r"\[\d{4}-\d\d-\d\d \d\d:\d\d\] ⬅️ Asha ", line) for line in lines)
    note = activity["ActivityNote"]
    assert not set(note) & {"\r", "\x1b", "\x85", "\u2028", "\u202e", "\u2066", "\u2069"}
    assert "x" * 200 not in note  # a name is bounded
    assert "line one ⏎ [2026-01-01 10:00]" in lines[1]


def test_a_long_body_split_across_notes_cannot_start_a_note_line():
    forged = "[2026-01-01 10:00] ➡️ Business: your refund is approved"
    for pad in range(0, 60, 7):  # wherever the cut falls, a later piece starts with …
        body = message(1, NUMBER, text="x" * pad + forged * 20)
        lines = transcript_lines([body], UTC, "Asha", "Business")
        parts = split("b1", [body], lines, 200 + 160)
        assert len(parts) > 2 and all(p.continued for p in parts)
        for part in parts[1:]:
            (piece,) = part.lines
            assert piece.startswith(CONTINUED)
            assert note(part, "Asha", NUMBER).split("\n")[1].startswith(CONTINUED)
        assert "".join(p.lines[0].removeprefix(CONTINUED) if i else p.lines[0]
                       for i, p in enumerate(parts)) == lines[0]  # nothing lost


@pytest.mark.parametrize("length", [20, 70], ids=["lines-shorter-now", "lines-longer-now"])
def test_a_note_found_on_the_lead_holds_its_count_of_messages_whatever_the_lines_now(length):
    """A crash's retry finds bk:m1:0 on the lead holding 2 messages (its count field) and
    bk:m4:0 holding 1: each holds exactly those again, however long the lines are now
    (a rep's or contact's new name), so none is posted twice or marked delivered unposted."""
    messages = [message(n, source="whatsapp") for n in range(1, 7)]
    lines = [f"m{n} " + "x" * length for n in range(1, 7)]
    sizes = {"bk:m1:0": 2, "bk:m4:0": 1}
    parts = split("bk", messages, lines, 160 + 150, set(sizes), {"bk:m1:0"}, sizes=sizes)
    held = {part.key: [m.provider_id for m in part.messages] for part in parts}
    assert held["bk:m1:0"] == ["m1", "m2"] and held["bk:m4:0"] == ["m4"]
    assert sorted(m for ids in held.values() for m in ids) == [f"m{n}" for n in range(1, 7)]


TOKENS = "".join(f"{n:04d}," for n in range(300))  # 1500 characters, each 4 digits unique
LONGEST = "😀" * 100  # a name of 2-unit characters, cut to NAME_LIMIT: the longest label


def _tried(text: str, name: str, limit: int, keys: set[str] = frozenset()
           ) -> tuple[list, int]:
    """split of one long message (m1) whose contact is `name` now, the keys of an earlier
    try found on the lead (one message each); its parts and its label's length."""
    messages = [message(1, NUMBER, text=text)]
    lines = transcript_lines(messages, UTC, name, "Business")
    labels = label_lengths(messages, UTC, name, "Business")
    return (split("bk", messages, lines, limit, keys, frozenset(), sizes=dict.fromkeys(keys, 1),
                  labels=labels), labels[0])


def _text_of(part, label: int) -> tuple[int, str]:
    """(offset into the message's text, the text) a piece holds."""
    (piece,) = part.lines
    start, end = piece_span(part.key.rpartition(":")[2])
    text = piece[label:] if start == 0 else piece.removeprefix(CONTINUED)
    assert len(text) == end - start  # its key names the text it holds
    return start, text


SHORT, LONG = "A", "Asha Kumari Venkataraman-Iyer (Pune)"


@pytest.mark.parametrize(("text", "before", "after"), [
    (TOKENS, "Asha", LONG), (TOKENS, LONG, SHORT), (TOKENS, SHORT, LONGEST),
    (TOKENS, LONGEST, "Asha"), (TOKENS[:400], LONG, SHORT), (TOKENS[:400], LONGEST, SHORT)],
    ids=["grows", "shrinks", "grows-most", "shrinks-most", "shrinks-till-it-fits",
         "shrinks-most-till-it-fits"])
@pytest.mark.parametrize("landed", [(0,), (0, 1), (1,), (0, 2)])
def test_a_long_message_retried_under_another_label_covers_its_text_exactly_once(
        text, before, after, landed):
    """A crash's retry finds some of a long message's pieces on the lead (their keys), and
    the contact's (or rep's) name, in the line's label, is shorter or longer now. The
    pieces posted then and those the retry posts hold every character of the text once,
    each note within the limit: a piece's key names the span of text it holds. Was:
    offsets into the whole line, so a name of another length moved the cuts (characters
    lost at a cut, or posted twice), and a line that fits now with a shorter name went
    whole under the first piece's key, found on the lead: its rest never posted."""
    first, label = _tried(text, before, 600)
    kept = [first[i] for i in landed if i < len(first)]
    again, label_now = _tried(text, after, 600, {p.key for p in kept})
    assert len({p.key for p in again}) == len(again)
    posted = [p for p in again if p.key not in {k.key for k in kept}]
    pieces = sorted([_text_of(p, label) for p in kept] + [_text_of(p, label_now)
                                                          for p in posted])
    assert "".join(piece for _, piece in pieces) == text
    for part in (*first, *posted):
        assert part.continued and u16(note(part, "Asha", NUMBER)) <= 600


@pytest.mark.parametrize("limit", [400, 1000])
@pytest.mark.parametrize("landed", [(0,), (0, 1), (1,), (0, 2)])
def test_a_long_message_retried_under_another_note_limit_covers_its_text_exactly_once(
        limit, landed):
    """The pieces found on the lead are made again as they landed (their keys name their
    text) and only the text between them is cut under the new note_limit."""
    first, label = _tried(TOKENS, "Asha", 600)
    kept = [first[i] for i in landed]
    again, _ = _tried(TOKENS, "Asha", limit, {p.key for p in kept})
    posted = [p for p in again if p.key not in {k.key for k in kept}]
    pieces = sorted(_text_of(p, label) for p in (*kept, *posted))
    assert "".join(piece for _, piece in pieces) == TOKENS
    assert all(u16(note(part, "Asha", NUMBER)) <= limit for part in posted)


@pytest.mark.parametrize("name", ["Asha", "A", LONGEST])
@pytest.mark.parametrize("landed", [frozenset(), frozenset({"bk:m1:0", "bk:m1:200"})])
def test_pieces_an_earlier_bridge_cut_by_line_offsets_keep_their_keys_and_cuts(name, landed):
    """Keys of a bridge before the text offsets (`bk:m1:200`, an offset into the line) are
    still those of the retry's pieces, cut where they were, whatever the label now: the
    pieces already in the CRM are found by them and not posted again."""
    starts = {"bk:m1:0", "bk:m1:200", "bk:m1:420"}
    messages = [message(1, NUMBER, text=TOKENS)]
    (line,) = transcript_lines(messages, UTC, name, "Business")
    parts = split("bk", messages, [line], 600, starts, landed, sizes=dict.fromkeys(starts, 1),
                  labels=label_lengths(messages, UTC, name, "Business"))
    assert [p.key for p in parts] == ["bk:m1:0", "bk:m1:200", "bk:m1:420"]
    assert [p.lines for p in parts] == [[line[:200]], [CONTINUED + line[200:420]],
                                        [CONTINUED + line[420:]]]


def test_a_long_line_whose_own_key_is_on_the_lead_is_cut_as_an_earlier_bridge_cut_it():
    """`bk:m1:0` found on the lead holding one message, no other piece key: it may be the
    first piece of a line an earlier bridge cut by line offsets (killed before the rest).
    The line is cut as that bridge did, so the rest follows under its old keys and that
    piece is not posted again under a key of the new form."""
    messages = [message(1, NUMBER, text=TOKENS)]
    (line,) = transcript_lines(messages, UTC, "Asha", "Business")
    parts = split("bk", messages, [line], 600, {"bk:m1:0"}, frozenset(), sizes={"bk:m1:0": 1},
                  labels=label_lengths(messages, UTC, "Asha", "Business"))
    assert parts[0].key == "bk:m1:0" and all(p.key.rpartition(":")[2].isdigit() for p in parts)
    assert "".join(p.lines[0].removeprefix(CONTINUED) for p in parts) == line


@pytest.mark.parametrize("name", [LONGEST, "Asha Kumari Venkataraman-Iyer of Pune " * 3])
@pytest.mark.parametrize("limit", [200, 230])
def test_the_smallest_note_limit_holds_a_long_name_and_every_character_once(name, limit):
    """note_limit's minimum (200) leaves a line 40 units beside the header: a long name's
    label alone would pass it, so the first piece shortens the name, and no note is longer
    than the limit; the text is still all there, once."""
    parts, _ = _tried(TOKENS, name, limit)
    assert all(u16(note(part, name, NUMBER)) <= limit for part in parts)
    first = parts[0].lines[0]
    assert first.startswith("[") and "…: " in first
    texts = [p.lines[0].removeprefix(CONTINUED) for p in parts[1:]]
    assert TOKENS.endswith("".join(texts))
    assert first.endswith(TOKENS[:len(TOKENS) - len("".join(texts))])


@pytest.mark.parametrize("bulk", [False, True])
async def test_a_long_name_and_message_land_under_the_smallest_note_limit(sim, buffer, bulk):
    """A LeadSquared account whose note field holds 200 characters (the simulator refuses
    a longer note), note_limit 200 and an 80-character profile name: every piece lands and
    no message is a dead letter."""
    sim.configure(note_limit=200)
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    name = "Asha Kumari Venkataraman-Iyer of Pune " * 3
    long = dataclasses.replace(message(1, NUMBER, source="whatsapp", minutes_ago=2,
                                       text=TOKENS[:400]), contact_name=name)
    await buffer.append([long])
    sink = sink_for(sim, opportunities=False, note_limit=200, bulk=bulk)
    async with running(buffer, [sink]):
        await wait_until(lambda: settled(buffer))
    assert await buffer.dead_letters("leadsquared") == []
    notes = [a["ActivityNote"] for a in sim.activities(lead)]
    assert len(notes) > 1 and all(u16(n) <= 200 for n in notes)
    lines = [n.split("\n", 1)[1] for n in notes]
    assert "…: " in lines[0]
    text = lines[0].split("…: ", 1)[1] + "".join(x.removeprefix(CONTINUED) for x in lines[1:])
    assert text == TOKENS[:400]


def _reply_split(keys: set[str], quoted: bool) -> list:
    """split of m1 (a question) and m2 (a long reply to it), or of m2 alone once m1 was
    delivered (its quote then gone), with an earlier try's keys."""
    question = message(1, NUMBER, text="what is the price?")
    reply = message(2, NUMBER, text=TOKENS, reply_to="m1")
    messages = [question, reply] if quoted else [reply]
    lines = transcript_lines(messages, UTC, "Asha", "Business")
    labels = label_lengths(messages, UTC, "Asha", "Business")
    return split("bk", messages, lines, 600, keys, keys, sizes=dict.fromkeys(keys, 1),
                 labels=labels, leads=lead_lengths(messages, lines, labels))


def test_a_long_replys_pieces_hold_the_same_text_with_or_without_its_quote():
    first = [p for p in _reply_split(set(), quoted=True) if ":m2:" in p.key]
    assert all(p.key.rpartition(":")[2].startswith("b") for p in first)
    again = [p for p in _reply_split({first[0].key}, quoted=False) if ":m2:" in p.key]
    assert again[0].key == first[0].key  # the landed piece is made again as it was
    spans = [piece_span(p.key.rpartition(":")[2]) for p in again]
    assert spans[0][0] == 0 and spans[-1][1] == len(TOKENS)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_a_reply_an_earlier_bridge_cut_by_t_spans_keeps_their_reading():
    """`t` spans counted the reply's lead-in as text: a retry keeps cutting that message
    so (its text after the label), lead-in and all, and its keys stay `t`."""
    messages = [message(2, NUMBER, text=TOKENS, reply_to="m1")]
    (line,) = transcript_lines(messages, UTC, "Asha", "Business")
    label = label_lengths(messages, UTC, "Asha", "Business")[0]
    keys = {"bk:m2:t0-300"}
    parts = split("bk", messages, [line], 600, keys, keys, sizes=dict.fromkeys(keys, 1),
                  labels=[label], leads=lead_lengths(messages, [line], [label]))
    assert parts[0].key == "bk:m2:t0-300" and parts[0].lines == [line[:label + 300]]
    assert all(p.key.rpartition(":")[2].startswith("t") for p in parts)
    assert "".join(_text_of(p, label)[1] for p in parts) == line[label:]


@pytest.mark.parametrize("marked", [True, False], ids=["continued-mark", "no-mark"])
def test_a_line_cut_by_offsets_whose_later_pieces_never_landed_is_cut_on_from_its_last_note(
        marked):
    """A bridge before the text offsets was killed after posting the pieces at 0 and 200 of
    a long line (keys `bk:m1:0`, `bk:m1:200`; the first release wrote no `…` mark, later
    ones did). The retry makes those two again, the piece at 200 ending where its note on
    the lead ends, and cuts the rest anew: every character once. Was: the piece at 200 ran
    to the line's end, was found on the lead, and the rest was never posted."""
    messages = [message(1, NUMBER, text=TOKENS)]
    (line,) = transcript_lines(messages, UTC, "Asha", "Business")
    starts = {"bk:m1:0", "bk:m1:200"}
    bodies = {"bk:m1:0": line[:200], "bk:m1:200": (CONTINUED if marked else "") + line[200:640]}
    parts = split("bk", messages, [line], 600, starts, starts, sizes=dict.fromkeys(starts, 1),
                  labels=label_lengths(messages, UTC, "Asha", "Business"), bodies=bodies)
    assert [p.key for p in parts][:3] == ["bk:m1:0", "bk:m1:200", "bk:m1:640"]
    assert "".join(p.lines[0].removeprefix(CONTINUED) for p in parts) == line
    assert all(u16(note(p, "Asha", NUMBER)) <= 600 for p in parts[2:])


def test_a_line_cut_by_offsets_whose_last_note_cannot_be_read_keeps_its_earlier_reading():
    """Without the note (unreadable, or holding other text) the piece at the last offset
    runs to the line's end, as before: nothing found on the lead is posted again."""
    messages = [message(1, NUMBER, text=TOKENS)]
    (line,) = transcript_lines(messages, UTC, "Asha", "Business")
    starts = {"bk:m1:0", "bk:m1:200"}
    parts = split("bk", messages, [line], 600, starts, starts, sizes=dict.fromkeys(starts, 1),
                  labels=label_lengths(messages, UTC, "Asha", "Business"),
                  bodies={"bk:m1:200": "other text"})
    assert [p.lines for p in parts] == [[line[:200]], [CONTINUED + line[200:]]]
