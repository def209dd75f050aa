"""The PostgreSQL buffer shared by several bridge processes: two PostgresBuffer instances
(two connection pools, as two processes would have) on one real schema."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict

import pytest

from bridge.buffer import Buffer, Policy
from bridge.buffer.migrations import VERSION
from bridge.contracts import Outcome
from bridge.errors import BufferUnavailable, LeaseLost
from plugins.whatsapp.parse import parse_payload
from tests.backends import (
    fresh_schema_url,
    needs_postgres,
    rows,
)
from tests.helpers import message
from tests.whatsapp import payloads as p

pytestmark = needs_postgres
POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0)
CHATS = [f"+9198765432{i:02d}" for i in range(6)]


@pytest.fixture
async def url():
    """A fresh schema on the test server; nothing created in it yet."""
    async with fresh_schema_url() as url:
        yield url


@pytest.fixture
async def pair(url):
    """Two buffers on one schema, like two bridge processes behind a load balancer."""
    first = await Buffer.open(url)
    second = await Buffer.open(url)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_two_processes_never_lease_one_batch_and_keep_each_chat_in_order(pair):
    await pair[0].install_sinks(["crm"])
    in_flight: dict[str, str] = {}  # conversation -> batch key being delivered
    leased: list[str] = []
    delivered: dict[str, list[int]] = defaultdict(list)
    total = 120

    async def arrive() -> None:  # webhooks land on either process, a few at a time
        for n in range(total):
            await pair[n % 2].append([message(n, CHATS[n % len(CHATS)])])
            if n % 7 == 0:
                await asyncio.sleep(0.005)

    async def drain(buffer: Buffer, seed: int) -> None:
        rng = random.Random(seed)
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.0:
            claims = await buffer.claim("crm", 2, lease=60, batch_size=4)
            if not claims:
                await asyncio.sleep(0.01)
                continue
            idle_since = time.monotonic()
            for claim in claims:
                chat = claim.batch.conversation.key
                assert chat not in in_flight, f"{chat}: two batches out at once"
                in_flight[chat] = claim.batch.key
                leased.append(claim.batch.key)
            await asyncio.sleep(rng.uniform(0, 0.01))  # the CRM call
            for claim in claims:
                chat = claim.batch.conversation.key
                delivered[chat] += [int(m.provider_id[1:]) for m in claim.messages]
                del in_flight[chat]
                await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages),
                                      POLICY)

    await asyncio.gather(arrive(), drain(pair[0], 1), drain(pair[1], 2))
    assert len(leased) == len(set(leased)) > len(CHATS)  # several batches per chat, each once
    assert sorted(n for ns in delivered.values() for n in ns) == list(range(total))
    for chat, numbers in delivered.items():
        assert numbers == sorted(numbers), f"{chat} out of order"
    assert (await pair[1].sinks())[0]["backlog"] == 0


async def test_a_killed_process_lease_expires_and_the_other_takes_it_over(url):
    killed = await Buffer.open(url)
    survivor = await Buffer.open(url)
    try:
        await survivor.install_sinks(["crm"])
        await survivor.append([message(1)])
        t0 = time.time()
        (lost,) = await killed.claim("crm", 10, lease=30, now=t0)
        await killed.close()  # dies mid-delivery: no ack, its connections gone
        assert await survivor.claim("crm", 10, 30, now=t0 + 29) == []  # still leased
        (taken,) = await survivor.claim("crm", 10, 30, now=t0 + 31)
        assert taken.batch.key == lost.batch.key
        assert taken.batch.uncertain and taken.batch.attempt == 2
        await survivor.complete(taken, [Outcome.delivered()], POLICY)
        assert (await survivor.sinks())[0]["backlog"] == 0
    finally:
        await killed.close()
        await survivor.close()


async def test_an_ack_after_the_lease_moved_to_another_process_is_refused(pair):
    slow, other = pair
    await slow.install_sinks(["crm"])
    await slow.append([message(1)])
    t0 = time.time()
    (late,) = await slow.claim("crm", 10, lease=30, now=t0)
    (taken,) = await other.claim("crm", 10, 30, now=t0 + 31)
    with pytest.raises(LeaseLost):
        await slow.complete(late, [Outcome.delivered()], POLICY)
    await other.complete(taken, [Outcome.delivered()], POLICY)
    assert await rows(other, "SELECT state, attempts FROM batches") == [("done", 2)]


async def test_the_same_message_appended_by_both_processes_is_stored_once(pair):
    await pair[0].install_sinks(["a", "b"])
    results = await asyncio.gather(*[pair[n % 2].append([message(1)]) for n in range(20)])
    assert sorted(results) == [0] * 19 + [1]
    assert await rows(pair[0], "SELECT count(*) FROM messages") == [(1,)]
    assert await rows(pair[0], "SELECT sink, count(*) FROM deliveries GROUP BY sink"
                               " ORDER BY sink") == [("a", 1), ("b", 1)]
    assert await rows(pair[0], "SELECT message_count FROM conversations") == [(1,)]


async def store(buffer, change) -> None:
    """One webhook change, parsed and appended as the WhatsApp source would."""
    parsed = parse_payload(p.envelope(change))
    await buffer.append(parsed.messages, parsed.statuses, parsed.contact_names,
                        parsed.identities)


async def test_a_new_bsuid_and_its_link_to_a_phone_arriving_at_two_processes_are_one_chat(
        pair):
    # a Business-app echo to a username user (BSUID only, no contacts) reaches one process
    # while the customer's message linking that BSUID to a phone reaches the other: the
    # echo must not stay in a chat of its own that no key leads to (held for ever)
    for n in range(10):
        phone, bsuid = f"1650555{n:04}", f"US.{n}"
        await asyncio.gather(
            store(pair[0], p.echo_change([p.echo(f"e{n}", to=None, to_user_id=bsuid)])),
            store(pair[1], p.message_change([p.text_message(f"w{n}", phone)],
                                            contacts=[p.contact(phone, "S", user_id=bsuid)])))
    assert await rows(pair[0], "SELECT DISTINCT conversation FROM messages WHERE NOT EXISTS"
                      " (SELECT 1 FROM identities i WHERE i.person = conversation)") == []
    assert await rows(pair[0], "SELECT count(*) FROM conversations") == [(10,)]


async def test_a_message_of_a_known_bsuid_arriving_during_its_merge_joins_the_merged_chat(
        pair):
    # one process stores a message of a BSUID it knows (no contacts: nothing learned) while
    # the other learns that BSUID's phone and merges the two chats: the message must not
    # land in (and bring back) the chat the merge just removed
    for n in range(10):
        phone, bsuid = f"1650555{n:04}", f"US.{n}"
        await store(pair[0], p.message_change([p.bsuid_text_message(f"u{n}", bsuid)],
                                              contacts=[p.contact(None, None, user_id=bsuid)]))
        await store(pair[1], p.message_change([p.text_message(f"p{n}", phone)]))
        await asyncio.gather(
            store(pair[0], p.message_change([p.bsuid_text_message(f"b{n}", bsuid)],
                                            contacts=[])),
            store(pair[1], p.message_change([p.text_message(f"w{n}", phone)],
                                            contacts=[p.contact(phone, "S", user_id=bsuid)])))
    assert await rows(pair[0], "SELECT DISTINCT conversation FROM messages WHERE NOT EXISTS"
                      " (SELECT 1 FROM identities i WHERE i.person = conversation)") == []
    assert await rows(pair[0], "SELECT count(*) FROM conversations") == [(10,)]


async def test_processes_starting_together_migrate_once(url):
    buffers = await asyncio.gather(*[Buffer.open(url) for _ in range(4)])
    try:
        assert await rows(buffers[0], "SELECT version FROM schema_version") == [(VERSION,)]
        await buffers[3].append([message(1)])
        assert await buffers[0].count_messages() == 1
    finally:
        for buffer in buffers:
            await buffer.close()


async def test_an_unreachable_server_is_one_line_without_the_password():
    with pytest.raises(BufferUnavailable) as caught:
        await Buffer.open("postgresql://chatbridge:s3cret-pw@127.0.0.1:1/chatbridge")
    text = str(caught.value)
    assert "\n" not in text and "s3cret-pw" not in text
    assert "127.0.0.1:1" in text and "buffer.url" in text
