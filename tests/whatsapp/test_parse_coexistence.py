"""Coexistence webhooks (history, standby, 131060) and the identity fields of issue 26, parsed.

Shapes: reference §6b, §14 (history follow-ups reuse the placeholder's id; business media in
history under message_echoes; standby; 131060; Mexico's 521; user_changed_user_id; usernames
carry their `@`).
"""

from __future__ import annotations

from bridge import Direction, render_line
from plugins.whatsapp.parse import HistoryChunk, normalise_number, parse_payload
from tests.whatsapp import payloads as p

USERNAME_ID = "US.99887766554433221100"


def _history(*threads, **chunk):
    return parse_payload(p.envelope(p.history_change(list(threads), **chunk)))


def test_media_follow_up_is_stored_as_an_upgrade_of_its_placeholder():
    parsed = parse_payload(p.envelope(
        p.history_change([p.thread(p.CUSTOMER, [p.placeholder_message("h3")])]),
        p.history_media_change([p.image_message("h3", caption="the bill")])))
    placeholder, follow_up = parsed.messages
    assert (placeholder.provider_id, placeholder.kind) == ("h3", "media_placeholder")
    assert (follow_up.provider_id, follow_up.kind, follow_up.extra["upgrades"]) == (
        "h3#media", "image", "h3")
    assert follow_up.conversation == placeholder.conversation == "+16505551234"
    assert follow_up.history and follow_up.media.id == "1234"


def test_business_media_in_history_is_read_from_message_echoes():
    echo = p.image_message("h9", from_=p.BUSINESS, caption="our brochure")
    echo["to"] = p.CUSTOMER
    thread = {"id": p.CUSTOMER, "messages": [p.historical("h8", p.CUSTOMER, "send it")],
              "message_echoes": [p.echo("h10", p.CUSTOMER, "here you go")]}
    change = p.history_change([thread])
    follow_ups = {"field": "history", "value": p.value(message_echoes=[echo])}
    parsed = parse_payload(p.envelope(change, follow_ups))
    got = [(m.provider_id, m.direction, m.conversation) for m in parsed.messages]
    assert got == [("h8", Direction.IN, "+16505551234"), ("h10", Direction.OUT, "+16505551234"),
                   ("h9#media", Direction.OUT, "+16505551234")]


def test_username_thread_keeps_both_sides_under_the_users_id():
    inbound = p.bsuid_text_message("u1", USERNAME_ID, "hi, saw your ad")
    reply = p.historical("u2", p.BUSINESS, "Welcome!")  # no `to`: the thread names nobody
    parsed = _history({"id": "", "messages": [inbound, reply]})
    assert [(m.direction, m.conversation) for m in parsed.messages] == [
        (Direction.IN, USERNAME_ID), (Direction.OUT, USERNAME_ID)]


def test_history_chunks_report_phase_order_and_progress():
    parsed = _history(p.thread(p.CUSTOMER, [p.historical("h1", p.CUSTOMER, "a")]),
                      phase=1, chunk_order=3, progress=70)
    assert parsed.history == [HistoryChunk(p.PHONE_ID, 1, 3, 70)]
    declined = parse_payload(p.envelope(p.history_declined_change()))
    assert declined.history == [HistoryChunk(p.PHONE_ID, declined=True)]


def test_standby_messages_are_ingested_and_marked():
    value = p.value(messages=[p.text_message("s1", body="is the agent a bot?")],
                    message_echoes=[p.echo("s2", p.CUSTOMER, "I can help with that")],
                    contacts=[p.contact(p.CUSTOMER, "Sheena")])
    parsed = parse_payload(p.envelope({"field": "standby", "value": value}))
    got = [(m.provider_id, m.direction, m.conversation, m.extra.get("standby"))
           for m in parsed.messages]
    assert got == [("s1", Direction.IN, "+16505551234", True),
                   ("s2", Direction.OUT, "+16505551234", True)]
    assert "standby" not in parsed.ignored_fields


def test_business_app_only_message_says_where_to_read_it():
    obj = p.unsupported_message("x1", inner_type=None)
    obj["errors"] = [{"code": 131060, "title": "Message only available in WhatsApp Business app",
                      "message": "…", "error_data": {"details": "…"}}]
    (message,) = parse_payload(p.envelope(p.message_change([obj]))).messages
    assert "open the WhatsApp Business app to read it" in render_line(message)
    other = parse_payload(p.envelope(p.message_change([p.unsupported_message("x2")]))).messages
    assert "Business app" not in render_line(other[0])


def test_mexican_wa_id_with_the_mobile_1_is_the_e164_number():
    assert normalise_number("5215512345678", None) == "+525512345678"
    assert normalise_number("+5215512345678", None) == "+525512345678"
    assert normalise_number("525512345678", None) == "+525512345678"
    (message,) = parse_payload(p.envelope(p.message_change(
        [p.text_message("mx1", from_="5215512345678")]))).messages
    assert message.conversation == "+525512345678"


def test_user_changed_user_id_reads_old_and_new_whichever_field_holds_the_old():
    old, new = "US.OLD1", "US.NEW2"
    documented = p.base("c1", None, "system", from_user_id=old, system={
        "body": "changed", "type": "user_changed_user_id", "user_id": new,
        "previous_user_id": old})
    from_new = p.changed_user_id_message("c2", None, new, old)  # new id in from_user_id
    from_old = p.base("c3", None, "system", from_user_id=old, system={
        "body": "changed", "type": "user_changed_user_id", "user_id": new})
    for obj in (documented, from_new, from_old):
        parsed = parse_payload(p.envelope(p.message_change([obj], contacts=[])))
        (message,) = parsed.messages
        assert message.extra["user_id_change"] == {"old": old, "new": new}, obj["id"]
        (link,) = [i for i in parsed.identities if i.previous]
        assert (link.user_id, link.previous) == (new, (old,)), obj["id"]


def test_usernames_are_kept_with_one_at_sign():
    from plugins.leadsquared.people import display_name

    for given in ("@priya", "priya"):
        parsed = parse_payload(p.envelope(p.message_change(
            [p.bsuid_text_message("n1")], contacts=[p.contact(None, None, p.BSUID,
                                                               username=given)])))
        assert {i.username for i in parsed.identities} == {"@priya"}

    class Stored:
        contact_name = None
        username = "@priya"

    assert display_name(Stored()) == "@priya"


def test_username_thread_without_ids_is_filed_under_the_username_never_an_empty_key():
    inbound = p.base("u3", None, "text", text={"body": "hello"})
    reply = p.historical("u4", p.BUSINESS, "hi!")
    change = p.history_change([{"id": "", "messages": [inbound, reply]}])
    change["value"]["contacts"] = [{"profile": {"username": "@priya"}}]
    parsed = parse_payload(p.envelope(change))
    assert [m.conversation for m in parsed.messages] == ["@priya", "@priya"]


def test_a_contacts_sync_names_its_number():
    parsed = parse_payload(p.envelope(p.state_sync_change([p.state_contact(p.CUSTOMER, "P")])))
    assert parsed.contact_syncs == [p.PHONE_ID]


def test_a_username_thread_is_not_filed_under_the_contact_of_another_thread():
    """The business's messages alone name nobody; the change's one contacts[] entry may be
    another thread's user (named by its from_user_id), and the rep's messages to someone
    else must not land on that person's lead."""
    asha = p.base("a1", None, "text", text={"body": "hi"}, from_user_id=USERNAME_ID)
    to_asha = p.historical("a2", p.BUSINESS, "hello Asha")
    to_other = p.historical("b1", p.BUSINESS, "hello someone else")
    change = p.history_change([{"id": "", "messages": [asha, to_asha]},
                               {"id": "", "messages": [to_other]}])
    change["value"]["contacts"] = [{"user_id": USERNAME_ID, "profile": {"username": "@asha"}}]
    parsed = parse_payload(p.envelope(change))
    filed = {m.provider_id: m.conversation for m in parsed.messages}
    assert filed["a1"] == filed["a2"] == USERNAME_ID
    assert filed["b1"] != USERNAME_ID


def _echoed(*echoes):
    return parse_payload(p.envelope(p.echo_change(list(echoes)))).messages


def test_a_template_echo_is_a_template_in_every_plausible_shape_with_its_object_kept():
    """reference §6a [M-ECHO]: an echo's object is the send request's; Meta shows no template
    echo, so the other plausible shapes (payloads.py, UNSURE) are read too, never as
    "unsupported", and raw keeps the object whole."""
    sent, named, defined, bare, odd = _echoed(
        p.template_echo("t1", p.CUSTOMER, p.TEMPLATE_SENT),
        p.template_echo("t2", p.CUSTOMER, p.TEMPLATE_NAMED),
        p.template_echo("t3", p.CUSTOMER, p.TEMPLATE_AS_DEFINED),
        p.template_echo("t4", p.CUSTOMER, None),
        p.template_echo("t5", p.CUSTOMER, {"name": 7, "language": ["en"], "components": [
            None, {"type": None}, {"type": "body", "parameters": "x"},
            {"type": "button", "parameters": [{"type": "coupon_code", "coupon_code": "25OFF"}],
             "sub_type": "copy_code"}]}))
    assert {m.kind for m in (sent, named, defined, bare, odd)} == {"template"}
    assert all(m.direction == Direction.OUT for m in (sent, named, defined, bare, odd))
    assert sent.raw["template"] == p.TEMPLATE_SENT and sent.text == ""
    info = sent.extra["template"]
    assert (info["name"], info["language"], info["header"]["kind"]) == (
        "order_confirmation", "en_US", "image")
    assert [v for _, v in info["values"]] == ["Asha", "₹24,999", "Friday 12 December"]
    assert info["buttons"] == ["quick reply", "link"]
    assert [tuple(v) for v in named.extra["template"]["values"]] == [
        ("customer_name", "Asha"), ("order_number", "Q-8812")]
    assert defined.text == "Hi Asha,\nyour annual plan renews on Friday."
    assert defined.extra["template"]["buttons"] == ["Renew now", "See plans"]
    assert render_line(bare) == "📋 Template message"
    assert render_line(odd) == "📋 Template \"7\" · buttons: copy code 25OFF"


def test_an_interactive_message_the_business_sent_is_not_read_as_a_customers_reply():
    buttons, listed = _echoed(p.interactive_echo("i1", p.CUSTOMER, p.SENT_BUTTONS),
                              p.interactive_echo("i2", p.CUSTOMER, p.SENT_LIST))
    assert buttons.kind == "interactive" and buttons.text == "Which day suits you for the demo?"
    assert buttons.extra["interactive"]["options"] == ["Tuesday", "Wednesday"]
    assert listed.extra["interactive"]["button"] == "See slots"
    reply = parse_payload(p.envelope(p.message_change([p.button_reply_message("r1")])))
    assert render_line(reply.messages[0]).endswith('🔘 Chose "Yes"')  # replies unchanged


def test_a_template_in_history_is_read_as_one_in_an_echo():
    """History carries the business's messages under message_echoes (reference §14)."""
    thread = {"id": p.CUSTOMER, "message_echoes": [
        p.template_echo("h1", p.CUSTOMER, p.TEMPLATE_NAMED)]}
    (message,) = _history(thread).messages
    assert (message.kind, message.direction, message.history) == (
        "template", Direction.OUT, True)
    assert render_line(message).startswith('📋 Template "quote_ready" (en) · 📄 document header')
