"""render_line: one readable line per message kind, from parsed payloads and odd extras."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings

from bridge.model import KINDS, Direction, Media, Message
from bridge.render import clean, render_line, short_id
from plugins.whatsapp.parse import PayloadError, parse_payload
from tests.whatsapp import payloads as p
from tests.whatsapp.test_parse import mutated


def parsed(message: dict) -> Message:
    (result,) = parse_payload(p.envelope(p.message_change([message]))).messages
    return result


def make(kind: str, text: str = "", media: Media | None = None, reply_to: str | None = None,
         **extra: object) -> Message:
    return Message(source="test", provider_id="m1", conversation="+16505551234", account="a",
                   direction=Direction.IN, sent_at=datetime.now(UTC), kind=kind, text=text,
                   media=media, reply_to=reply_to, extra=dict(extra))


@pytest.mark.parametrize(("message", "line"), [
    (p.text_message("t", body="Hello"), "Hello"),
    (p.image_message("i", caption="crack"), '📷 Photo: "crack" (image/jpeg, media 1234)'),
    (p.image_message("i", caption=None), "📷 Photo (image/jpeg, media 1234)"),
    (p.video_message("v", caption="walkthrough"), '🎥 Video: "walkthrough" (video/mp4, media 777)'),
    (p.audio_message("a", voice=True), "🎤 Voice message (audio/ogg; codecs=opus, media 555)"),
    (p.audio_message("a", voice=False), "🎵 Audio (audio/ogg; codecs=opus, media 555)"),
    (p.document_message("d"), '📄 Document: invoice.pdf "March" (application/pdf, media 888)'),
    (p.sticker_message("s"), "🏷️ Sticker (image/webp, media 999)"),
    (p.sticker_message("s", animated=True), "🏷️ Animated sticker (image/webp, media 999)"),
    (p.location_message("l"),
     "📍 Location: Cubbon Park, Kasturba Road, Bengaluru (12.9763, 77.5929) "
     "https://maps.example/cubbon"),
    (p.location_message("l", name=None, address=None),
     "📍 Location (12.9763, 77.5929) https://maps.example/cubbon"),
    (p.contacts_message("c"), "👤 Contact: Ravi Kumar +91 98765 43210, ravi@example.com"),
    (p.list_reply_message("lr"), '🔘 Chose "Tuesday 10:00" (Dr. Rao)'),
    (p.nfm_reply_message("f"), "📝 Form reply: name: Asha, flow_token: t1"),
    (p.call_permission_message("cp"), '🔘 Replied "accept"'),
    (p.reaction_message("r", "wamid.HBgLMTY1MDM4NzkQUJDRkFFMTc2OTg0RgA="),
     "😮 reacted to …2OTg0RgA"),
    (p.reaction_message("r", "wamid.1", emoji=""), "Removed a reaction from wamid.1"),
    (p.order_message("o"), '🛒 Order: 2 items (2 × SKU-1 @ 100 INR, 1 × SKU-2 @ 50 INR; '
                           'total 250.00 INR) "Deliver by 6"'),
    (p.system_message("sy"), "ℹ️ User 16505551234 changed from 16505551234 to 16505550000"),
    (p.edit_message("e", "wamid.1", {"type": "text", "text": {"body": "new text"}}),
     "✏️ Edited message wamid.1: new text"),
    (p.revoke_message("rv", "wamid.1"), "🗑️ Deleted message wamid.1"),
    (p.placeholder_message("ph"), "📎 Media (not synced)"),
    (p.unsupported_message("u"), "⚠️ Unsupported message (poll)"),
    (p.base("u", p.CUSTOMER, "hologram"), "⚠️ Unsupported message (hologram)"),
])
def test_every_kind_from_a_parsed_payload(message, line):
    assert render_line(parsed(message)) == line


def test_reply_prefixes_quoted_messages_only():
    assert render_line(parsed(p.button_reply_message("b"))) == (
        '↩️ reply to …question: 🔘 Chose "Yes"')
    assert render_line(parsed(p.button_message("bt"))) == (
        '↩️ reply to …template: 🔘 Pressed "Stop promotions"')


def test_forwarded_prefix():
    forwarded = parsed(p.text_message("f", body="news", context={"forwarded": True}))
    assert render_line(forwarded) == "↪️ Forwarded: news"
    often = parsed(p.text_message("f", body="news", context={"frequently_forwarded": True}))
    assert render_line(often) == "↪️ Forwarded many times: news"


def test_newlines_become_one_line():
    line = render_line(make("text", "line one\nline two\r\nthree"))
    assert line == "line one ⏎ line two ⏎ three"
    assert "\n" not in render_line(make("image", "a\nb", Media(id="1", caption="a\nb")))


FORGED = "\r\n[2026-01-01 10:00] ➡️ Business:\u2028refund\x85approved\u202e\u2066\x1b[2J\t!"
HOSTILE = [
    make("image", media=Media(id="1", caption=FORGED)),
    make("document", media=Media(id="1", filename=FORGED + ".pdf")),
    make("location", location={"name": FORGED, "address": FORGED}),
    make("contacts", contacts=[{"name": FORGED, "phones": [FORGED], "emails": [FORGED]}]),
    make("interactive", interactive={"title": FORGED}),
    make("interactive", interactive={"response": {FORGED: FORGED}}),
    make("button", button={"payload": FORGED}),
    make("order", order={"items": [{"product_retailer_id": FORGED, "currency": FORGED}]}),
    make("system", system={"type": FORGED}),
    make("edit", edit={"kind": FORGED}),
    make("unsupported", unsupported_type=FORGED),
    make(FORGED),
    make("text", FORGED, reply_to=FORGED),
    make("reaction", reply_to=FORGED, reaction={"emoji": FORGED}),
]
UNSAFE = set("\r\n\x85\x1b\t\u2028\u2029\u202e\u2066")


@pytest.mark.parametrize("message", HOSTILE, ids=lambda m: m.kind[:12])
def test_hostile_fields_render_as_one_safe_line(message):
    line = render_line(message)
    assert not set(line) & UNSAFE, line
    assert "[2026-01-01 10:00] ➡️ Business:" in line  # kept readable, inside the line


def test_fields_are_bounded_and_bodies_are_not():
    long_name = "n" * 5000
    line = render_line(make("location", location={"name": long_name}))
    assert len(line) < 220 and line.endswith("…")
    caption = render_line(make("image", media=Media(id="1", caption="c" * 5000)))
    assert 1000 < len(caption) < 1100
    body = "b" * 5000 + "\n" + "c" * 10
    assert render_line(make("text", body)) == "b" * 5000 + " ⏎ " + "c" * 10


def test_clean_folds_breaks_and_drops_direction_controls():
    assert clean("Asha\r\n\u2028Rao\u202e\u2067 \x00x") == "Asha Rao x"
    assert clean(None) == clean(["a"]) == ""
    assert clean("a" * 10, limit=5) == "aaaa…"


@pytest.mark.parametrize(("message", "line"), [
    (make("text"), "(empty message)"),
    (make("image"), "📷 Photo"),
    (make("interactive", interactive={"type": None}), "🔘 Interactive reply"),
    (make("interactive", interactive={"type": "product"}), "🔘 Interactive reply (product)"),
    (make("button", button={"payload": "P1"}), '🔘 Pressed "P1"'),
    (make("reaction", text="👍", reply_to=None), "👍 reacted"),
    (make("system", system={"type": "customer_identity_changed"}),
     "ℹ️ System message (customer_identity_changed)"),
    (make("edit", edit={"kind": "image"}), "✏️ Edited a message (image)"),
    (make("unsupported"), "⚠️ Unsupported message"),
    (make("media_placeholder", reply_to="wamid.1"), "↩️ reply to wamid.1: 📎 Media (not synced)"),
    (make("poll", "Lunch?"), "⚠️ Unsupported message (poll): Lunch?"),
])
def test_sparse_messages(message, line):
    assert render_line(message) == line


ODD_EXTRAS = [
    {"location": "here"}, {"location": {"latitude": "north", "longitude": None}},
    {"location": {"latitude": float("nan"), "longitude": 1}}, {"contacts": {"name": "x"}},
    {"contacts": [None, 3, {"name": ["a"], "phones": "123", "emails": [None, {}]}]},
    {"interactive": ["x"]}, {"interactive": {"response": {"a": {"b": 1}, "c": None}}},
    {"interactive": {"title": 5, "response": 7}}, {"button": None},
    {"reaction": {"emoji": ["👍"], "removed": "yes"}},
    {"order": {"items": [{"quantity": "2", "item_price": "1e400"}, "junk"]}},
    {"order": {"items": [{"quantity": 10**400, "item_price": 1.5, "currency": "INR"}]}},
    {"order": {"items": [{"quantity": 1e308, "item_price": 1e308, "currency": "X"}]}},
    {"order": "many"}, {"system": 3}, {"edit": []}, {"unsupported_type": {"t": 1}},
    {"forwarded": "yes", "frequently_forwarded": 1},
    {"template": {"name": ["x"], "values": [["a"], None, [1, {"v": 2}], "x"], "header": 3,
                  "buttons": "many", "cards": float("inf"), "offer": "yes"}},
    {"template": {"header": {"kind": ["image"], "text": {}}, "values": {"a": 1}}},
    {"interactive": {"sent": True, "type": ["button"], "options": "a", "button": {},
                     "header_kind": []}},
    {"target": {"found": "no"}}, {"target": ["found", False]},
]


@pytest.mark.parametrize("kind", sorted(KINDS | {"future_kind"}))
@pytest.mark.parametrize("extra", ODD_EXTRAS)
def test_odd_extras_never_raise_and_stay_one_line(kind, extra):
    message = make(kind, "x\ny", reply_to="id\n2", **extra)
    line = render_line(message)
    assert isinstance(line, str) and line and "\n" not in line


def test_odd_extra_container_never_raises():
    message = make("location")
    object.__setattr__(message, "extra", ["not", "a", "dict"])
    assert render_line(message) == "📍 Location"


def test_long_form_reply_is_cut():
    response = {f"field{i}": "v" * 40 for i in range(20)}
    line = render_line(make("interactive", interactive={"type": "nfm_reply", "response": response}))
    assert line.startswith("📝 Form reply: field0: ") and len(line) < 330 and line.endswith("…")


@pytest.mark.parametrize(("given", "short"), [
    ("wamid.1", "wamid.1"), ("ABGGFlA5Fpa", "ABGGFlA5Fpa"),
    ("wamid.HBgLMTY1MDM4NzkQUJDRkFFMTc2OTg0RgA=", "…2OTg0RgA"), (None, ""),
])
def test_short_id(given, short):
    assert short_id(given) == short


def test_render_reads_no_provider_names():
    import bridge.render

    source = open(bridge.render.__file__, encoding="utf-8").read().lower()
    assert "whatsapp" not in source and "wamid" not in source and "nfm" not in source


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_fuzz_every_parsed_message_renders_as_one_line(payload):
    try:
        messages = parse_payload(payload).messages
    except PayloadError:
        return
    for message in messages:
        line = render_line(message)
        assert line and "\n" not in line


def test_replies_and_reactions_quote_a_known_target_else_show_its_id():
    quotes = {"wamid.original": "Yes! 20% off until Friday"}
    reply = make("text", "Great", reply_to="wamid.original")
    reaction = make("reaction", "👍", reply_to="wamid.original", reaction={"emoji": "👍"})
    assert render_line(reply, quotes) == "↩️ reply to “Yes! 20% off until Friday”: Great"
    assert render_line(reaction, quotes) == "👍 reacted to “Yes! 20% off until Friday”"
    assert render_line(make("text", "Great", reply_to="wamid.elsewhere"), quotes) == (
        "↩️ reply to …lsewhere: Great")  # short_id: the last 8 characters


def test_a_target_the_buffer_looked_up_and_lacks_reads_as_an_earlier_message():
    """enrich marks a target it did not find (`found: False`): the line says so in words;
    without the look-up (the status page) the short id stays, for an operator."""
    missing = {"target": {"found": False}}
    reply = make("text", "Great", reply_to="wamid.elsewhere", **missing)
    reaction = make("reaction", "👍", reply_to="wamid.elsewhere", reaction={"emoji": "👍"},
                    **missing)
    removed = make("reaction", reply_to="wamid.elsewhere", reaction={"removed": True},
                   **missing)
    revoke = make("revoke", reply_to="wamid.elsewhere", **missing)
    edit = make("edit", "Friday", reply_to="wamid.elsewhere", **missing)
    assert [render_line(m) for m in (reply, reaction, removed, revoke, edit)] == [
        "↩️ reply to an earlier message: Great", "👍 reacted to an earlier message",
        "Removed a reaction from an earlier message", "🗑️ Deleted an earlier message",
        "✏️ Edited an earlier message: Friday"]
    quotes = {"wamid.elsewhere": "Yes!"}  # in the batch after all: its quote wins
    assert render_line(reply, quotes) == "↩️ reply to “Yes!”: Great"
    assert render_line(make("text", "Great", reply_to="wamid.elsewhere")) == (
        "↩️ reply to …lsewhere: Great")


def test_quote_cuts_long_lines_with_an_ellipsis():
    from bridge.render import quote

    assert quote("short") == "short"
    assert quote("x" * 100, limit=10) == "x" * 9 + "…"


@pytest.mark.parametrize("body", ["   ", "\n", "\r\n\t", "\u200f", "\u202e\u2066", "\x1b"])
def test_a_text_of_nothing_visible_is_not_an_empty_line(body):
    """A body of only spaces, line breaks, direction marks or controls rendered as "" or
    blanks: the transcript showed `Asha: ` and nothing, as if the message were lost."""
    message = parse_payload(p.envelope(p.message_change([p.text_message("wamid.b",
                                                                        body=body)]))).messages[0]
    assert render_line(message) == "(empty message)"
