"""Who is who in parsed webhooks: the identity facts of each documented shape (reference §9)."""

from __future__ import annotations

from bridge.model import Identity
from plugins.whatsapp.parse import parse_payload
from tests.whatsapp import payloads as p

PHONE = "+16505551234"


def parse(*changes):
    return parse_payload(p.envelope(*changes))


def test_contacts_with_bsuid_parent_and_username_link_to_the_phone():
    parsed = parse(p.message_change([p.text_message("wamid.1")], contacts=[p.contact(
        p.CUSTOMER, "Sheena", p.BSUID, parent_user_id=p.PARENT_BSUID, username="sheena")]))
    assert Identity(PHONE, p.BSUID, p.PARENT_BSUID, "@sheena", "Sheena") in parsed.identities
    (message,) = parsed.messages
    assert message.conversation == PHONE and message.extra["user_id"] == p.BSUID


def test_bsuid_only_sender_is_filed_under_the_bsuid_with_its_username():
    parsed = parse(p.message_change([p.bsuid_text_message("wamid.1")],
                                    contacts=[p.contact(None, None, p.BSUID, username="sk")]))
    (message,) = parsed.messages
    assert message.conversation == p.BSUID and message.contact_name is None
    assert Identity(None, p.BSUID, None, "@sk", None) in parsed.identities


def test_a_phone_with_only_a_name_teaches_nothing_new():
    parsed = parse(p.message_change([p.text_message("wamid.1")]))
    assert parsed.identities == []


def test_status_and_echo_link_the_recipient_phone_and_bsuid():
    parsed = parse(p.message_change(statuses=[p.status("wamid.s", recipient=p.CUSTOMER,
                                                       recipient_user_id=p.BSUID)]))
    assert parsed.identities == [Identity(PHONE, p.BSUID)]
    parsed = parse(p.echo_change([p.echo("wamid.e", to=None, to_user_id=p.BSUID)],
                                 contacts=[p.contact(p.CUSTOMER, "Sheena", p.BSUID)]))
    assert parsed.messages[0].conversation == p.BSUID
    assert Identity(PHONE, p.BSUID, None, None, "Sheena") in parsed.identities


def test_number_change_links_old_and_new_numbers_and_ids():
    parsed = parse(p.message_change([p.changed_number_message(
        "wamid.c", p.CUSTOMER, "16505550000", user_id="US.2", previous_user_id=p.BSUID)],
        contacts=[]))
    assert Identity("+16505550000", "US.2", previous=(PHONE, p.BSUID)) in parsed.identities
    assert parsed.messages[0].extra["new_number"] == "+16505550000"


def test_user_id_change_links_the_previous_bsuid():
    parsed = parse(p.message_change([p.changed_user_id_message(
        "wamid.c", p.CUSTOMER, "US.2", previous_user_id=p.BSUID)], contacts=[]))
    assert Identity(PHONE, "US.2", previous=(p.BSUID,)) in parsed.identities


def test_group_message_is_the_groups_and_names_its_sender():
    parsed = parse(p.message_change([p.group_text_message("wamid.g")],
                                    contacts=[p.contact(p.CUSTOMER, "Sheena", p.BSUID)]))
    (message,) = parsed.messages
    assert message.conversation == f"group:{p.GROUP}"
    assert (message.extra["group_id"], message.extra["sender"]) == (p.GROUP, PHONE)
    assert message.contact_name == "Sheena"


def test_group_status_links_the_participant_not_the_group():
    parsed = parse(p.message_change(statuses=[p.group_status(
        "wamid.s", participant=p.CUSTOMER, participant_user_id=p.BSUID)]))
    assert parsed.identities == [Identity(PHONE, p.BSUID)]
    assert parsed.statuses[0].recipient == p.GROUP


def test_a_sender_without_a_contacts_entry_never_takes_another_senders():
    """M-SYS: system messages carry no contacts[]; batched beside a text whose sender has
    the change's one contacts[] entry, the system message's sender is someone else: not
    named, nor linked to, that entry's name and business-scoped id."""
    other = "919876543210"
    parsed = parse(p.message_change(
        [p.text_message("wamid.x"), p.system_message("wamid.y", from_=other)],
        contacts=[p.contact(p.CUSTOMER, "Xavier", p.BSUID)]))
    mine, theirs = parsed.messages
    assert (mine.contact_name, mine.extra["user_id"]) == ("Xavier", p.BSUID)
    assert theirs.conversation == "+919876543210"
    assert theirs.contact_name is None and "user_id" not in theirs.extra
    assert all(i.phone != "+919876543210" or i.user_id != p.BSUID for i in parsed.identities)


def test_a_bsuid_only_sender_never_takes_a_phone_only_entry():
    """The same batch with the second sender known by BSUID alone and the one entry by
    phone alone: nothing says they are one person, so nothing links them."""
    parsed = parse(p.message_change(
        [p.text_message("wamid.x"), p.bsuid_text_message("wamid.y", user_id="US.222")],
        contacts=[p.contact(p.CUSTOMER, "Xavier")]))
    mine, theirs = parsed.messages
    assert mine.contact_name == "Xavier"
    assert theirs.conversation == "US.222" and theirs.contact_name is None
    assert all(i.phone != PHONE for i in parsed.identities)
