"""parse_payload: every change field and message type into neutral Messages and statuses."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.model import KINDS, Direction, Media
from plugins.whatsapp.parse import Parsed, PayloadError, normalise_number, parse_payload
from tests.whatsapp import payloads as p

SENT = datetime.fromtimestamp(int(p.TS), UTC)


def parse_one(message: dict, **kwargs) -> object:
    """The single Message of a `messages` change holding `message`."""
    parsed = parse_payload(p.envelope(p.message_change([message])), **kwargs)
    assert len(parsed.messages) == 1, parsed
    return parsed.messages[0]


# -- envelope ------------------------------------------------------------------------------

@pytest.mark.parametrize(("payload", "reason"), [
    ([1, 2], "not a JSON object"),
    ("text", "not a JSON object"),
    ({"object": "page"}, '"entry"'),
    ({"object": "page", "entry": [{"changes": [{"field": "messages", "value": {}}]}]},
     "whatsapp_business_account"),
    ({"object": 7, "entry": []}, "whatsapp_business_account"),
    ({"entry": []}, "whatsapp_business_account"),
    ({"object": "whatsapp_business_account"}, '"entry"'),
    ({"object": "whatsapp_business_account", "entry": {}}, '"entry"'),
])
def test_only_a_broken_envelope_is_a_payload_error(payload, reason):
    with pytest.raises(PayloadError, match=reason):
        parse_payload(payload)


def test_empty_entry_list_is_fine():
    assert parse_payload(p.payload()) == Parsed()


@pytest.mark.parametrize("change", [
    "not a dict", {"field": "messages"}, {"field": "messages", "value": []},
    {"value": {"messages": []}}, {"field": 7, "value": {}},
])
def test_malformed_changes_are_counted_not_raised(change):
    parsed = parse_payload(p.payload({"id": "1", "changes": [change]}, {"id": "2"}, "x"))
    assert parsed.ignored_fields == {"malformed": 3}
    assert parsed.messages == []


# -- field: messages, one test per type ------------------------------------------------------

def test_text():
    m = parse_one(p.text_message("wamid.HBgL1", body="Hi\nthere"))
    assert (m.source, m.provider_id, m.conversation, m.account) == (
        "whatsapp", "wamid.HBgL1", "+16505551234", p.PHONE_ID)
    assert (m.direction, m.kind, m.text, m.contact_name) == (
        Direction.IN, "text", "Hi\nthere", "Sheena Nelson")
    assert (m.sent_at, m.history, m.reply_to, m.media) == (SENT, False, None, None)
    assert m.extra == {"business_number": "+" + p.BUSINESS}  # the number it was sent to
    assert m.raw == p.text_message("wamid.HBgL1", body="Hi\nthere")


def test_image_with_caption_and_url():
    m = parse_one(p.image_message("i1", caption="the crack", url="https://lookaside.example/x"))
    assert (m.kind, m.text) == ("image", "the crack")
    assert m.media == Media(id="1234", mime_type="image/jpeg", sha256="a4f3c8e1b2d9",
                            url="https://lookaside.example/x", caption="the crack")


def test_video_without_caption():
    m = parse_one(p.video_message("v1"))
    assert (m.kind, m.text, m.media.id, m.media.mime_type) == ("video", "", "777", "video/mp4")


@pytest.mark.parametrize("voice", [True, False])
def test_audio_voice_flag(voice):
    m = parse_one(p.audio_message("a1", voice=voice))
    assert (m.kind, m.media.voice, m.media.mime_type) == ("audio", voice,
                                                          "audio/ogg; codecs=opus")


def test_document():
    m = parse_one(p.document_message("d1"))
    assert (m.kind, m.text, m.media.filename, m.media.caption, m.media.id) == (
        "document", "March", "invoice.pdf", "March", "888")


def test_sticker_animated():
    m = parse_one(p.sticker_message("s1", animated=True))
    assert (m.kind, m.media.animated, m.media.mime_type) == ("sticker", True, "image/webp")


def test_location():
    m = parse_one(p.location_message("l1"))
    assert m.kind == "location"
    assert m.extra["location"] == {"latitude": 12.9763, "longitude": 77.5929,
                                   "name": "Cubbon Park", "address": "Kasturba Road, Bengaluru",
                                   "url": "https://maps.example/cubbon"}


def test_location_without_name():
    m = parse_one(p.location_message("l2", name=None, address=None))
    assert m.extra["location"]["name"] is None and m.extra["location"]["latitude"] == 12.9763


def test_contacts_card():
    m = parse_one(p.contacts_message("c1"))
    assert m.kind == "contacts"
    assert m.extra["contacts"] == [{"name": "Ravi Kumar", "phones": ["+91 98765 43210"],
                                    "emails": ["ravi@example.com"]}]


def test_interactive_button_reply_quotes_the_question():
    m = parse_one(p.button_reply_message("b1"))
    assert (m.kind, m.text, m.reply_to) == ("interactive", "Yes", "wamid.question")
    assert m.extra["interactive"] == {"type": "button_reply", "id": "yes-1", "title": "Yes"}


def test_interactive_list_reply():
    m = parse_one(p.list_reply_message("lr1"))
    assert m.text == "Tuesday 10:00"
    assert m.extra["interactive"] == {"type": "list_reply", "id": "slot-2",
                                      "title": "Tuesday 10:00", "description": "Dr. Rao"}


def test_interactive_flow_reply_parses_response_json():
    m = parse_one(p.nfm_reply_message("f1"))
    info = m.extra["interactive"]
    assert (m.kind, m.text, info["type"]) == ("interactive", "Sent", "nfm_reply")
    assert info["response"] == {"name": "Asha", "flow_token": "t1"}


@pytest.mark.parametrize("response_json", ["not json {", "[1, 2]"])
def test_interactive_flow_reply_keeps_a_non_object_response_as_text(response_json):
    m = parse_one(p.nfm_reply_message("f2", response_json=response_json))
    assert m.extra["interactive"]["response"] == response_json


def test_interactive_unknown_subtype_keeps_its_type_and_raw():
    m = parse_one(p.call_permission_message("cp1"))
    assert m.kind == "interactive"
    assert m.extra["interactive"]["type"] == "call_permission_reply"
    assert m.extra["interactive"]["response"] == "accept"
    assert m.raw["interactive"]["call_permission_reply"]["response_source"] == "user_action"


def test_interactive_without_its_body_beside_an_error():
    error = {"code": 131000, "title": "Something went wrong",
             "message": "Unsupported webhook payload"}
    message = p.base("x1", p.CUSTOMER, "interactive", errors=[error])
    m = parse_one(message)
    assert (m.kind, m.extra["interactive"]["type"]) == ("interactive", None)
    assert m.extra["errors"][0]["code"] == 131000


def test_button():
    m = parse_one(p.button_message("bt1"))
    assert (m.kind, m.text, m.reply_to) == ("button", "Stop promotions", "wamid.template")
    assert m.extra["button"] == {"payload": "STOP", "text": "Stop promotions"}


def test_reaction():
    m = parse_one(p.reaction_message("r1", "wamid.target"))
    assert (m.kind, m.text, m.reply_to) == ("reaction", "😮", "wamid.target")
    assert m.extra["reaction"] == {"emoji": "😮", "removed": False}


@pytest.mark.parametrize("emoji", ["", None])
def test_removed_reaction(emoji):
    m = parse_one(p.reaction_message("r2", "wamid.target", emoji=emoji))
    assert (m.kind, m.text, m.reply_to) == ("reaction", "", "wamid.target")
    assert m.extra["reaction"] == {"emoji": None, "removed": True}


def test_order():
    m = parse_one(p.order_message("o1"))
    assert (m.kind, m.text) == ("order", "Deliver by 6")
    assert m.extra["order"]["catalog_id"] == "cat-9"
    assert m.extra["order"]["items"][0] == {"product_retailer_id": "SKU-1", "quantity": 2,
                                            "item_price": 100, "currency": "INR"}


def test_system_number_change_has_no_contacts():
    message = p.system_message("sy1")
    parsed = parse_payload(p.envelope(p.message_change([message], contacts=[])))
    (m,) = parsed.messages
    assert (m.kind, m.conversation, m.contact_name) == ("system", "+16505551234", None)
    assert m.text.startswith("User 16505551234 changed")
    assert m.extra["system"] == {"type": "user_changed_number", "wa_id": "16505550000"}


def test_edit_of_an_image_caption():
    inner = {"type": "image", "image": {"id": "42", "mime_type": "image/jpeg",
                                        "caption": "fixed caption"}}
    m = parse_one(p.edit_message("e1", "wamid.orig", inner))
    assert (m.kind, m.text, m.reply_to, m.media.id) == ("edit", "fixed caption", "wamid.orig",
                                                        "42")
    assert m.extra["edit"] == {"original_id": "wamid.orig", "kind": "image"}


def test_edit_of_a_text():
    m = parse_one(p.edit_message("e2", "wamid.orig", {"type": "text", "text": {"body": "new"}}))
    assert (m.kind, m.text, m.media, m.extra["edit"]["kind"]) == ("edit", "new", None, "text")


def test_revoke():
    m = parse_one(p.revoke_message("rv1", "wamid.gone"))
    assert (m.kind, m.reply_to, m.text) == ("revoke", "wamid.gone", "")


def test_unsupported_keeps_errors_and_the_real_type():
    m = parse_one(p.unsupported_message("u1"))
    assert (m.kind, m.extra["unsupported_type"]) == ("unsupported", "poll")
    assert m.extra["errors"][0]["code"] == 131051


def test_unknown_type_is_unsupported_with_raw():
    message = p.base("u2", p.CUSTOMER, "hologram", hologram={"depth": 3},
                     context={"id": "wamid.q", "forwarded": True})
    m = parse_one(message)
    assert (m.kind, m.extra["unsupported_type"], m.raw) == ("unsupported", "hologram", message)
    assert (m.reply_to, m.extra["forwarded"], m.contact_name) == ("wamid.q", True,
                                                                   "Sheena Nelson")


@pytest.mark.parametrize("message", [
    p.base("bad1", p.CUSTOMER, "text", text="not an object"),
    p.base("bad2", p.CUSTOMER, "text", text={"body": 5}),
    p.base("bad3", p.CUSTOMER, "image", image={"id": 1234}),
    p.base("bad4", p.CUSTOMER, "location", location={"latitude": "12.9"}),
    p.base("bad5", p.CUSTOMER, "text", text={"body": "x"}, context=["wamid.1"]),
])
def test_mistyped_known_fields_make_it_unsupported_with_raw(message):
    m = parse_one(message)
    assert (m.kind, m.provider_id, m.raw, m.extra["malformed"]) == (
        "unsupported", message["id"], message, True)
    assert m.extra["unsupported_type"] == message["type"]


def test_every_kind_the_parser_produces_is_known_to_the_model():
    builders = [p.text_message("1"), p.image_message("2"), p.audio_message("3"),
                p.contacts_message("4"), p.order_message("5"), p.revoke_message("6", "x"),
                p.placeholder_message("7"), p.unsupported_message("8")]
    parsed = parse_payload(p.envelope(p.message_change(builders)))
    assert {m.kind for m in parsed.messages} <= KINDS


# -- common message fields -----------------------------------------------------------------

def test_context_forwarded_and_referred_product():
    product = {"catalog_id": "cat-9", "product_retailer_id": "SKU-1"}
    m = parse_one(p.text_message("c1", context={"forwarded": True}))
    assert (m.extra["forwarded"], m.reply_to) == (True, None)
    m = parse_one(p.text_message("c2", context={"frequently_forwarded": True}))
    assert m.extra["frequently_forwarded"] is True
    m = parse_one(p.text_message("c3", context={"from": p.BUSINESS, "id": "wamid.p",
                                                "referred_product": product}))
    assert (m.reply_to, m.extra["referred_product"]) == ("wamid.p", product)


def test_referral_from_an_ad():
    referral = {"source_url": "https://fb.me/x", "source_id": "ad-1", "source_type": "ad",
                "headline": "Sale", "ctwa_clid": "clid"}
    m = parse_one(p.text_message("ref1", referral=referral))
    assert m.extra["referral"] == referral


def test_missing_id_gets_a_deterministic_synthetic_id():
    message = p.text_message("x")
    del message["id"]
    first = parse_one(message).provider_id
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert parse_one(copy.deepcopy(message)).provider_id == first
    assert parse_one(p.text_message("x", body="other") | {"id": ""}).provider_id != first


@pytest.mark.parametrize("ts", [1739230955, " 1739230955 "])
def test_integer_and_padded_timestamps(ts):
    assert parse_one(p.text_message("t1", ts=ts)).sent_at == SENT


@pytest.mark.parametrize("ts", [None, "soon", -5, 10**20, True, "1.5"])
def test_bad_timestamp_falls_back_to_entry_time_and_is_flagged(ts):
    payload = p.envelope(p.message_change([p.text_message("t2", ts=ts)]), time=1739212624)
    (m,) = parse_payload(payload).messages
    assert (m.kind, m.sent_at) == ("text", datetime.fromtimestamp(1739212624, UTC))
    assert m.extra["timestamp_missing"] is True


def test_bad_timestamp_without_entry_time_uses_now():
    before = datetime.now(UTC)
    m = parse_one(p.text_message("t3", ts=None))
    assert before <= m.sent_at <= datetime.now(UTC)
    assert m.extra["timestamp_missing"] is True


def test_bsuid_only_user():
    message = p.text_message("bs1", from_=None, from_user_id=p.BSUID)
    contacts = [{"profile": {"name": "Kai", "username": "@kai"}, "user_id": p.BSUID}]
    parsed = parse_payload(p.envelope(p.message_change([message], contacts=contacts)))
    (m,) = parsed.messages
    assert (m.conversation, m.contact_name, m.extra["user_id"]) == (p.BSUID, "Kai", p.BSUID)
    assert parsed.contact_names == {p.BSUID: "Kai"}


def test_bsuid_is_kept_beside_a_phone_number():
    message = p.text_message("bs2", from_user_id=p.BSUID)
    m = parse_one(message)
    assert (m.conversation, m.extra["user_id"]) == ("+16505551234", p.BSUID)


def test_contact_name_is_matched_by_wa_id_among_several():
    messages = [p.text_message("n1", "919876543210"), p.text_message("n2", "447700900123")]
    contacts = [p.contact("447700900123", "Olly"), p.contact("919876543210", "Asha")]
    parsed = parse_payload(p.envelope(p.message_change(messages, contacts=contacts)))
    assert [(m.conversation, m.contact_name) for m in parsed.messages] == [
        ("+919876543210", "Asha"), ("+447700900123", "Olly")]
    assert parsed.contact_names == {"+919876543210": "Asha", "+447700900123": "Olly"}


def test_the_only_contact_is_used_when_wa_id_differs_from_from():
    # Some countries' wa_id differs from `from` (e.g. a mobile prefix digit).
    contacts = [p.contact("5511987654321", "Bia")]
    message = p.text_message("n3", "551187654321")
    (m,) = parse_payload(p.envelope(p.message_change([message], contacts=contacts))).messages
    assert m.contact_name == "Bia"


def test_the_only_contact_names_a_sender_whose_number_no_one_can_read():
    # A wa_id the phone number library cannot read: the entry still names its sender.
    contacts = [p.contact("12", "Tiny")]
    message = p.text_message("n4", "12")
    (m,) = parse_payload(p.envelope(p.message_change([message], contacts=contacts))).messages
    assert (m.conversation, m.contact_name) == ("12", "Tiny")


def test_no_sender_at_all_is_kept_as_unsupported_without_conversation():
    message = p.text_message("ns1", from_=None)
    m = parse_one(message)
    assert (m.kind, m.conversation, m.raw) == ("unsupported", "", message)


def test_several_entries_changes_and_messages_in_order():
    payload = p.payload(
        p.entry(p.message_change([p.text_message("a1"), p.image_message("a2")]),
                p.message_change([p.text_message("b1", "447700900123")], phone_id="999")),
        p.entry(p.message_change([p.text_message("c1")], statuses=[p.status("wamid.out")]),
                p.other_change("account_update")),
    )
    parsed = parse_payload(payload)
    assert [(m.provider_id, m.account) for m in parsed.messages] == [
        ("a1", p.PHONE_ID), ("a2", p.PHONE_ID), ("b1", "999"), ("c1", p.PHONE_ID)]
    assert [s.provider_id for s in parsed.statuses] == ["wamid.out"]
    assert parsed.ignored_fields == {"account_update": 1}


def test_value_level_errors_are_counted_not_stored():
    error = {"code": 130429, "title": "Rate limit hit", "message": "Rate limit hit"}
    parsed = parse_payload(p.envelope(p.message_change(errors=[error, error])))
    assert (parsed.messages, parsed.ignored_fields) == ([], {"errors": 2})


def test_non_object_items_are_counted_as_malformed():
    change = p.message_change([p.text_message("ok1")])
    change["value"]["messages"].append("junk")
    change["value"]["statuses"] = [7, {"status": "read"}]
    parsed = parse_payload(p.envelope(change))
    assert [m.provider_id for m in parsed.messages] == ["ok1"]
    assert parsed.ignored_fields == {"malformed": 3}


# -- statuses ------------------------------------------------------------------------------

def test_statuses():
    error = {"code": 131049, "title": "Not delivered to maintain ecosystem health"}
    statuses = [p.status("wamid.o1", "read", recipient="919876543210"),
                p.status("wamid.o2", "failed", errors=[error]),
                p.status("wamid.o3", "sent", recipient="120363025246125486",
                         recipient_type="group"),
                p.status("wamid.o4", "delivered", ts="never")]
    parsed = parse_payload(p.envelope(p.message_change(statuses=statuses), time=1739212624))
    s1, s2, s3, s4 = parsed.statuses
    assert (s1.source, s1.provider_id, s1.status, s1.at, s1.recipient, s1.errors) == (
        "whatsapp", "wamid.o1", "read", SENT, "+919876543210", [])
    assert (s2.status, s2.errors) == ("failed", [error])
    assert s3.recipient == "120363025246125486"
    assert s4.at == datetime.fromtimestamp(1739212624, UTC)
    assert parsed.messages == []


def test_status_without_id_is_skipped_and_counted():
    broken = p.status("x")
    del broken["id"]
    parsed = parse_payload(p.envelope(p.message_change(statuses=[broken, p.status("ok")])))
    assert [s.provider_id for s in parsed.statuses] == ["ok"]
    assert parsed.ignored_fields == {"malformed": 1}


def test_status_with_bsuid_recipient_only():
    item = p.status("wamid.b", recipient="") | {"recipient_user_id": p.BSUID}
    (s,) = parse_payload(p.envelope(p.message_change(statuses=[item]))).statuses
    assert s.recipient == p.BSUID


# -- field: smb_message_echoes -------------------------------------------------------------

def test_echo_is_outgoing_to_the_customer_with_plus():
    contacts = [p.contact("16505551234", "Sheena Nelson")]
    parsed = parse_payload(p.envelope(p.echo_change(
        [p.echo("wamid.e1", "+16505551234", to_user_id=p.BSUID)], contacts=contacts)))
    (m,) = parsed.messages
    assert (m.direction, m.conversation, m.contact_name, m.text, m.history) == (
        Direction.OUT, "+16505551234", "Sheena Nelson", "On our way", False)
    assert (m.extra["user_id"], m.account) == (p.BSUID, p.PHONE_ID)


def test_echo_of_a_revoke_and_an_edit():
    revoke = p.revoke_message("wamid.e2", "wamid.e1", from_=p.BUSINESS) | {"to": p.CUSTOMER}
    edit = p.edit_message("wamid.e3", "wamid.e1", {"type": "text", "text": {"body": "fixed"}},
                          from_=p.BUSINESS) | {"to": p.CUSTOMER}
    parsed = parse_payload(p.envelope(p.echo_change([revoke, edit])))
    assert [(m.kind, m.direction, m.conversation, m.reply_to, m.text) for m in parsed.messages] == [
        ("revoke", Direction.OUT, "+16505551234", "wamid.e1", ""),
        ("edit", Direction.OUT, "+16505551234", "wamid.e1", "fixed")]


# -- field: history ------------------------------------------------------------------------

def test_history_both_directions_and_placeholder():
    messages = [p.historical("h1", p.CUSTOMER, "Is it in stock?"),
                p.historical("h2", p.BUSINESS, "Yes", status="DELIVERED"),
                p.placeholder_message("h3", p.CUSTOMER)]
    parsed = parse_payload(p.envelope(p.history_change([p.thread(p.CUSTOMER, messages)])))
    got = [(m.provider_id, m.direction, m.conversation, m.kind, m.history,
            m.extra.get("history_status")) for m in parsed.messages]
    assert got == [
        ("h1", Direction.IN, "+16505551234", "text", True, "READ"),
        ("h2", Direction.OUT, "+16505551234", "text", True, "DELIVERED"),
        ("h3", Direction.IN, "+16505551234", "media_placeholder", True, "READ")]


def test_history_business_number_is_compared_normalised():
    change = p.history_change([p.thread(p.CUSTOMER, [p.historical("h4", "+1 555-078-3881",
                                                                   "Hello")])])
    (m,) = parse_payload(p.envelope(change)).messages
    assert m.direction == Direction.OUT


def test_historical_media_follow_up_is_history_not_live():
    change = p.history_media_change([p.image_message("h3", caption="photo of the bill")])
    (m,) = parse_payload(p.envelope(change)).messages
    assert (m.kind, m.history, m.direction, m.conversation, m.media.id) == (
        "image", True, Direction.IN, "+16505551234", "1234")


def test_history_declined_is_counted():
    parsed = parse_payload(p.envelope(p.history_declined_change()))
    assert (parsed.messages, parsed.ignored_fields) == ([], {"history_declined": 1})


# -- field: smb_app_state_sync -------------------------------------------------------------

def test_state_sync_names():
    items = [p.state_contact("16505551234", "Pablo Morales", "Pablo"),
             p.state_contact("919876543210", first_name="Asha"),
             p.state_contact("447700900123", action="remove"),
             {"type": "contact", "action": "add"}, "junk"]
    parsed = parse_payload(p.envelope(p.state_sync_change(items)))
    assert parsed.contact_names == {"+16505551234": "Pablo Morales", "+919876543210": "Asha"}
    assert parsed.messages == []
    assert parsed.ignored_fields == {"malformed": 2}


# -- other fields and the allow-list -------------------------------------------------------

def test_other_fields_are_acknowledged_and_counted():
    changes = [p.other_change("account_update"), p.other_change("message_template_status_update"),
               p.other_change("account_update"), p.other_change("Weird Field!")]
    parsed = parse_payload(p.envelope(*changes))
    assert parsed.ignored_fields == {"account_update": 2, "message_template_status_update": 1,
                                     "unknown": 1}


def test_allow_list_skips_other_numbers():
    payload = p.envelope(
        p.message_change([p.text_message("keep")], statuses=[p.status("s-keep")]),
        p.message_change([p.text_message("x1"), p.text_message("x2")],
                         statuses=[p.status("s-x")], phone_id="999"),
        p.echo_change([p.echo("x3", p.CUSTOMER)], phone_id="999"),
        p.history_change([p.thread(p.CUSTOMER, [p.historical("x4", p.CUSTOMER, "hi")])],
                         phone_id="999"),
        p.state_sync_change([p.state_contact("16505551234", "Nope")], phone_id="999"),
    )
    parsed = parse_payload(payload, phone_number_ids=frozenset({p.PHONE_ID}))
    assert [m.provider_id for m in parsed.messages] == ["keep"]
    assert [s.provider_id for s in parsed.statuses] == ["s-keep"]
    assert parsed.skipped_numbers == 5
    assert parsed.contact_names == {"+16505551234": "Sheena Nelson"}


def test_without_metadata_the_account_is_empty_and_not_allowed():
    change = p.message_change([p.text_message("nm1")])
    del change["value"]["metadata"]
    assert parse_payload(p.envelope(change)).messages[0].account == ""
    parsed = parse_payload(p.envelope(change), phone_number_ids=frozenset({p.PHONE_ID}))
    assert (parsed.messages, parsed.skipped_numbers) == ([], 1)


def test_source_name_is_passed_through():
    assert parse_one(p.text_message("sn1"), source="wa-2").source == "wa-2"


# -- numbers -------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("919876543210", None, "+919876543210"),
    ("+16505551234", None, "+16505551234"),
    ("15550783881", None, "+15550783881"),  # Meta's test number: possible, not "valid"
    (" +1 (650) 555-1234 ", None, "+16505551234"),
    ("098765 43210", "IN", "+919876543210"),
    ("098765 43210", None, None),
    ("US.13491208655302741918", "US", None),
    ("1-800-FLOWERS", "US", None),
    ("", "IN", None),
    ("12", None, None),
    ("9" * 300, None, None),
])
def test_normalise_number(raw, region, expected):
    assert normalise_number(raw, region) == expected


def test_default_region_reads_national_echo_recipients():
    change = p.echo_change([p.echo("wamid.n", "09876543210")])
    (m,) = parse_payload(p.envelope(change), default_region="IN").messages
    assert m.conversation == "+919876543210"


# -- fuzzing: nothing but PayloadError, ever -----------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                      st.text(max_size=12), st.sampled_from(["", p.TS, p.CUSTOMER, p.BSUID]))
json_value = st.recursive(json_leaf, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=25)
MESSAGE_KEYS = ["id", "from", "to", "timestamp", "type", "context", "errors", "referral",
                "text", "image", "audio", "video", "document", "sticker", "location", "contacts",
                "interactive", "button", "reaction", "order", "system", "edit", "revoke",
                "unsupported", "identity", "history_context", "from_user_id", "to_user_id"]
FIELDS = ["messages", "smb_message_echoes", "history", "smb_app_state_sync", "calls"]


def samples() -> list[dict]:
    """Valid payloads of every field and type, the seeds of mutation."""
    messages = [p.text_message("1"), p.image_message("2"), p.audio_message("3"),
                p.video_message("4"), p.document_message("5"), p.sticker_message("6"),
                p.location_message("7"), p.contacts_message("8"), p.button_reply_message("9"),
                p.list_reply_message("10"), p.nfm_reply_message("11"),
                p.call_permission_message("12"), p.button_message("13"),
                p.reaction_message("14", "1"), p.order_message("15"), p.system_message("16"),
                p.edit_message("17", "1", {"type": "text", "text": {"body": "x"}}),
                p.revoke_message("18", "1"), p.unsupported_message("19"),
                p.text_message("20", context={"id": "1", "forwarded": True})]
    return [
        p.envelope(p.message_change(messages, statuses=[p.status("s1")]), time=1739212624),
        p.envelope(p.echo_change([p.echo("e1", "+16505551234")],
                                 contacts=[p.contact(p.CUSTOMER, "S")])),
        p.envelope(p.history_change([p.thread(p.CUSTOMER, [
            p.historical("h1", p.CUSTOMER, "a"), p.historical("h3", p.BUSINESS, "b"),
            p.placeholder_message("h2")])]),
            p.history_media_change([p.image_message("h2")]), p.history_declined_change()),
        p.envelope(p.state_sync_change([p.state_contact(p.CUSTOMER, "P")])),
    ]


def _slots(node, parent=None, key=None):
    """Every (container, key) in the tree, to replace or delete what is there."""
    if parent is not None:
        yield parent, key
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for k, child in items:
        yield from _slots(child, node, k)


@st.composite
def mutated(draw):
    payload = copy.deepcopy(draw(st.sampled_from(samples())))
    for _ in range(draw(st.integers(1, 6))):
        slots = list(_slots(payload))
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            del container[key]
        elif action == "add" and isinstance(container, dict):
            container[draw(st.sampled_from(MESSAGE_KEYS))] = draw(json_value)
        else:
            container[key] = draw(json_value)
    return payload


@st.composite
def random_inside_envelope(draw):
    """Random messages and values under a valid envelope, so the fuzz reaches the parser."""
    message = draw(st.dictionaries(st.sampled_from(MESSAGE_KEYS), json_value, max_size=8))
    value = {"metadata": draw(st.one_of(json_value, st.just(p.metadata()))),
             draw(st.sampled_from(["messages", "statuses", "message_echoes", "history",
                                   "state_sync", "contacts", "errors"])):
                 draw(st.one_of(st.just([message]), json_value))}
    change = {"field": draw(st.sampled_from(FIELDS)), "value": draw(st.one_of(
        st.just(value), json_value))}
    return p.envelope(change, time=draw(st.one_of(st.none(), st.integers())))


def parse_or_payload_error(payload, **kwargs):
    try:
        parsed = parse_payload(payload, **kwargs)
    except PayloadError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert {m.kind for m in parsed.messages} <= KINDS
    assert all(m.sent_at.tzinfo is not None and m.provider_id for m in parsed.messages)
    assert all(isinstance(m.conversation, str) for m in parsed.messages)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(json_value)
def test_fuzz_random_json(payload):
    parse_or_payload_error(payload)


@FUZZ
@given(mutated(), st.sampled_from([None, "IN", "us"]),
       st.sampled_from([None, frozenset({p.PHONE_ID})]))
def test_fuzz_mutated_valid_payloads(payload, region, allowed):
    parse_or_payload_error(payload, default_region=region, phone_number_ids=allowed)


@FUZZ
@given(random_inside_envelope())
def test_fuzz_random_content_in_a_valid_envelope(payload):
    parse_or_payload_error(payload)


def test_fuzz_is_deterministic_for_retries():
    for payload in samples():
        first, again = parse_payload(payload), parse_payload(copy.deepcopy(payload))
        assert [m.provider_id for m in first.messages] == [m.provider_id for m in again.messages]
