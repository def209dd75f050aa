"""Erasure that erases (issue 25, point 4): after `purge`, none of the person's bytes are
left in the buffer's files, nor in the tables a sink fills (directory, unknown numbers), nor
from work in flight (a media download running during the purge)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bridge.buffer import Buffer, Policy
from bridge.contracts import Outcome
from bridge.media import MediaPolicy, MediaRunner
from bridge.model import Direction, Media, Message
from bridge.sync import SinkRunner
from plugins.leadsquared.config import LeadSquaredConfig
from plugins.leadsquared.sink import LeadSquaredSink
from plugins.whatsapp.config import WhatsAppConfig
from plugins.whatsapp.graph_simulator import create_graph_app
from plugins.whatsapp.media import GraphMedia
from plugins.whatsapp.parse import parse_payload
from tests.backends import is_postgres, rows
from tests.helpers import message, wait_until
from tests.whatsapp import payloads as p

PHONE = "+16505551234"
NAME = "Sheena Quixotic-Marwaha"  # her profile name and the lead's, as the CRM has it
SECRET = "my-passport-number-is-ZX4419027"  # something she wrote, once per message
TOKEN = "graph-test-token"
PHONE_ID = "106540352242922"
FAIL_ONCE = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0)
# what must not be left anywhere: her number in every form, her BSUID, name and words
TRACES = [b"6505551234", p.BSUID.encode(), b"Quixotic", SECRET.encode()]


async def store(buffer, *changes) -> None:
    parsed = parse_payload(p.envelope(*changes))
    await buffer.append(parsed.messages, parsed.statuses, parsed.contact_names,
                        parsed.identities)


async def lived_with(buffer) -> None:
    """Weeks of her: many messages (rows updated again and again, pages split), a sink
    that delivered some, failed some, gave up on one (a dead letter and a dead target),
    the lead directory holding her lead, her number once marked unknown; another
    customer throughout."""
    await buffer.install_sinks(["crm"])
    directory = buffer.directory("crm")
    await directory.note_unknown(PHONE, 1.0)
    for n in range(60):
        await store(buffer, p.message_change(
            [p.text_message(f"wamid.s{n}", body=f"{SECRET} #{n}"),
             p.text_message(f"wamid.o{n}", "14155550100", f"other #{n}")],
            contacts=[p.contact(p.CUSTOMER, NAME, user_id=p.BSUID),
                      p.contact("14155550100", "Otto")]))
        if n % 10 == 9:
            await deliver_round(buffer, n)
    await store(buffer, p.message_change([p.bsuid_text_message("wamid.b1", body=SECRET)],
                                         contacts=[]))
    await store(buffer, p.message_change([p.group_text_message("wamid.g1", body=SECRET)]))
    await directory.put([("lead-sheena", NAME, [PHONE, p.CUSTOMER])], 1)
    await directory.put([("lead-otto", "Otto", ["+14155550100"])], 1)
    await directory.forget_unknown(PHONE)
    await directory.note_unknown(PHONE, 2.0)  # unknown again (the lead was merged away)


async def deliver_round(buffer, n: int) -> None:
    for claim in await buffer.claim("crm", 100, 60):
        batch = claim.batch
        batch.record_id = "lead-" + batch.conversation.key
        if n == 19 and batch.conversation.key == PHONE:  # refused: a dead letter
            outcomes = [Outcome.rejected(f"LeadSquared refused {NAME}")] * len(claim.messages)
        elif n == 29 and batch.conversation.key == PHONE:  # a retry, a dead target
            await buffer.complete(claim, [Outcome.retry(f"{NAME}: HTTP 503")]
                                  * len(claim.messages), FAIL_ONCE)
            (claim,) = [c for c in await buffer.claim("crm", 100, 60)
                        if c.batch.conversation.key == batch.conversation.key]
            claim.batch.record_id = "lead-" + batch.conversation.key
            claim.batch.fail_target(claim.batch.key + "@opp", f"opportunity of {NAME}",
                                    f"{NAME}'s deal refused", [m.id for m in claim.messages],
                                    3, final=True)
            outcomes = [Outcome.delivered()] * len(claim.messages)
        else:
            outcomes = [Outcome.delivered()] * len(claim.messages)
        await buffer.complete(claim, outcomes, FAIL_ONCE)


def traces_in_files(db: Path) -> dict[str, list[bytes]]:
    """Which of TRACES each of the buffer's files holds, byte for byte."""
    found = {}
    for path in sorted(db.parent.glob(db.name + "*")):
        data = path.read_bytes()
        found[path.name] = [t for t in TRACES if t in data]
    return found


async def test_after_a_purge_no_byte_of_the_person_is_left_in_the_sqlite_files(tmp_path):
    db = tmp_path / "buffer.db"
    buffer = await Buffer.open(db)
    try:
        await lived_with(buffer)
        assert any(traces_in_files(db).values())  # the test can see them
        found = await buffer.purge_person(phone=PHONE)
        assert found["messages"] == 62 and found["directory"] == 1 and found["unknown"] == 1
        assert found["dead_targets"] == 1 and found["dead_letters"] >= 1
        # the file is still open and in use (the running bridge's case)
        assert traces_in_files(db) == {name: [] for name in traces_in_files(db)}
        assert await rows(buffer, "SELECT count(*) FROM messages") == [(60,)]
    finally:
        await buffer.close()
    assert traces_in_files(db) == {name: [] for name in traces_in_files(db)}


async def test_an_older_copy_left_in_free_space_is_found_and_the_file_rewritten(tmp_path):
    """Secure delete zeroes what the purge frees, not a copy an earlier write left in a
    page's free space (an update that moved the row, a page split: one buffer in five
    after weeks of traffic, whatever secure_delete was). Planted here as such a write
    leaves one: inserted, then deleted without secure delete (the default of many SQLite
    builds; this one's is on), beside rows that keep the page in use."""
    db = tmp_path / "buffer.db"
    buffer = await Buffer.open(db)
    try:
        await lived_with(buffer)
        raw = sqlite3.connect(db)
        raw.execute("PRAGMA secure_delete = OFF")
        with raw:
            raw.executemany("INSERT INTO unknown_numbers VALUES ('old', ?, 0)",
                            [(f"+1415555{n:04d}",) for n in range(40)] + [(PHONE,)])
            raw.execute("DELETE FROM unknown_numbers WHERE sink = 'old' AND number = ?",
                        (PHONE,))
        raw.close()
        found = await buffer.purge_person(phone=PHONE)
        assert found["vacuumed"] and found["stale_copies"] == 0 and found["wal_emptied"]
        assert traces_in_files(db) == {name: [] for name in traces_in_files(db)}
        assert await rows(buffer, "SELECT count(*) FROM unknown_numbers") == [(40,)]
    finally:
        await buffer.close()


def test_bridge_purge_leaves_no_byte_and_says_so(tmp_path):
    db = tmp_path / "buffer.db"

    async def prepare() -> None:
        buffer = await Buffer.open(db)
        try:
            await lived_with(buffer)
        finally:
            await buffer.close()

    asyncio.run(prepare())
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer: {{path: {db}}}\n")
    done = subprocess.run([sys.executable, "-m", "bridge", "purge", "-c", str(config),
                           "--user-id", p.BSUID], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1 lead-directory record(s), 1 unknown-number mark(s)" in done.stdout
    assert "overwritten with zeros, and the WAL file emptied" in done.stdout
    assert traces_in_files(db) == {name: [] for name in traces_in_files(db)}


async def test_a_purge_forgets_the_directory_entry_unknown_mark_and_dead_targets(buffer):
    await lived_with(buffer)
    await buffer.purge_person(user_id=p.BSUID)
    assert await rows(buffer, "SELECT key, record_id, name FROM directory ORDER BY key") == [
        ("+14155550100", "lead-otto", "Otto")]
    assert await rows(buffer, "SELECT count(*) FROM unknown_numbers") == [(0,)]
    assert await rows(buffer, "SELECT count(*) FROM targets") == [(0,)]
    assert await rows(buffer, "SELECT count(*) FROM batches WHERE conversation = :k",
                      {"k": PHONE}) == [(0,)]
    assert await rows(buffer, "SELECT count(*) FROM deliveries WHERE state = 'dead'") == [(0,)]
    if is_postgres(buffer):  # no secure delete there: the touched tables were vacuumed
        assert (await buffer.purge_person(phone="+14155550100"))["vacuumed"]


# -- a download in flight during the purge ----------------------------------------------


@pytest.fixture
async def graph(tmp_path, serve) -> str:
    """The Graph stand-in on a loopback port, its downloads slowed when asked."""
    (tmp_path / "graph").mkdir()
    return await serve(create_graph_app(TOKEN, tmp_path / "graph"))


def photo(n: int, media_id: str, conversation: str = PHONE) -> Message:
    return Message(source="whatsapp", provider_id=f"wamid.m{n}", conversation=conversation,
                   account=PHONE_ID, direction=Direction.IN, sent_at=datetime.now(UTC),
                   kind="image", text="her photo",
                   media=Media(id=media_id, mime_type="image/jpeg"))


async def test_a_download_running_during_the_purge_leaves_no_file_behind(tmp_path, graph):
    async with httpx.AsyncClient() as http:
        mine = (await http.post(f"{graph}/_sim/media", content=b"her face " * 300,
                                params={"mime_type": "image/jpeg",
                                        "phone_number_id": PHONE_ID})).json()["id"]
        await http.post(f"{graph}/_sim/faults", json={"slow_bytes_per_s": 1500})
    buffer = await Buffer.open(tmp_path / "b.db")
    buffer.media_sources = {"whatsapp": None}
    media = tmp_path / "media"
    fetcher = GraphMedia(WhatsAppConfig(verify_token="v", app_secret="s",
                                        access_token=TOKEN, graph_url=graph))
    runner = MediaRunner("whatsapp", fetcher, buffer, MediaPolicy(str(media)))
    try:
        await buffer.append([photo(1, mine)])
        await runner.prepare()
        fetching = asyncio.create_task(runner.step())
        await wait_until(lambda: list((media / "tmp").glob("whatsapp-1-*.part")))  # opened:
        # the bytes drip in for about 2 s
        await asyncio.sleep(0.3)
        found = await buffer.purge_person(phone=PHONE)
        assert found["messages"] == 1 and not fetching.done()  # the download still runs
        await fetching
        assert [f for f in media.rglob("*") if f.is_file()] == []
        assert await rows(buffer, "SELECT count(*) FROM media") == [(0,)]
    finally:
        await fetcher.close()
        await buffer.close()


# -- a delivery in flight during the purge ------------------------------------------------


async def test_a_delivery_running_during_the_purge_writes_no_mark_back(sim, tmp_path):
    """The sink is looking the number up (slowly) when the purge commits: what it learns
    (no lead: an unknown-number mark) must not bring the number back into the buffer."""
    number = "+919876543210"
    buffer = await Buffer.open(tmp_path / "b.db")
    sink = LeadSquaredSink(LeadSquaredConfig(
        host=sim.base_url, access_key=sim.access_key, secret_key=sim.secret_key,
        sync_interval=0.05, retry_base=0.01, retry_cap=0.1, rate_limit="1000/0.05s",
        lead_directory="off", unknown_recheck=600))
    runner = SinkRunner(sink, buffer)
    await buffer.install_sinks([sink.name])
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_until(lambda: sink.steps is not None)
        sim.configure(latency=0.4)
        await buffer.append([message(1, number)])
        await wait_until(lambda: any("ByPhoneNumber" in c.path for c in sim.calls))
        assert (await buffer.purge_person(phone=number))["messages"] == 1
        purged_at = time.time()
        await wait_until(lambda: _synced_since(buffer, sink.name, purged_at), timeout=20)
        assert await rows(buffer, "SELECT count(*) FROM unknown_numbers") == [(0,)]
        assert await rows(buffer, "SELECT count(*) FROM sink_conversations") == [(0,)]
        assert await rows(buffer, "SELECT count(*) FROM conversations") == [(0,)]
    finally:
        stop.set()
        await task
        await sink.close()
        await buffer.close()


async def _synced_since(buffer, sink: str, at: float) -> bool:
    (state,) = [s for s in await buffer.sinks() if s["sink"] == sink]
    return state["last_sync_at"] is not None and state["last_sync_at"].timestamp() > at


async def test_a_lead_holding_her_number_only_in_national_form_is_forgotten(tmp_path):
    """A lead whose Phone is stored without its country code ('(650) 555-1234', as a rep
    types it) is keyed by its national digits only ('nsn:...', the LeadSquared directory's
    key for such a number, found by the chat's lookup): the purge forgets it too, and the
    file keeps none of her digits (before: the record stayed, and the scan found her
    number in a live row, vacuumed, and still said older copies remained)."""
    from plugins.leadsquared.directory import chat_keys, number_keys

    db = tmp_path / "buffer.db"
    buffer = await Buffer.open(db)
    try:
        await buffer.install_sinks(["crm"])
        await store(buffer, p.message_change([p.text_message("wamid.n1", body=SECRET)],
                                             contacts=[p.contact(p.CUSTOMER, NAME)]))
        directory = buffer.directory("crm")
        keys = number_keys("(650) 555-1234")
        assert set(keys) & set(chat_keys(PHONE))  # the bridge would find her lead by it
        await directory.put([("lead-sheena", NAME, keys)], 1)
        found = await buffer.purge_person(phone=PHONE)
        assert found["directory"] == 1
        assert await rows(buffer, "SELECT count(*) FROM directory") == [(0,)]
        assert not found["stale_copies"]
    finally:
        await buffer.close()
    assert traces_in_files(db) == {name: [] for name in traces_in_files(db)}


async def test_a_name_another_customer_shares_is_no_trace_left_behind(tmp_path):
    """Two customers with the same profile name (common names are common): purging one
    must not take the other's live rows for older copies of hers. Before: the scan found
    the name in the other customer's rows, rewrote the whole file (VACUUM, writes waiting)
    and still said copies remained ('run the purge again', on every purge)."""
    db = tmp_path / "buffer.db"
    buffer = await Buffer.open(db)
    try:
        await buffer.install_sinks(["crm"])
        for n in range(20):
            await store(buffer, p.message_change(
                [p.text_message(f"wamid.s{n}", body=f"{SECRET} #{n}"),
                 p.text_message(f"wamid.o{n}", "14155550100", f"other #{n}")],
                contacts=[p.contact(p.CUSTOMER, NAME), p.contact("14155550100", NAME)]))
        found = await buffer.purge_person(phone=PHONE)
        assert found["messages"] == 20
        assert found["stale_copies"] == 0 and not found.get("vacuumed")
        assert found["wal_emptied"]
        assert await rows(buffer, "SELECT contact_name FROM conversations") == [(NAME,)]
    finally:
        await buffer.close()
    data = b"".join(f.read_bytes() for f in tmp_path.glob("buffer.db*"))
    assert b"6505551234" not in data and SECRET.encode() not in data


async def test_a_reader_holding_the_wal_gets_the_purge_repeated_not_a_vacuum(tmp_path):
    """Another process reading an older snapshot keeps the WAL from being emptied: the
    file then still holds the pages as they were before the purge (their new, zeroed
    versions wait in the WAL), which is no older copy in free space. The purge says the
    WAL could not be emptied (run it again) and does not rewrite the file for nothing;
    once the reader is gone, running it again leaves no byte of her. Before: it scanned
    the file, vacuumed it (writes waiting) and said 'older copies remain in free space'."""
    from bridge.cli import _scrubbed

    db = tmp_path / "buffer.db"
    buffer = await Buffer.open(db)
    try:
        await lived_with(buffer)
        reader = sqlite3.connect(db)
        reader.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # her rows in the file itself
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()  # a snapshot held
        found = await buffer.purge_person(phone=PHONE)
        assert not found["wal_emptied"] and not found.get("vacuumed")
        assert "WAL file could not be emptied" in _scrubbed(found)
        reader.rollback()
        reader.close()
        again = await buffer.purge_person(phone=PHONE)
        assert again["wal_emptied"] and again["stale_copies"] == 0
        assert traces_in_files(db) == {name: [] for name in traces_in_files(db)}
    finally:
        await buffer.close()


def test_on_postgresql_the_purge_says_the_bytes_stay_until_reused():
    """Read as root from a PostgreSQL 15 data directory after a purge and its VACUUM, the
    heap and index files of messages, conversations, identities, directory, batches still
    held her number, BSUID, name and words (VACUUM frees, it does not zero; VACUUM FULL
    keeps row versions another session's snapshot may see). The command must not let the
    operator believe only WAL and backups hold copies (it said just that before)."""
    from bridge.cli import _scrubbed

    said = _scrubbed({"vacuumed": True})
    assert "does not overwrite" in said and "files keep their bytes" in said
