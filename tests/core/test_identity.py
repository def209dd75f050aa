"""One identity per person: the contact map the buffer learns from webhooks (both backends)."""

from __future__ import annotations

import json
import time

from bridge.buffer import Policy
from bridge.contracts import Outcome
from plugins.whatsapp.parse import parse_payload
from tests.backends import rows
from tests.whatsapp import payloads as p

POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0)
PHONE = "+16505551234"


async def store(buffer, *changes) -> int:
    parsed = parse_payload(p.envelope(*changes))
    return await buffer.append(parsed.messages, parsed.statuses, parsed.contact_names,
                               parsed.identities)


async def conversations(buffer):
    return await rows(buffer, "SELECT key, message_count, phone, bsuid, username"
                      " FROM conversations ORDER BY key")


async def test_bsuid_only_message_joins_the_conversation_of_a_person_seen_with_phone(buffer):
    await store(buffer, p.message_change(
        [p.text_message("wamid.1", p.CUSTOMER, "first")],
        contacts=[p.contact(p.CUSTOMER, "Sheena Nelson", user_id=p.BSUID)]))
    await store(buffer, p.message_change(
        [p.bsuid_text_message("wamid.2", p.BSUID, "second")],
        contacts=[p.contact(None, "Sheena Nelson", user_id=p.BSUID)]))
    assert await rows(buffer, "SELECT provider_id, conversation FROM messages ORDER BY id") == [
        ("wamid.1", PHONE), ("wamid.2", PHONE)]
    assert await conversations(buffer) == [(PHONE, 2, PHONE, p.BSUID, None)]


async def test_phone_learned_later_merges_the_bsuid_conversation_without_resending(buffer):
    await buffer.install_sinks(["crm"])
    await store(buffer, p.message_change(
        [p.bsuid_text_message("wamid.1", p.BSUID, "before")],
        contacts=[p.contact(None, None, user_id=p.BSUID, username="@sheena")]))
    (claim,) = await buffer.claim("crm", 10, 60)
    assert claim.batch.conversation.key == p.BSUID
    assert claim.batch.conversation.username == "@sheena"
    claim.batch.record_id = "lead-1"
    await buffer.complete(claim, [Outcome.delivered()], POLICY)

    await store(buffer, p.message_change(
        [p.text_message("wamid.2", p.CUSTOMER, "after")],
        contacts=[p.contact(p.CUSTOMER, "Sheena Nelson", user_id=p.BSUID)]))

    assert await conversations(buffer) == [(PHONE, 2, PHONE, p.BSUID, "@sheena")]
    assert await rows(buffer, "SELECT conversation, record_id FROM sink_conversations") == [
        (PHONE, "lead-1")]
    (claim,) = await buffer.claim("crm", 10, 60, now=time.time() + 1)
    assert [m.provider_id for m in claim.batch.messages] == ["wamid.2"]  # not wamid.1 again
    assert claim.batch.record_id == "lead-1"


async def test_held_bsuid_batch_moves_to_the_phone_conversation_and_is_due_at_once(buffer):
    await buffer.install_sinks(["crm"])
    await store(buffer, p.message_change([p.bsuid_text_message("wamid.1")], contacts=[]))
    (claim,) = await buffer.claim("crm", 10, 60)
    await buffer.complete(claim, [Outcome.held("no phone number")],
                          Policy(max_attempts=3, retry_delay=lambda a: 0.0, held_delay=3600))
    assert await buffer.claim("crm", 10, 60) == []
    await store(buffer, p.message_change(statuses=[p.status("wamid.out", recipient=p.CUSTOMER,
                                                            recipient_user_id=p.BSUID)]))
    (claim,) = await buffer.claim("crm", 10, 60)
    assert claim.batch.conversation.key == PHONE
    assert [m.provider_id for m in claim.batch.messages] == ["wamid.1"]


async def test_echo_to_a_bsuid_is_filed_with_the_customer(buffer):
    await store(buffer, p.message_change(
        [p.text_message("wamid.1")], contacts=[p.contact(p.CUSTOMER, "Sheena", p.BSUID)]))
    await store(buffer, p.echo_change([p.echo("wamid.e1", to=None, to_user_id=p.BSUID)]))
    assert await rows(buffer, "SELECT provider_id, conversation FROM messages ORDER BY id") == [
        ("wamid.1", PHONE), ("wamid.e1", PHONE)]


async def test_number_change_keeps_one_conversation_for_old_and_new_number(buffer):
    new = "16505550000"
    await store(buffer, p.message_change(
        [p.text_message("wamid.1")], contacts=[p.contact(p.CUSTOMER, "Sheena", p.BSUID)]))
    await store(buffer, p.message_change(
        [p.changed_number_message("wamid.sys", p.CUSTOMER, new, user_id="US.777",
                                  previous_user_id=p.BSUID)], contacts=[]))
    await store(buffer, p.message_change([p.text_message("wamid.2", new, "new phone")]))
    assert await rows(buffer, "SELECT DISTINCT conversation FROM messages") == [(PHONE,)]
    (row,) = await conversations(buffer)
    assert row[:3] == (PHONE, 3, "+16505550000")  # the latest number, on the same chat
    assert dict(await rows(buffer, "SELECT key, person FROM identities")) == {
        PHONE: PHONE, "+16505550000": PHONE, p.BSUID: PHONE, "US.777": PHONE}


async def test_user_id_change_links_the_new_bsuid(buffer):
    await store(buffer, p.message_change([p.bsuid_text_message("wamid.1", "US.1")], contacts=[]))
    await store(buffer, p.message_change(
        [p.changed_user_id_message("wamid.sys", None, "US.2", previous_user_id="US.1")],
        contacts=[]))
    await store(buffer, p.message_change([p.bsuid_text_message("wamid.2", "US.2")], contacts=[]))
    assert await rows(buffer, "SELECT DISTINCT conversation FROM messages") == [("US.1",)]


async def test_two_known_conversations_become_one_when_a_webhook_links_them(buffer):
    await store(buffer, p.message_change([p.text_message("wamid.1")]))
    await store(buffer, p.message_change([p.bsuid_text_message("wamid.2")], contacts=[]))
    assert len(await conversations(buffer)) == 2
    await store(buffer, p.message_change(
        [p.text_message("wamid.3")], contacts=[p.contact(p.CUSTOMER, "Sheena", p.BSUID)]))
    assert await conversations(buffer) == [(PHONE, 3, PHONE, p.BSUID, None)]


async def test_group_message_is_a_group_conversation_not_the_senders(buffer):
    await store(buffer, p.message_change([p.group_text_message("wamid.g1")]))
    ((conversation, body),) = await rows(buffer, "SELECT conversation, body FROM messages")
    assert (conversation, json.loads(body)["extra"]["sender"]) == (f"group:{p.GROUP}", PHONE)
    assert await rows(buffer, "SELECT key, group_id, message_count FROM conversations"
                             " WHERE message_count > 0") == [(f"group:{p.GROUP}", p.GROUP, 1)]


async def test_a_replayed_webhook_writes_no_identity_row_again(buffer):
    change = p.message_change(
        [p.text_message("wamid.1")], contacts=[p.contact(p.CUSTOMER, "Sheena", p.BSUID)])
    await store(buffer, change)
    before = await rows(buffer, "SELECT key, person, seen_at FROM identities")
    await store(buffer, change)
    assert await rows(buffer, "SELECT key, person, seen_at FROM identities") == before


async def test_status_report_counts_held_chats_groups_and_failed_sends(buffer):
    from bridge.status import buffer_report
    from bridge.textreport import render_status

    await buffer.install_sinks(["crm"])
    await store(buffer, p.message_change([p.bsuid_text_message("wamid.1")], contacts=[]))
    await store(buffer, p.message_change([p.group_text_message("wamid.g1")]))
    await store(buffer, p.message_change(statuses=[p.failed_status("wamid.out")]))
    for claim in await buffer.claim("crm", 10, 60):
        outcome = (Outcome.skipped("group") if claim.batch.conversation.group_id
                   else Outcome.held("no phone number: set plugins.x.user_id_field"))
        await buffer.complete(claim, [outcome], POLICY)
    report = await buffer_report(buffer)
    assert report["group_chats"] == 1 and report["failed_sends"] == 1
    assert report["sinks"][0]["held_chats"] == [
        {"reason": "no phone number: set plugins.x.user_id_field", "chats": 1}]
    text = render_status(report)
    assert "1 chat(s) held by crm: no phone number: set plugins.x.user_id_field" in text
    assert "1 failed send(s)" in text and "❌ not delivered: Re-engagement message (131047)" in text


async def test_referral_is_kept_with_its_ctwa_clid(buffer):
    await store(buffer, p.message_change([p.text_message("wamid.1", referral=p.referral())]))
    ((body,),) = await rows(buffer, "SELECT body FROM messages")
    assert json.loads(body)["extra"]["referral"]["ctwa_clid"] == p.referral()["ctwa_clid"]


async def test_a_merge_while_a_batch_is_in_flight_files_its_outcome_under_the_person(buffer):
    await buffer.install_sinks(["crm"])
    await store(buffer, p.message_change([p.bsuid_text_message("wamid.1")], contacts=[]))
    (claim,) = await buffer.claim("crm", 10, 60)
    await store(buffer, p.message_change(  # the phone is learned while the sink posts
        [p.text_message("wamid.2")], contacts=[p.contact(p.CUSTOMER, "Sheena", p.BSUID)]))
    claim.batch.record_id = "lead-1"
    await buffer.complete(claim, [Outcome.delivered()], POLICY)
    assert await rows(buffer, "SELECT conversation, record_id FROM sink_conversations") == [
        (PHONE, "lead-1")]


async def test_last_synced_never_moves_back_when_completions_commit_out_of_order(buffer):
    # two bridges on one PostgreSQL (clocks a little apart), or a live and a backfill batch
    # of one chat finishing in either order: the chat's last synced time only moves forward
    now = time.time()
    await store(buffer, p.message_change([p.text_message("wamid.1", ts=int(now) - 86400)]))
    await buffer.install_sinks(["crm"])
    await buffer.backfill("crm", now - 3 * 86400)
    await store(buffer, p.message_change([p.text_message("wamid.2", ts=int(now))]))
    (live,) = await buffer.claim("crm", 10, 60, now=now, backfill=False)
    (old,) = await buffer.claim("crm", 10, 60, now=now, backfill=True)
    for claim, at in ((live, now + 100), (old, now + 50)):
        claim.batch.record_id = "lead-1"
        await buffer.complete(claim, [Outcome.delivered()], POLICY, now=at)
    assert await rows(buffer, "SELECT conversation, last_synced_at FROM sink_conversations"
                      ) == [(PHONE, now + 100)]
