"""What a sales rep reads: Meta-shaped webhooks (reference §4, §6a) through a real `bridge run`
into the LeadSquared simulator process, then the activity notes as LeadSquared holds them.

A chat arrives in windows: a reaction, a reply or a reaction removal often comes in a later
sync than the message it is about, so it lands in a later activity than that message. The
rep must be able to tell which message it is about from the note alone: a WhatsApp message
id ("…2OTg0RgA") names nothing a rep can find in LeadSquared.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from plugins.leadsquared.transcript import piece_span
from tests.backends import BACKENDS
from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import (
    SLOW_DELIVERY,
    eventually,
    key_of,
    post,
    write_config,
)
from tests.processes import BridgeProcess, buffer_section
from tests.whatsapp import payloads as p

ASHA = "919876543210"
ASKED = "wamid.HBgLOTE5ODc2NTQzMjEwFQIAEhggQUJDRDEyMzQ1Njc4OTAA"  # a real id's shape
SHOWN = "wamid.HBgLOTE5ODc2NTQzMjEwFQIAEhggQUJDRDEyMzQ1Njc4OTAB"
OFFER = "wamid.HBgLOTE5ODc2NTQzMjEwFQIAERgSQzRGQjQ3RkE5QTk3NUY2MDA0AA"
PLACE = "wamid.HBgLOTE5ODc2NTQzMjEwFQIAEhggQUJDRDEyMzQ1Njc4OTAC"


@pytest.fixture
def buffer(request, tmp_path):
    """The bridge's buffer section: SQLite, or PostgreSQL where a test is parametrized so."""
    with buffer_section(getattr(request, "param", "sqlite"), tmp_path) as section:
        yield section


@pytest.fixture
def bridge(tmp_path, simulator, buffer):
    port = free_port()
    config = tmp_path / "config.yaml"
    # drained only when asked, so each window below is one sync and one activity
    write_config(config, simulator, port, buffer, sync_interval="1h", **SLOW_DELIVERY)
    process = BridgeProcess(config, port)
    yield process
    process.stop()


def _earlier(now: int) -> list[dict]:
    """The first window: a question, a photo with a caption, the business's answer from the
    Business app (an echo, §6a) and a location without name or address."""
    return [
        p.message_change([
            p.text_message(ASKED, ASHA, "Is the annual plan still on offer?", ts=now - 60),
            p.image_message(SHOWN, ASHA, caption="my current bill") | {"timestamp": now - 55},
            p.location_message(PLACE, ASHA, name=None, address=None) | {"timestamp": now - 50},
        ], contacts=[p.contact(ASHA, "Asha Rao")]),
        p.echo_change([p.echo(OFFER, ASHA, "Yes! 20% off until Friday")
                       | {"timestamp": now - 40}])]


def _later(message: dict, now: int) -> dict:
    return p.message_change([message | {"timestamp": str(now - 10)}],
                            contacts=[p.contact(ASHA, "Asha Rao")])


# (what comes in the later window, what its line says; {ASKED} etc.: that message's time as
# its own line in the earlier activity shows it)
LATER = {
    "reaction": (lambda: p.reaction_message("wamid.r1", ASKED, "👍", ASHA),
                 "👍 reacted to the message of {ASKED} “Is the annual plan still on…”"),
    "reaction removed": (lambda: p.reaction_message("wamid.r2", SHOWN, None, ASHA),
                         "Removed a reaction from the message of {SHOWN} “my current bill”"),
    "reaction to a message without text": (
        lambda: p.reaction_message("wamid.r3", PLACE, "❤️", ASHA),
        "❤️ reacted to the message of {PLACE} (📍 Location)"),
    "reply to the business's answer": (
        lambda: p.text_message("wamid.r4", ASHA, "Great, send the link",
                               context={"from": p.BUSINESS, "id": OFFER}),
        "↩️ reply to “Yes! 20% off until Friday”: Great, send the link"),
    "reaction to the business's answer": (
        lambda: p.reaction_message("wamid.r5", OFFER, "🙏", ASHA),
        "🙏 reacted to the message of {OFFER} “Yes! 20% off until Friday”"),
}


@pytest.mark.parametrize("buffer", BACKENDS, indirect=True)  # the claim looks the targets up
@pytest.mark.parametrize("case", LATER)
def test_a_later_windows_reaction_or_reply_names_the_message_it_is_about(
        bridge, simulator, case):
    lead = simulator.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    bridge.start()
    eventually(lambda: bridge.status()["sinks"][0]["last_sync_at"])  # first install's run
    now = int(time.time())
    for change in _earlier(now):
        post(bridge, change)
    bridge.sync_now()
    (first,) = eventually(lambda: _activities(bridge, simulator, lead, 1), every=1.0)
    times = {name: _time_of(first["ActivityNote"], text) for name, text in (
        ("ASKED", "still on offer"), ("SHOWN", "my current bill"), ("PLACE", "📍 Location"),
        ("OFFER", "20% off"))}

    build, expected = LATER[case]
    post(bridge, _later(build(), now))
    bridge.sync_now()
    later = eventually(lambda: _activities(bridge, simulator, lead, 2), every=1.0)
    (note,) = [a["ActivityNote"] for a in later if a["Id"] != first["Id"]]
    assert expected.format(**times) in note, note
    assert "wamid" not in note and "…" + OFFER[-8:] not in note, note


ONLY_APP = {"code": 131060, "title": "Message only available in WhatsApp Business app"}


@pytest.mark.parametrize(("name", "message", "header", "line"), [
    # 131060 (reference §4, §14): says where to read it, and not "unsupported" twice
    ("Asha Rao", p.base("wamid.app1", ASHA, "unsupported", errors=[ONLY_APP]),
     "WhatsApp chat with Asha Rao (+919876543210)",
     "⬅️ Asha Rao: ⚠️ Unsupported message: open the WhatsApp Business app to read it"),
    # a profile name of a Hangul filler (set to look nameless): a sender a rep can read
    ("\u3164", p.text_message("wamid.blank", ASHA, "hi"),
     "WhatsApp chat with customer (+919876543210)", "⬅️ customer: hi"),
], ids=["business app only", "blank profile name"])
def test_a_single_message_reads_as_a_rep_needs(bridge, simulator, name, message, header, line):
    lead = simulator.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    bridge.start()
    post(bridge, p.message_change([message | {"timestamp": str(int(time.time()))}],
                                  contacts=[p.contact(ASHA, name)]))
    bridge.sync_now()
    (activity,) = eventually(lambda: _activities(bridge, simulator, lead, 1), every=1.0)
    first, second = activity["ActivityNote"].splitlines()
    assert first.startswith(header) and second.endswith(line), activity["ActivityNote"]


def _activities(bridge: BridgeProcess, simulator, lead: str, count: int) -> list[dict] | None:
    """The lead's activities once there are `count`; else asks for a sync again (a try cut
    off by deliver_timeout is retried when asked)."""
    found = simulator.activities(lead)
    if len(found) >= count:
        return found
    bridge.sync_now()
    return None


def _time_of(note: str, text: str) -> str:
    """The time on the line of `note` that holds `text`, as the rep sees it."""
    line = next(line for line in note.splitlines() if text in line)
    return re.match(r"\[([\d: -]+)\]", line).group(1)


FORM = json.dumps({"products": ["sofa", "lamp"], "address": {"city": "Pune"},
                   "agree": True, "flow_token": "t1"})


def _sydney(mid: str) -> dict:
    """A pin where `g`'s six significant digits move it some 30 m (longitude 151.209)."""
    message = p.location_message(mid, ASHA, name="Opera House", address=None)
    message["location"].update(latitude=-33.8568217, longitude=151.2152967)
    return message


# Every message shape of reference §4 and §6a with what a rep must read on its line (after
# `<time> ⬅️ Asha Rao: `, or `➡️ Business (+15550783881): ` for the business's own). A number
# change (system) moves the chat to the new number: test_identity_end_to_end reads its line.
SHAPES = [
    (p.text_message("wamid.s1", ASHA, "مرحبا، هل العرض متاح؟ 👨‍👩‍👧 🏳️‍🌈 🇮🇳"),
     "مرحبا، هل العرض متاح؟ 👨‍👩‍👧 🏳️‍🌈 🇮🇳"),
    (p.text_message("wamid.s2", ASHA, "nul\x00 and lone \ud800 end"),
     "nul\ufffd and lone \ufffd end"),  # the body reader's U+FFFD, said so, not dropped
    (p.text_message("wamid.s26", ASHA, "\u2800\u3164\u200b"), "(empty message)"),  # "blank"
    (p.image_message("wamid.s3", ASHA, caption="my current bill"), '📷 Photo: "my current bill"'),
    (p.image_message("wamid.s4", ASHA, caption="\u200b"), "📷 Photo (image/jpeg"),
    (p.video_message("wamid.s5", ASHA, caption="walkthrough"), '🎥 Video: "walkthrough"'),
    (p.audio_message("wamid.s6", ASHA, voice=True), "🎤 Voice message (audio/ogg"),
    (p.audio_message("wamid.s7", ASHA, voice=False), "🎵 Audio (audio/ogg"),
    (p.document_message("wamid.s8", ASHA), '📄 Document: invoice.pdf "March"'),
    (p.document_message("wamid.s9", ASHA, filename="quote.pdf", caption=None),
     "📄 Document: quote.pdf (application/pdf"),
    (p.sticker_message("wamid.s10", ASHA), "🏷️ Sticker (image/webp"),
    (p.location_message("wamid.s11", ASHA),
     "📍 Location: Cubbon Park, Kasturba Road, Bengaluru (12.9763, 77.5929) "
     "https://maps.example/cubbon"),
    (_sydney("wamid.s12"), "📍 Location: Opera House (-33.8568217, 151.2152967)"),
    (p.contacts_message("wamid.s13", ASHA),
     "👤 Contact: Ravi Kumar +91 98765 43210, ravi@example.com"),
    (p.button_reply_message("wamid.s14", ASHA, title="Yes, call me"),
     '🔘 Chose "Yes, call me"'),
    (p.list_reply_message("wamid.s15", ASHA), '🔘 Chose "Tuesday 10:00" (Dr. Rao)'),
    (p.button_message("wamid.s16", ASHA), '🔘 Pressed "Stop promotions"'),
    (p.order_message("wamid.s17", ASHA), '🛒 Order: 2 items (2 × SKU-1 @ 100 INR, 1 × SKU-2 @ '
                                         '50 INR; total 250.00 INR) "Deliver by 6"'),
    (p.nfm_reply_message("wamid.s18", ASHA, response_json=FORM),
     "📝 Form reply: products: sofa / lamp, address city: Pune, agree: yes, flow_token: t1"),
    (p.text_message("wamid.s20", ASHA, "I saw your ad", referral=p.referral()),
     "📣 from ad: Spring sale https://fb.me/2ZulEu42P ⏎ I saw your ad"),
    (p.unsupported_message("wamid.s21", ASHA), "⚠️ Unsupported message (poll)"),
    (p.text_message("wamid.s22", ASHA, "fwd", context={"forwarded": True}), "↪️ Forwarded: fwd"),
    (p.text_message("wamid.s25", ASHA, "Is it in stock?", context={  # §4 product inquiry
        "from": p.BUSINESS, "id": "wamid.catalog", "referred_product": {
            "catalog_id": "cat-9", "product_retailer_id": "SOFA-3"}}),
     "🛍️ about product SOFA-3: Is it in stock?"),
]
ECHOES = [
    (p.echo("wamid.s23", ASHA, "Yes! 20% off until Friday"), "Yes! 20% off until Friday"),
    (p.echo("wamid.s24", ASHA, "") | {"type": "image", "image": p.media(
        "321", "image/jpeg", caption="brochure")}, '📷 Photo: "brochure"'),
]


def test_every_documented_message_shape_reads_whole_on_the_lead(bridge, simulator):
    lead = simulator.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    bridge.start()
    eventually(lambda: bridge.status()["sinks"][0]["last_sync_at"])
    now = int(time.time())
    shapes = [m | {"timestamp": str(now - 60 + i)} for i, (m, _) in enumerate(SHAPES)]
    post(bridge, p.message_change(shapes, contacts=[p.contact(ASHA, "Asha Rao")]))
    post(bridge, p.echo_change([m | {"timestamp": str(now - 30 + i)}
                                for i, (m, _) in enumerate(ECHOES)]))
    bridge.sync_now()
    total = len(SHAPES) + len(ECHOES)

    def all_lines() -> list[str] | None:
        lines = [line for a in simulator.activities(lead)
                 for line in a["ActivityNote"].splitlines()[1:]]
        if len(lines) == total:
            return lines
        bridge.sync_now()
        return None

    lines = eventually(all_lines, every=1.0)
    text = {line.split(": ", 1)[0].split("] ")[1]: [] for line in lines}
    for line in lines:
        text[line.split(": ", 1)[0].split("] ")[1]].append(line.split(": ", 1)[1])
    wrong = [(want, got) for (_, want), got in zip(SHAPES, text["⬅️ Asha Rao"], strict=True)
             if want not in got]
    wrong += [(want, got) for (_, want), got in zip(
        ECHOES, text["➡️ Business (+15550783881)"], strict=True) if want not in got]
    assert wrong == []
    for line in lines:  # nothing a rep would call a program's leftovers
        assert not re.search(r"\bNone\b|\{'|\{\"|\bTrue\b|\bFalse\b|: $", line), line


FLAGS = "🇮🇳" * 7 + " " + "👨‍👩‍👧" + " "  # 7 flags of 2 letters, then a 5-code-point family


def test_a_long_message_is_cut_between_characters_as_a_reader_sees_them(
        tmp_path, simulator):
    """A long message goes out across notes (note_limit, reference: ~2000 characters); no
    cut may fall inside a flag (the next note would pair the letters the other way round:
    🇳🇮, Nicaragua) or inside a family emoji, and every character lands once. The notes
    share one activity time, so each says which part of how many it is."""
    lead = simulator.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, simulator, port, sync_interval="1h", note_limit=301, **SLOW_DELIVERY)
    bridge = BridgeProcess(config, port).start()
    try:
        body = FLAGS * 150  # 3,900 characters, WhatsApp's own limit is 4,096
        post(bridge, p.message_change([p.text_message("wamid.long", ASHA, body,
                                                      ts=int(time.time()))],
                                      contacts=[p.contact(ASHA, "Asha Rao")]))
        bridge.sync_now()

        def whole() -> list[str] | None:
            found = simulator.activities(lead)
            spans = [piece_span(key_of(a).rpartition(":")[2]) for a in found]
            if sum(end - start for start, end in spans) >= len(body):
                return [a["ActivityNote"] for _, a in sorted(
                    zip(spans, found, strict=True), key=lambda pair: pair[0])]
            bridge.sync_now()
            return None

        notes = eventually(whole, every=1.0)
    finally:
        bridge.stop()
    pieces = [_piece_text(n) for n in notes]
    assert len(pieces) > 10 and "".join(pieces) == body
    for number, note in enumerate(notes, 1):
        assert f"(long message, part {number} of {len(notes)}, " in note.split("\n")[0], note
    for piece in pieces:
        assert not piece.startswith(("\u200d", "🇳")) and not piece.endswith("\u200d"), piece


def _piece_text(note: str) -> str:
    """The text of the message a long message's note holds: after its label (the first
    piece) or its `… ` (the others)."""
    line = note.split("\n", 1)[1]
    return line.split("Asha Rao: ", 1)[1] if line.startswith("[") else line.removeprefix("… ")
